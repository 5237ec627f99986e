// SpconvCall: a layer's conv bound to one input shape. StepRunner: a network's compiled
// steps (kepsparse/runtime/engine.py) run in a C++ loop, conv steps straight through their
// SpconvCall, every other step through its Python function. Both hold the GIL except
// inside the kernels.
#include "runner.hpp"

#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include <array>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
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

// A float32 4-D array read in place: its first data float and strides in floats.
struct F32View {
    const float* p = nullptr;
    long img = 0, plane = 0, row = 0;
};

// h as an F32View when it is a float32 array of exactly this shape whose rows are contiguous
// (column stride 4 bytes) and whose other strides are positive whole floats: a packed
// output (SpconvCall::pack_output_for) or any C-contiguous array. Otherwise nothing (a
// broadcast array's zero stride would read as ConvArgs' "contiguous").
std::optional<F32View> f32_view(py::handle h, const std::array<long, 4>& shape) {
    if (!py::isinstance<py::array>(h)) return std::nullopt;
    const auto a = py::reinterpret_borrow<py::array>(h);
    if (a.ndim() != 4 || !a.dtype().is(py::dtype::of<float>())) return std::nullopt;
    for (int d = 0; d < 4; ++d)
        if (a.shape(d) != shape[d]) return std::nullopt;
    const auto fs = [&](int d) { return a.strides(d) / (long)sizeof(float); };
    if (shape[3] > 1 && a.strides(3) != (long)sizeof(float)) return std::nullopt;
    for (int d = 0; d < 3; ++d)
        if ((shape[d] > 1 && a.strides(d) <= 0) || a.strides(d) < 0 ||
            a.strides(d) % (long)sizeof(float) != 0)
            return std::nullopt;
    if ((reinterpret_cast<std::uintptr_t>(a.data()) % alignof(float)) != 0) return std::nullopt;
    return F32View{static_cast<const float*>(a.data()), fs(0), fs(1), fs(2)};
}

// h read in place (f32_view), or else through a float32 C-contiguous copy kept in `keep`.
// TypeError when h cannot be read as float32, ValueError (`shape_msg`) for another shape.
F32View view_or_copy(py::handle h, const std::array<long, 4>& shape, py::object& keep,
                     const char* name, const char* shape_msg) {
    if (std::optional<F32View> v = f32_view(h, shape)) return *v;
    keep = carray<float>::ensure(h);  // (clears the error on failure)
    if (!keep) throw py::type_error(std::string(name) + " cannot be read as a float32 array");
    if (std::optional<F32View> v = f32_view(keep, shape)) return *v;
    throw py::value_error(shape_msg);
}

// ---- packed outputs --------------------------------------------------------------------
// A call that feeds a stride-1 conv can write its output straight into that conv's packed
// input layout (SpconvLayout: planes of PS floats, row pitch Wr, data at data_offset(),
// zeros around it and slack after the last plane). The output is then a strided NumPy view
// of a PackedBuffer; the consumer, seeing exactly its layout, skips packing.
// Invariant: a buffer's non-data floats are zero. It is zeroed when allocated and the
// epilogue writes data positions only, so the zeros survive reuse; NumPy code holding the
// view can only reach data positions too.
struct PackedLayout {
    long N = 0, C = 0, H = 0, W = 0;  // the tensor (N, C, H, W) it holds
    long Wr = 0, PS = 0, off = 0;     // row pitch, plane floats, offset of data (0, 0)
    size_t floats = 0;                // buffer size, slack included
    bool operator==(const PackedLayout& o) const {
        return N == o.N && C == o.C && H == o.H && W == o.W && Wr == o.Wr && PS == o.PS &&
               off == o.off;
    }
};

