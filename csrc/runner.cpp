// SpconvCall: a layer's conv bound to one input shape. StepRunner: a network's compiled
// steps (kepsparse/runtime/engine.py) run in a C++ loop, conv steps straight through their
// SpconvCall, every other step through its Python function. Both hold the GIL except
// inside the kernels.
#include "runner.hpp"

#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include <array>
#include <memory>
#include <optional>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "spconv_api.hpp"

namespace py = pybind11;
using kepsparse::SpconvPlan;

namespace {

template <typename T>
using carray = py::array_t<T, py::array::c_style | py::array::forcecast>;
// exactly float32 and C-contiguous: what the kernels take without a copy
using f32c_array = py::array_t<float, py::array::c_style>;

// A layer's conv bound to one input shape (kepsparse.kernels.cpp.bind): the plan, the bias
// and the shape-dependent set-up (SpconvLayout) are held, so a call converts three
// arguments and runs. The network runtime calls every layer through one of these.
class SpconvCall {
public:
    template <typename Plan>
    SpconvCall(std::shared_ptr<Plan> plan, const std::string& isa, std::tuple<long, long, long, long> x_shape,
               std::optional<carray<float>> bias, std::pair<int, int> stride,
               std::tuple<int, int, int, int> padding, std::pair<int, int> dilation,
               std::pair<long, long> out_hw, int threads) : plan_(plan) {
        if (!plan) throw py::value_error("plan must not be None");
        long C;
        std::tie(args_.N, C, args_.H, args_.W) = x_shape;
        if (C != plan->Ctot) throw py::value_error("x has a channel count the plan was not built for");
        std::tie(args_.sh, args_.sw) = stride;
        std::tie(args_.dh, args_.dw) = dilation;
        std::tie(args_.pt, args_.pb, args_.pl, args_.pr) = padding;
        std::tie(args_.Ho, args_.Wo) = out_hw;
        if (args_.Ho <= 0 || args_.Wo <= 0) throw py::value_error("empty output");
        args_.threads = threads;
        O_ = plan->O;
        if (bias) {
            if (bias->ndim() != 1 || bias->size() != O_)
                throw py::value_error("bias length != output channels");
            bias_.assign(bias->data(), bias->data() + O_);
        }
        if constexpr (std::is_same_v<Plan, SpconvPlan>)
            layout_ = std::make_unique<kepsparse::SpconvLayout>(plan.get(), nullptr, isa, args_);
        else
            layout_ = std::make_unique<kepsparse::SpconvLayout>(nullptr, plan.get(), isa, args_);
    }

    // act(conv(x) + bias + residual), or None when x holds a NaN/Inf (nothing computed:
    // the caller runs dense semantics, see kepsparse.conv.run_prepared).
    py::object operator()(const carray<float>& x, bool relu,
                          std::optional<carray<float>> residual) const {
        if (x.ndim() != 4 || x.shape(0) != args_.N || x.shape(1) != layout_->C ||
            x.shape(2) != args_.H || x.shape(3) != args_.W)
            throw py::value_error("x's shape is not the one this call was bound to");
        kepsparse::ConvArgs a = args_;
        a.x = x.data();
        a.bias = bias_.empty() ? nullptr : bias_.data();
        a.relu = relu;
        if (residual) {
            const carray<float>& r = *residual;
            if (r.ndim() != 4 || r.shape(0) != a.N || r.shape(1) != O_ || r.shape(2) != a.Ho ||
                r.shape(3) != a.Wo)
                throw py::value_error("residual must have the output's shape (N, O, Ho, Wo)");
            a.residual = r.data();
        }
        py::array_t<float> y({a.N, (long)O_, a.Ho, a.Wo});
        a.y = y.mutable_data();
        bool ran;
        {
            py::gil_scoped_release release;
            ran = kepsparse::spconv_execute(*layout_, a, true);
        }
        if (!ran) return py::none();
        return std::move(y);
    }

private:
    std::shared_ptr<const void> plan_;  // keeps the plan the layout points into alive
    kepsparse::ConvArgs args_;
    long O_ = 0;
    std::vector<float> bias_;
    std::unique_ptr<kepsparse::SpconvLayout> layout_;
};

// Whether h is a float32 C-contiguous array of exactly this 4-D shape.
bool is_f32c_shape(py::handle h, const std::array<long, 4>& shape) {
    if (!f32c_array::check_(h)) return false;
    const auto a = py::reinterpret_borrow<py::array>(h);
    if (a.ndim() != 4) return false;
    for (int d = 0; d < 4; ++d)
        if (a.shape(d) != shape[d]) return false;
    return true;
}

std::array<long, 4> shape4(const py::tuple& t) {
    if (t.size() != 4) throw py::value_error("conv shapes must be 4-D");
    return {t[0].cast<long>(), t[1].cast<long>(), t[2].cast<long>(), t[3].cast<long>()};
}

// The steps of a compiled graph (GraphModel._native in engine.py). Slots: the graph's
// tensors by index in a Python list the caller fills with constants and inputs. Each step
// reads its input slots (-1: an absent optional input, None), writes its output slot and
// clears the slots that die after it. A conv step with a bound call runs natively when its
// operands are float32 C-contiguous of the bound shapes and finite; otherwise (and for
// every other step) the step's Python function fn(inputs, None) runs, exactly as the
// Python loop would call it. fn raises with the node's name (engine.py wraps it).
class StepRunner {
public:
    explicit StepRunner(const py::list& steps) {
        for (py::handle h : steps) {
            const auto t = py::cast<py::tuple>(h);
            if (t.size() != 5) throw py::value_error("a step is (fn, inputs, output, dead, conv)");
            Step s;
            s.fn = py::reinterpret_borrow<py::object>(t[0]);
            s.in = t[1].cast<std::vector<long>>();
            s.out = t[2].cast<long>();
            s.dead = t[3].cast<std::vector<long>>();
            if (!t[4].is_none()) {  // (SpconvCall, x shape, output shape, relu)
                const auto c = py::cast<py::tuple>(t[4]);
                if (c.size() != 4) throw py::value_error("conv is (call, x_shape, out_shape, relu)");
                s.call_obj = py::reinterpret_borrow<py::object>(c[0]);
                s.call = s.call_obj.cast<const SpconvCall*>();
                s.x_shape = shape4(c[1].cast<py::tuple>());
                s.out_shape = shape4(c[2].cast<py::tuple>());
                s.relu = c[3].cast<bool>();
                if (s.in.empty() || s.in.size() > 2 || s.in[0] < 0 || (s.in.size() == 2 && s.in[1] < 0))
                    throw py::value_error("a conv step reads x and an optional residual");
            }
            steps_.push_back(std::move(s));
        }
    }

