// pybind11 bindings of kepsparse._core. Kernel families live in their own files
// (spconv*.cpp: the sparse convolution engine); this file only converts arguments. The
// bound conv calls and the graph step runner are bound in runner.cpp.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <memory>
#include <optional>
#include <string>
#include <tuple>
#include <type_traits>
#include <vector>

#include "cpu_features.hpp"
#include "finite_scan.hpp"
#include "pool2d.hpp"
#include "runner.hpp"
#include "spconv_api.hpp"

namespace py = pybind11;
using kepsparse::SpconvPlan;

namespace {

template <typename T>
using carray = py::array_t<T, py::array::c_style | py::array::forcecast>;

template <typename T>
std::vector<T> to_vector(const carray<T>& a, const char* name) {
    if (a.ndim() != 1) throw py::value_error(std::string(name) + " must be 1-D");
    return std::vector<T>(a.data(), a.data() + a.size());
}

std::shared_ptr<SpconvPlan> make_plan(int O, int Ctot, int KH, int KW, int OB,
                                      const carray<int32_t>& out_ch, const carray<int32_t>& ck,
                                      const carray<float>& w, const carray<int64_t>& cptr) {
    auto p = std::make_shared<SpconvPlan>();
    p->O = O;
    p->Ctot = Ctot;
    p->KH = KH;
    p->KW = KW;
    p->OB = OB;
    p->nblocks = OB > 0 ? (O + OB - 1) / OB : 0;
    p->ncg = (Ctot + 7) / 8;
    p->out_ch = to_vector(out_ch, "out_ch");
    p->ck = to_vector(ck, "ck");
    p->w = to_vector(w, "w");
    p->cptr = to_vector(cptr, "cptr");
    kepsparse::spconv_check_plan(*p);  // std::invalid_argument -> ValueError
    return p;
}

std::shared_ptr<kepsparse::GroupPlan> make_group_plan(
        int O, int Ctot, int KH, int KW, int och, const carray<int32_t>& grp_ci,
        const carray<int32_t>& grp_k, const carray<int32_t>& grp_np,
        const carray<int64_t>& grp_ptr, const carray<int32_t>& ch_o, const carray<float>& ch_w,
        const carray<int64_t>& chunk_ptr) {
    auto p = std::make_shared<kepsparse::GroupPlan>();
    p->O = O;
    p->Ctot = Ctot;
    p->KH = KH;
    p->KW = KW;
    p->och = och;
    p->nchunks = och > 0 ? (O + och - 1) / och : 0;
    p->grp_ci = to_vector(grp_ci, "grp_ci");
    p->grp_k = to_vector(grp_k, "grp_k");
    p->grp_np = to_vector(grp_np, "grp_np");
    p->grp_ptr = to_vector(grp_ptr, "grp_ptr");
    p->ch_o = to_vector(ch_o, "ch_o");
    p->ch_w = to_vector(ch_w, "ch_w");
    p->chunk_ptr = to_vector(chunk_ptr, "chunk_ptr");
    kepsparse::group_check_plan(*p);
    return p;
}

template <typename Plan>
py::array_t<float> run(const Plan& plan, const std::string& isa, const carray<float>& x,
                       std::optional<carray<float>> bias, std::pair<int, int> stride,
                       std::tuple<int, int, int, int> padding, std::pair<int, int> dilation,
                       std::pair<long, long> out_hw, bool relu, int threads,
                       std::optional<carray<float>> residual) {
    if (x.ndim() != 4) throw py::value_error("x must be 4-D (N, C, H, W)");
    kepsparse::ConvArgs a;
    a.N = x.shape(0);
    a.H = x.shape(2);
    a.W = x.shape(3);
    if (x.shape(1) != plan.Ctot) throw py::value_error("x has a channel count the plan was not built for");
    if (a.N <= 0 || a.H <= 0 || a.W <= 0) throw py::value_error("x has an empty dimension");
    std::tie(a.sh, a.sw) = stride;
    std::tie(a.dh, a.dw) = dilation;
    std::tie(a.pt, a.pb, a.pl, a.pr) = padding;
    if (a.sh < 1 || a.sw < 1 || a.dh < 1 || a.dw < 1 || a.pt < 0 || a.pb < 0 || a.pl < 0 || a.pr < 0)
        throw py::value_error("stride/dilation must be >= 1 and padding >= 0");
    if (bias) {
        if (bias->ndim() != 1 || bias->size() != plan.O)
            throw py::value_error("bias length != output channels");
        a.bias = bias->data();
    }
    std::tie(a.Ho, a.Wo) = out_hw;
    if (a.Ho <= 0 || a.Wo <= 0) throw py::value_error("empty output");
    if (residual) {
        const carray<float>& r = *residual;
        if (r.ndim() != 4 || r.shape(0) != a.N || r.shape(1) != plan.O || r.shape(2) != a.Ho ||
            r.shape(3) != a.Wo)
            throw py::value_error("residual must have the output's shape (N, O, Ho, Wo)");
        a.residual = r.data();
    }
    a.relu = relu;
    a.threads = threads;
    py::array_t<float> y({a.N, (long)plan.O, a.Ho, a.Wo});
    a.y = y.mutable_data();
    a.x = x.data();
    {
        py::gil_scoped_release release;
        if constexpr (std::is_same_v<Plan, SpconvPlan>)
            kepsparse::spconv_run(plan, isa, a);
        else
            kepsparse::spconv_run_groups(plan, isa, a);
    }
    return y;
}

}  // namespace