// Free buffers of one packed layout, shared by every producer call writing that layout
// (and by the buffers they handed out, which may outlive them). Last in, first out: the
// buffer a consumer has just read, still in cache, takes the next output (with a pool per
// producer, ResNet-56 at batch 8 cycled through 52 buffers of 600 KB and ran slower than
// with no packing at all). Thread-safe.
class BufferPool {
public:
    explicit BufferPool(size_t floats) : floats_(floats) {}
    ~BufferPool() {
        for (float* p : free_) std::free(p);
    }
    float* take() {
        {
            std::lock_guard<std::mutex> lk(m_);
            if (!free_.empty()) {
                float* p = free_.back();
                free_.pop_back();
                return p;
            }
        }
        const size_t bytes = (floats_ * sizeof(float) + 63) / 64 * 64;
        float* p = static_cast<float*>(std::aligned_alloc(64, bytes));
        if (!p) throw std::bad_alloc();
        std::memset(p, 0, bytes);
        return p;
    }
    void give_back(float* p) {
        std::lock_guard<std::mutex> lk(m_);
        if (free_.size() < 4) free_.push_back(p); else std::free(p);  // bounded
    }

private:
    std::mutex m_;
    std::vector<float*> free_;
    size_t floats_;
};

// The pool of a layout: one per distinct layout alive in the process. Its padding zeros
// are the layout's own, so buffers never move between layouts.
std::shared_ptr<BufferPool> pool_for(const PackedLayout& L) {
    static std::mutex m;
    static std::vector<std::pair<PackedLayout, std::weak_ptr<BufferPool>>> pools;
    std::lock_guard<std::mutex> lk(m);
    std::shared_ptr<BufferPool> p;
    for (auto it = pools.begin(); it != pools.end();) {
        std::shared_ptr<BufferPool> q = it->second.lock();
        if (!q) { it = pools.erase(it); continue; }
        if (it->first == L && it->first.floats == L.floats) p = q;
        ++it;
    }
    if (!p) {
        p = std::make_shared<BufferPool>(L.floats);
        pools.emplace_back(L, p);
    }
    return p;
}

constexpr const char* PACKED_CAPSULE = "kepsparse.PackedBuffer";

// Largest packed output: about one core's L2 (1 MB on Zen 5). Measured, 1 thread: ResNet-56
// (0.6 MB buffers at batch 8) 5.4 -> 4.1 ms with packed outputs; ResNet-18 at batch 1
// (0.9 MB) the same either way; at batch 8 (7 MB) 77-81 -> 84-86 ms, slower: an output that
// large has left the cache before the next conv reads it, and the one packing pass it
// saves costs less than the strided epilogue.
constexpr size_t PACKED_MAX_BYTES = size_t(1) << 20;

// One output: the base object of its NumPy view (a capsule named PACKED_CAPSULE).
struct PackedBuffer {
    float* data = nullptr;
    PackedLayout layout;
    int nonfinite = 0;  // 1: the call that wrote it stored a NaN/Inf
    std::shared_ptr<BufferPool> home;
    ~PackedBuffer() {
        if (data) home->give_back(data);
    }
};

// The PackedBuffer behind x when x is exactly its data view (layout, pointer, strides).
const PackedBuffer* packed_base(py::handle x, const F32View& v) {
    const py::object base_obj = py::reinterpret_borrow<py::array>(x).base();
    PyObject* base = base_obj.ptr();
    if (!base || !PyCapsule_CheckExact(base) || !PyCapsule_IsValid(base, PACKED_CAPSULE))
        return nullptr;
    const auto* b = static_cast<const PackedBuffer*>(PyCapsule_GetPointer(base, PACKED_CAPSULE));
    const PackedLayout& L = b->layout;
    if (v.p != b->data + L.off || v.img != L.C * L.PS || v.plane != L.PS || v.row != L.Wr)
        return nullptr;
    return b;
}

