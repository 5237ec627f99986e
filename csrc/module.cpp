// pybind11 bindings of kepsparse._core. Kernel families live in their own files
// (spconv*.cpp: the sparse convolution engine); this file only converts arguments.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "cpu_features.hpp"
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

py::array_t<float> run(const SpconvPlan& plan, const std::string& isa, const carray<float>& x,
                       std::optional<carray<float>> bias, std::pair<int, int> stride,
                       std::tuple<int, int, int, int> padding, std::pair<int, int> dilation,
                       std::pair<long, long> out_hw, bool relu, int threads) {
    if (x.ndim() != 4) throw py::value_error("x must be 4-D (N, C, H, W)");
    const long N = x.shape(0), C = x.shape(1), H = x.shape(2), W = x.shape(3);
    if (C != plan.Ctot) throw py::value_error("x has a channel count the plan was not built for");
    if (N <= 0 || H <= 0 || W <= 0) throw py::value_error("x has an empty dimension");
    const auto [sh, sw] = stride;
    const auto [dh, dw] = dilation;
    const auto [pt, pb, pl, pr] = padding;
    if (sh < 1 || sw < 1 || dh < 1 || dw < 1 || pt < 0 || pb < 0 || pl < 0 || pr < 0)
        throw py::value_error("stride/dilation must be >= 1 and padding >= 0");
    const float* bp = nullptr;
    if (bias) {
        if (bias->size() != plan.O) throw py::value_error("bias length != output channels");
        bp = bias->data();
    }
    const auto [Ho, Wo] = out_hw;
    if (Ho <= 0 || Wo <= 0) throw py::value_error("empty output");
    py::array_t<float> y({N, (long)plan.O, Ho, Wo});
    float* yp = y.mutable_data();
    const float* xp = x.data();
    {
        py::gil_scoped_release release;
        kepsparse::spconv_run(plan, isa, xp, N, H, W, bp, yp, Ho, Wo, sh, sw, pt, pb, pl, pr, dh,
                              dw, relu, threads);
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
    m.def("spconv_run", &run, py::arg("plan"), py::arg("isa"), py::arg("x"), py::arg("bias"),
          py::arg("stride"), py::arg("padding"), py::arg("dilation"), py::arg("out_hw"),
          py::arg("relu") = false, py::arg("threads") = 0,
          "sparse conv2d of float32 NCHW x with a plan; releases the GIL");
}