PYBIND11_MODULE(_core, m) {
    m.doc() = "kepsparse native kernels (C++, OpenMP, run-time ISA dispatch)";
    m.def("cpu_features", []() {
        py::dict d;
        const kepsparse::CpuFeatures f = kepsparse::detect_cpu_features();
        d["avx2"] = f.avx2;
        d["fma"] = f.fma;
        d["avx512f"] = f.avx512f;
        return d;
    }, "ISA extensions this CPU supports (detected at run time)");
    m.def("all_finite", [](py::array_t<float, py::array::c_style> x) {
        const float* data = x.data();
        const std::size_t n = static_cast<std::size_t>(x.size());
        py::gil_scoped_release release;
        return kepsparse::all_finite_f32(data, n);
    }, py::arg("x"), "True when the C-contiguous float32 array holds no NaN/Inf");
    m.def("max_pool2d", [](const carray<float>& x, std::pair<int, int> kernel,
                           std::pair<int, int> stride, std::pair<int, int> pad_begin,
                           std::pair<int, int> dilation, std::pair<long, long> out_hw,
                           int threads) {
        if (x.ndim() != 4) throw py::value_error("x must be 4-D (N, C, H, W)");
        const long N = x.shape(0), C = x.shape(1), H = x.shape(2), W = x.shape(3);
        const auto [kh, kw] = kernel;
        const auto [sh, sw] = stride;
        const auto [pt, pl] = pad_begin;
        const auto [dh, dw] = dilation;
        const auto [Ho, Wo] = out_hw;
        if (kh < 1 || kw < 1 || sh < 1 || sw < 1 || dh < 1 || dw < 1 || pt < 0 || pl < 0 ||
            Ho < 1 || Wo < 1 || N < 1 || C < 1 || H < 1 || W < 1)
            throw py::value_error("max_pool2d: sizes must be positive and pads >= 0");
        // every window must start inside the padded extent the caller computed Ho/Wo from
        if ((Ho - 1) * sh - pt >= H || (Wo - 1) * sw - pl >= W)
            throw py::value_error("max_pool2d: output size does not fit the input");
        py::array_t<float> y({N, C, Ho, Wo});
        const float* xp = x.data();
        float* yp = y.mutable_data();
        {
            py::gil_scoped_release release;
            kepsparse::max_pool2d_f32(xp, N * C, H, W, yp, Ho, Wo, kh, kw, sh, sw, pt, pl, dh, dw,
                                      threads);
        }
        return y;
    }, py::arg("x"), py::arg("kernel"), py::arg("stride"), py::arg("pad_begin"),
       py::arg("dilation"), py::arg("out_hw"), py::arg("threads") = 0,
       "2-D max pooling of float32 NCHW x (positions outside x ignored; NaN propagates); "
       "threads <= 0: the default count");
    m.def("openmp_max_threads", &kepsparse::openmp_max_threads,
          "OpenMP's default thread count (1 when built without OpenMP)");

    py::class_<SpconvPlan, std::shared_ptr<SpconvPlan>>(m, "SpconvPlan",
        "A layer's weights repacked for the sparse conv engine (see csrc/spconv.hpp)")
        .def(py::init(&make_plan), py::arg("O"), py::arg("Ctot"), py::arg("KH"), py::arg("KW"),
             py::arg("OB"), py::arg("out_ch"), py::arg("ck"), py::arg("w"), py::arg("cptr"))
        .def_property_readonly("OB", [](const SpconvPlan& p) { return p.OB; })
        .def_property_readonly("entries", [](const SpconvPlan& p) { return (long)p.ck.size(); })
        .def_property_readonly("nbytes", [](const SpconvPlan& p) {
            return (long)(p.ck.size() * 4 + p.w.size() * 4 + p.cptr.size() * 8 + p.out_ch.size() * 4);
        });
    m.def("spconv_tile_vectors", &kepsparse::spconv_tile_vectors, py::arg("isa"), py::arg("ob"),
          "vectors per full tile of an ISA for OB output channels (0: unsupported)");
    py::class_<kepsparse::GroupPlan, std::shared_ptr<kepsparse::GroupPlan>>(m, "GroupPlan",
        "A pattern-format layer repacked into pattern groups (see csrc/spconv.hpp)")
        .def(py::init(&make_group_plan), py::arg("O"), py::arg("Ctot"), py::arg("KH"),
             py::arg("KW"), py::arg("och"), py::arg("grp_ci"), py::arg("grp_k"),
             py::arg("grp_np"), py::arg("grp_ptr"), py::arg("ch_o"), py::arg("ch_w"),
             py::arg("chunk_ptr"))
        .def_property_readonly("groups", [](const kepsparse::GroupPlan& p) { return (long)p.grp_ci.size(); })
        .def_property_readonly("entries", [](const kepsparse::GroupPlan& p) { return (long)p.ch_o.size(); });
    m.def("spconv_run", &run<kepsparse::GroupPlan>, py::arg("plan"), py::arg("isa"), py::arg("x"),
          py::arg("bias"), py::arg("stride"), py::arg("padding"), py::arg("dilation"),
          py::arg("out_hw"), py::arg("relu") = false, py::arg("threads") = 0,
          py::arg("residual") = py::none(),
          "act(conv2d(x) + bias + residual) of float32 NCHW x with a pattern-group plan; "
          "releases the GIL");
    kepsparse::register_runner(m);
    m.def("spconv_run", &run<SpconvPlan>, py::arg("plan"), py::arg("isa"), py::arg("x"), py::arg("bias"),
          py::arg("stride"), py::arg("padding"), py::arg("dilation"), py::arg("out_hw"),
          py::arg("relu") = false, py::arg("threads") = 0, py::arg("residual") = py::none(),
          "act(conv2d(x) + bias + residual) of float32 NCHW x with a plan; releases the GIL");
}