// A layer's conv bound to one input shape (kepsparse.kernels.cpp.bind): the plan, the bias
// and the shape-dependent set-up (SpconvLayout) are held, so a call converts three
// arguments and runs. The network runtime calls every layer through one of these.
// x and residual are read in place when float32 with contiguous rows (any other strides);
// anything else is converted first.
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
        const kepsparse::SpconvLayout& L = *layout_;
        if (L.packed_input())
            in_layout_ = PackedLayout{L.N, L.C, L.H, L.W, L.ctx.Wr, L.PS, L.data_offset(),
                                      (size_t)L.packed_floats()};
    }

    std::array<long, 4> x_shape() const { return {args_.N, layout_->C, args_.H, args_.W}; }
    std::array<long, 4> out_shape() const { return {args_.N, (long)O_, args_.Ho, args_.Wo}; }

    // From now on write outputs in consumer's packed input layout (strided views of
    // PackedBuffers). False, changing nothing, when consumer takes no packed input (stride
    // != 1) or another shape than this call's output, or when the buffer would exceed
    // PACKED_MAX_BYTES.
    bool pack_output_for(const SpconvCall& consumer) {
        const std::optional<PackedLayout>& in = consumer.in_layout_;
        if (!in || in->N != args_.N || in->C != O_ || in->H != args_.Ho || in->W != args_.Wo ||
            in->floats * sizeof(float) > PACKED_MAX_BYTES)
            return false;
        out_layout_ = *in;
        pool_ = pool_for(*in);
        return true;
    }
    bool packs_output() const { return out_layout_.has_value(); }
    // (default, alternative) thread counts the call chooses between (SpconvLayout::split)
    std::pair<int, int> thread_counts() const {
        return {layout_->split[0].nt, layout_->split[1].nt};
    }

    // Whether x is an output in this call's packed input layout, read without packing.
    bool reads_packed(py::handle x) const {
        const std::optional<F32View> v = f32_view(x, x_shape());
        const PackedBuffer* b = in_layout_ && v ? packed_base(x, *v) : nullptr;
        return b && takes(*b);
    }

    // act(conv(x) + bias + residual), or None when x holds a NaN/Inf (nothing computed:
    // the caller runs dense semantics, see kepsparse.conv.run_prepared).
    py::object operator()(py::object x, bool relu, std::optional<py::object> residual) const {
        kepsparse::ConvArgs a = args_;
        py::object x_keep, r_keep;  // copies, when the operands cannot be read in place
        const F32View xv = view_or_copy(x, x_shape(), x_keep, "x",
                                        "x's shape is not the one this call was bound to");
        const PackedBuffer* xb = in_layout_ && !x_keep ? packed_base(x, xv) : nullptr;
        if (xb && takes(*xb)) {
            if (xb->nonfinite) return py::none();  // dense semantics (see above)
            a.x_packed = true;
        }
        a.x = xv.p;
        a.x_img = xv.img;
        a.x_plane = xv.plane;
        a.x_row = xv.row;
        a.bias = bias_.empty() ? nullptr : bias_.data();
        a.relu = relu;
        if (residual && !residual->is_none()) {
            const F32View rv = view_or_copy(*residual, out_shape(), r_keep, "residual",
                                            "residual must have the output's shape (N, O, Ho, Wo)");
            a.residual = rv.p;
            a.r_img = rv.img;
            a.r_plane = rv.plane;
            a.r_row = rv.row;
        }
        py::object y;
        std::unique_ptr<PackedBuffer> out;
        if (out_layout_) {
            out.reset(new PackedBuffer());
            out->home = pool_;
            out->layout = *out_layout_;
            out->data = pool_->take();
            const PackedLayout& L = out->layout;
            a.y = out->data + L.off;
            a.y_img = L.C * L.PS;
            a.y_plane = L.PS;
            a.y_row = L.Wr;
            a.y_nonfinite = &out->nonfinite;
        } else {
            py::array_t<float> yc({a.N, (long)O_, a.Ho, a.Wo});
            a.y = yc.mutable_data();
            y = std::move(yc);
        }
        bool ran;
        {
            py::gil_scoped_release release;
            ran = kepsparse::spconv_execute(*layout_, a, true);
        }
        if (!ran) return py::none();
        if (out) {
            const PackedLayout& L = out->layout;
            const long f = (long)sizeof(float);
            float* first = out->data + L.off;
            py::capsule owner(out.get(), PACKED_CAPSULE,
                              [](void* p) { delete static_cast<PackedBuffer*>(p); });
            out.release();  // owned by the capsule now
            y = py::array(py::dtype::of<float>(), {a.N, (long)O_, a.Ho, a.Wo},
                          {L.C * L.PS * f, L.PS * f, L.Wr * f, f}, first, owner);
        }
        return y;
    }