    // Runs every step; slots must hold at least every index the steps name.
    void run(py::list slots) const {
        const long n = (long)slots.size();
        auto slot = [&](long i) -> long {
            if (i < 0 || i >= n) throw py::index_error("step slot out of range");
            return i;
        };
        for (const Step& s : steps_) {
            py::object y;
            if (s.call) {
                const py::object x = slots[slot(s.in[0])];
                const bool has_res = s.in.size() == 2;
                const py::object r = has_res ? py::object(slots[slot(s.in[1])]) : py::object();
                if (is_f32c_shape(x, s.x_shape) && (!has_res || is_f32c_shape(r, s.out_shape))) {
                    std::optional<carray<float>> res;
                    if (has_res) res = py::reinterpret_borrow<carray<float>>(r);
                    try {
                        y = (*s.call)(py::reinterpret_borrow<carray<float>>(x), s.relu, res);
                    } catch (...) {  // e.g. out of memory: fn runs it again and names the node
                        y = py::object();
                    }
                    if (y && y.is_none()) y = py::object();  // NaN/Inf in x: fn runs dense semantics
                }
            }
            if (!y) {
                py::list xs(s.in.size());
                for (size_t k = 0; k < s.in.size(); ++k)
                    xs[k] = s.in[k] < 0 ? py::none() : py::object(slots[slot(s.in[k])]);
                y = s.fn(xs, py::none());
            }
            slots[slot(s.out)] = y;
            for (long d : s.dead) slots[slot(d)] = py::none();
        }
    }

    long size() const { return (long)steps_.size(); }
    long native_steps() const {
        long k = 0;
        for (const Step& s : steps_) k += s.call != nullptr;
        return k;
    }

private:
    struct Step {
        py::object fn;
        std::vector<long> in, dead;
        long out = 0;
        py::object call_obj;  // keeps call alive
        const SpconvCall* call = nullptr;
        std::array<long, 4> x_shape{}, out_shape{};
        bool relu = false;
    };
    std::vector<Step> steps_;
};

// SpconvCall's constructor for one plan kind (SpconvPlan or GroupPlan)
template <typename Plan>
void def_call_init(py::class_<SpconvCall>& cls) {
    cls.def(py::init<std::shared_ptr<Plan>, const std::string&, std::tuple<long, long, long, long>,
                     std::optional<carray<float>>, std::pair<int, int>,
                     std::tuple<int, int, int, int>, std::pair<int, int>, std::pair<long, long>,
                     int>(),
            py::arg("plan"), py::arg("isa"), py::arg("x_shape"), py::arg("bias"),
            py::arg("stride"), py::arg("padding"), py::arg("dilation"), py::arg("out_hw"),
            py::arg("threads"));
}

}  // namespace

namespace kepsparse {

void register_runner(py::module_& m) {
    py::class_<SpconvCall> call(m, "SpconvCall",
        "A layer's conv bound to one input shape: call(x, relu, residual) -> y, or None when "
        "x holds a NaN/Inf (nothing computed). Releases the GIL.");
    def_call_init<kepsparse::GroupPlan>(call);
    def_call_init<SpconvPlan>(call);
    call.def("__call__", &SpconvCall::operator(), py::arg("x"), py::arg("relu"),
             py::arg("residual") = py::none());
    py::class_<StepRunner>(m, "StepRunner",
        "A compiled graph's steps run in C++ (see csrc/runner.cpp and engine.py)")
        .def(py::init<const py::list&>(), py::arg("steps"))
        .def("run", &StepRunner::run, py::arg("slots"))
        .def_property_readonly("steps", &StepRunner::size)
        .def_property_readonly("native_steps", &StepRunner::native_steps);
}

}  // namespace kepsparse