private:
    bool takes(const PackedBuffer& b) const {
        return b.layout == *in_layout_ && b.layout.floats >= in_layout_->floats;
    }

    std::shared_ptr<const void> plan_;  // keeps the plan the layout points into alive
    kepsparse::ConvArgs args_;
    long O_ = 0;
    std::vector<float> bias_;
    std::unique_ptr<kepsparse::SpconvLayout> layout_;
    std::optional<PackedLayout> in_layout_;   // this call's packed input, if it takes one
    std::optional<PackedLayout> out_layout_;  // the layout its outputs are written in
    std::shared_ptr<BufferPool> pool_;        // their buffers
};

std::array<long, 4> shape4(const py::tuple& t) {
    if (t.size() != 4) throw py::value_error("conv shapes must be 4-D");
    return {t[0].cast<long>(), t[1].cast<long>(), t[2].cast<long>(), t[3].cast<long>()};
}

// The steps of a compiled graph (GraphModel._native in engine.py). Slots: the graph's
// tensors by index in a Python list the caller fills with constants and inputs. Each step
// reads its input slots (-1: an absent optional input, None), writes its output slot and
// clears the slots that die after it. A conv step with a bound call runs natively when its
// operands are float32 arrays of the bound shapes with contiguous rows (f32_view) and
// finite; otherwise (and for
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

    // Runs every step; slots must hold at least every index the steps name. With
    // step_seconds (a list), appends each step's wall time in seconds, in step order.
    void run(py::list slots, std::optional<py::list> step_seconds) const {
        const long n = (long)slots.size();
        auto slot = [&](long i) -> long {
            if (i < 0 || i >= n) throw py::index_error("step slot out of range");
            return i;
        };
        for (const Step& s : steps_) {
            // the clock only when asked: ResNet-56 runs ~65 steps per call
            const auto t0 = step_seconds ? std::chrono::steady_clock::now()
                                         : std::chrono::steady_clock::time_point();
            py::object y;
            if (s.call) {
                const py::object x = slots[slot(s.in[0])];
                const bool has_res = s.in.size() == 2;
                const py::object r = has_res ? py::object(slots[slot(s.in[1])]) : py::object();
                if (f32_view(x, s.x_shape) && (!has_res || f32_view(r, s.out_shape))) {
                    std::optional<py::object> res;
                    if (has_res) res = r;
                    try {
                        y = (*s.call)(x, s.relu, res);
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
            if (step_seconds)
                step_seconds->append(std::chrono::duration<double>(
                    std::chrono::steady_clock::now() - t0).count());
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
    call.def("pack_output_for", &SpconvCall::pack_output_for, py::arg("consumer"),
             "Write every later output straight into consumer's packed input layout (a "
             "strided view the consumer reads without packing). False, changing nothing, when "
             "consumer is not stride 1 or does not take this call's output shape.");
    call.def_property_readonly("packs_output", &SpconvCall::packs_output);
    call.def_property_readonly("thread_counts", &SpconvCall::thread_counts,
        "(default, alternative): the thread counts of a 1x and a 10x lower work threshold; "
        "when they differ, each call runs the one measured faster (ThreadChoice).");
    call.def("reads_packed", &SpconvCall::reads_packed, py::arg("x"),
             "Whether x is another call's output in this call's packed input layout (read "
             "without packing).");
    py::class_<StepRunner>(m, "StepRunner",
        "A compiled graph's steps run in C++ (see csrc/runner.cpp and engine.py)")
        .def(py::init<const py::list&>(), py::arg("steps"))
        .def("run", &StepRunner::run, py::arg("slots"), py::arg("step_seconds") = py::none(),
             "Runs the steps on slots; step_seconds (a list): each step's seconds appended")
        .def_property_readonly("steps", &StepRunner::size)
        .def_property_readonly("native_steps", &StepRunner::native_steps);
}

}  // namespace kepsparse
