"""``GraphModel``: a ``SparseModel`` that carries its network graph and runs it.

    m = kepsparse.load("model.kep")        # a GraphModel when the file holds a graph
    y = m(x)                               # NumPy in, NumPy out, any batch >= 1
    y = m(x, backend="cpp", threads=2)

Each SparseConv node runs one layer through a kernel of the registry (``backend`` =
auto | reference | numba | cpp | a kernel name | dense). ``auto`` uses the per-layer choice
measured by ``kepsparse tune`` when the file holds one (``metadata["kernel_choice"]``),
otherwise the registry's best kernel for the layer's format, falling back to the BLAS dense
path (``runtime/dense.py``) where only the reference kernel exists or no kernel supports the
layer's groups. Everything else runs in NumPy (``runtime/ops.py``). No torch anywhere.

The nodes are compiled once per (backend, threads) into steps, functions of their inputs.
The first call with given input shapes runs them in a Python loop, which binds every conv
to its input shape; later calls with those shapes run the same steps in C++
(``_core.StepRunner``): conv steps straight into their bound C++ call, the others through
their Python function. ResNet-56 at batch 1: 0.64 ms in the loop, 0.56 ms in C++.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from ..blas import single_threaded
from ..conv import as_input, bind_prepared, check_operands, check_threads, prepared_for
from ..errors import InputError, KepError, UnsupportedError
from ..formats import DenseFormat
from ..kernels import registry
from ..kernels.registry import BACKENDS
from ..model import SparseConv, SparseModel
from .dense import DenseConv
from .graph import Graph, Node
from . import ops
from .ops import FUNCS, INPLACE_OPS, VIEW_OPS
try:  # the C++ step runner and bound conv calls (csrc/runner.cpp), when the extension is built
    from .._core import SpconvCall as _SpconvCall, StepRunner as _StepRunner
except ImportError:  # pragma: no cover - exercised only on compiler-less installs
    _SpconvCall = _StepRunner = None
DENSE_IMPL = DenseConv.name


# ------------------------------------------------------------------ conv implementations

class ConvImpl:
    """One way of running one layer: a registry kernel on the sparse or a dense copy of the
    weight, or the BLAS dense path. ``choice`` is the JSON-able description."""

    def __init__(self, layer: SparseConv, choice: dict, threads=None):
        self.layer, self.choice = layer, dict(choice)
        # a tuned choice may pin its own thread count (e.g. 1 for a layer too small to split)
        self.threads = check_threads(choice.get("threads", threads))
        self.geometry = layer.geometry
        if self.geometry is None:
            raise UnsupportedError("layer has no recorded geometry", layer=layer.name,
                                   field="geometry")
        if choice["impl"] == DENSE_IMPL:
            self.dense = DenseConv(layer.weight.to_dense(), layer.bias, self.geometry)
            self.fmt = layer.weight
            self.kernel = None
        else:
            self.dense = None
            self.kernel = registry.get(choice["kernel"])
            if choice.get("weight") == "dense":
                cache = layer.__dict__.setdefault("_dense_copy", [])
                if not cache:
                    cache.append(DenseFormat.from_dense(layer.weight.to_dense()))
                self.fmt = cache[0]
            else:
                self.fmt = layer.weight
            if self.fmt.name not in self.kernel.formats:
                raise UnsupportedError(f"kernel {self.kernel.name!r} does not run the "
                                       f"{self.fmt.name!r} format (it runs "
                                       f"{', '.join(self.kernel.formats)})", layer=layer.name,
                                       field="kernel")
            self.prepared = prepared_for(self.fmt, self.kernel)
        self.bias = None if layer.bias is None else np.ascontiguousarray(layer.bias, np.float32)
        self._checked_shape = None  # x.shape last validated (the checks depend on it alone)
        # the kernel bound to the last validated shape (conv.bind_prepared): (x shape,
        # output shape, call), replaced together, so threads sharing self never see a shape
        # with another shape's call. The graph's conv steps call it directly (fast path).
        self.bound = (None, None, None)
        self._out_cache = (None, None)  # output_shape's last (x shape, answer)

    @property
    def label(self) -> str:
        if self.kernel is None:
            return DENSE_IMPL
        t = f"@{self.choice['threads']}t" if "threads" in self.choice else ""
        return f"{self.kernel.name}[{self.choice.get('weight', 'sparse')}]{t}"

    def __call__(self, x, relu=False, residual=None):
        """act(conv(x) + bias + residual); ``residual``: None or a float32 C-contiguous
        array of the output's shape (the caller checks)."""
        if not (_is_f32c(x) and x.shape == self._checked_shape):
            try:
                x = as_input(x)
                check_operands(x, self.fmt, self.bias, self.geometry, layer=self.layer.name)
            except KepError as exc:
                raise exc.located(layer=self.layer.name) from None
            self._checked_shape = x.shape
        if self.dense is not None:
            return self.dense(x, relu, residual)
        shape, _, bound = self.bound
        if shape != x.shape:
            bound = bind_prepared(self.kernel, self.prepared, self.fmt, x.shape, self.bias,
                                  self.geometry, self.threads)
            self.bound = (x.shape, self.output_shape(x.shape), bound)
        return bound(x, relu, residual)

    def output_shape(self, x_shape) -> tuple:
        cached = self._out_cache  # one (x shape, output shape) pair: threads may share self
        if cached[0] != x_shape:
            O, _, KH, KW = self.fmt.shape
            cached = (x_shape, (x_shape[0], O) + tuple(
                self.geometry.output_size(x_shape[2], x_shape[3], KH, KW)))
            self._out_cache = cached
        return cached[1]


def _valid_choice(layer: SparseConv, choice) -> bool:
    """Whether a cached (tuned) ``choice`` can run ``layer`` here. The cache comes from the
    file, so it is untrusted: anything malformed, stale or mismatched is simply not used."""
    if not isinstance(choice, dict):
        return False
    if "threads" in choice:
        t = choice["threads"]
        if isinstance(t, bool) or not isinstance(t, int) or t < 1:
            return False
    impl = choice.get("impl")
    if impl == DENSE_IMPL:
        return True
    if impl != "kernel":
        return False
    name, weight = choice.get("kernel"), choice.get("weight", "sparse")
    if not isinstance(name, str) or weight not in ("sparse", "dense"):
        return False
    try:
        kernel = registry.get(name)
    except KepError:
        return False  # the cached kernel does not exist in this build
    if kernel.unavailable_reason() is not None:
        return False
    groups = layer.geometry.groups if layer.geometry else 1
    if groups != 1 and not kernel.supports_groups:
        return False
    fmt = "dense" if weight == "dense" else layer.weight.name
    return fmt in kernel.formats


def default_choice(layer: SparseConv, backend: str) -> dict:
    """The implementation ``backend`` means for ``layer`` (no measurement)."""
    groups = layer.geometry.groups if layer.geometry else 1
    if backend == "dense":
        return {"impl": DENSE_IMPL}
    if not isinstance(backend, str) or (backend != "auto" and backend not in BACKENDS
                                        and backend not in _kernel_names()):
        raise UnsupportedError(f"unknown backend {backend!r}; choose from auto, dense, "
                               f"{', '.join(BACKENDS)} or a kernel name", layer=layer.name,
                               field="backend")
    try:
        k = registry.select_for(layer.weight, backend, groups)
    except UnsupportedError as exc:
        if groups != 1 and exc.field == "groups":
            return {"impl": DENSE_IMPL}  # no kernel of this backend runs grouped convs
        raise exc.located(layer=layer.name) from None
    if backend == "auto" and k.backend == "reference":
        return {"impl": DENSE_IMPL}  # the reference is the oracle, not a speed path
    return {"impl": "kernel", "kernel": k.name, "weight": "sparse"}


def _kernel_names() -> set[str]:
    return {k.name for k in registry.all_kernels(include_unavailable=True)}


# ------------------------------------------------------------------ the model

@dataclass(eq=False)
class GraphModel(SparseModel):
    graph: Graph | None = None

    def __post_init__(self):
        self._impls: dict = {}
        self._steps: dict = {}  # (backend, threads, fuse) -> compiled steps (see _compiled)
        self._plan = None
        #: fuse Conv -> Add [-> Relu] into one kernel call (see ``fuse_residual_adds``)
        self.fuse_epilogues = True
        #: run the compiled steps in C++ (``_core.StepRunner``) once a call has bound every
        #: conv to its input shape; False: always the Python loop
        self.native_steps = True
        # (backend, threads, fuse, input shapes) -> (slot of every tensor, StepRunner)
        self._native: dict = {}

    # ---- configuration
    def tuned_choices(self) -> dict:
        """The per-layer cache of ``kepsparse tune`` (entries unchecked: see ``_valid_choice``)."""
        kc = self.metadata.get("kernel_choice")
        layers = kc.get("layers") if isinstance(kc, dict) else None
        return layers if isinstance(layers, dict) else {}

    def conv_impl(self, name: str, backend: str = "auto", threads=None) -> ConvImpl:
        threads = check_threads(threads)
        if not isinstance(backend, str):
            raise UnsupportedError(f"must be a backend or kernel name, got {backend!r}",
                                   layer=name, field="backend")
        key = (name, backend, threads)
        if key not in self._impls:
            layer = self.layers[name]
            choice = None
            if backend == "auto":
                choice = self.tuned_choices().get(name)
                if not _valid_choice(layer, choice):
                    choice = None  # a stale or malformed cache entry: re-choose
            if choice is None:
                choice = default_choice(layer, backend)
            self._impls[key] = ConvImpl(layer, choice, threads)
        return self._impls[key]

    def tune(self, input_shape=None, batch: int = 1, threads=None, **kw) -> dict:
        """Choose each conv layer's fastest implementation by measurement (see ``tune.py``)."""
        from .tune import tune
        return tune(self, input_shape=input_shape, batch=batch, threads=threads, **kw)

    def describe_kernels(self, backend: str = "auto", threads=None) -> dict[str, str]:
        return {n.attrs["layer"]: self.conv_impl(n.attrs["layer"], backend, threads).label
                for n in self.graph.nodes if n.op == "SparseConv"}

    # ---- planning: which tensors die after which node, which inputs may be overwritten
    def _build_plan(self):
        g = self.graph
        nodes = fuse_residual_adds(g) if self.fuse_epilogues else list(g.nodes)
        last_use: dict[str, int] = {}
        for i, n in enumerate(nodes):
            for t in n.inputs:
                if t:
                    last_use[t] = i
        keep = set(g.outputs)
        produced: dict[str, str] = {}
        shared: set[str] = set()
        plan = []
        for i, n in enumerate(nodes):
            dead = sorted({t for t in n.inputs if t and last_use.get(t) == i and t not in keep
                           and t not in g.constants})
            first = n.inputs[0] if n.inputs else ""
            reuse = (n.op in INPLACE_OPS and first in produced and first not in shared
                     and first in dead and n.inputs.count(first) == 1)
            if n.op in VIEW_OPS:
                shared.update(t for t in n.inputs[:1] if t)
                shared.update(n.outputs)
            for o in n.outputs:
                produced[o] = n.op
            plan.append((n, dead, reuse))
        self._plan = (self.fuse_epilogues, plan)
        return plan

    # ---- running
    def _bind_inputs(self, args, named) -> dict:
        specs = self.graph.inputs
        if args and named:
            raise InputError("pass inputs either positionally or by name, not both",
                             field="inputs")
        if len(args) == 1 and isinstance(args[0], dict):
            named = args[0]
            args = ()
        if args:
            if len(args) != len(specs):
                raise InputError(f"the model takes {len(specs)} input(s) "
                                 f"({', '.join(s['name'] for s in specs)}), got {len(args)}",
                                 field="inputs")
            named = {s["name"]: a for s, a in zip(specs, args)}
        env = {}
        for s in specs:
            if s["name"] not in named:
                raise InputError("missing", field=s["name"])
            x = named[s["name"]]
            try:
                x = np.asarray(x)
            except Exception as exc:  # noqa: BLE001
                raise InputError(f"cannot be read as an array: {exc}", field=s["name"]) from None
            want = np.dtype(s["dtype"])
            if x.dtype != want:
                if not (x.dtype.kind in "fiub" and np.can_cast(x.dtype, want, "same_kind")
                        or x.dtype.kind in "iub" and want.kind == "f"):
                    raise InputError(f"dtype {x.dtype} cannot be used as {want}", field=s["name"])
                x = x.astype(want)
            shape = s.get("shape")
            if shape is not None:
                if x.ndim != len(shape):
                    raise InputError(f"must be {len(shape)}-D {_shape_str(shape)}, got shape "
                                     f"{tuple(x.shape)}", field=s["name"])
                for d, (want_d, got) in enumerate(zip(shape, x.shape)):
                    if d > 0 and want_d is not None and want_d != got:
                        raise InputError(f"dimension {d} must be {want_d} "
                                         f"{_shape_str(shape)}, got shape {tuple(x.shape)}",
                                         field=s["name"])
                if 0 in x.shape and 0 not in shape:
                    raise InputError(f"has an empty dimension: {tuple(x.shape)}", field=s["name"])
            env[s["name"]] = np.ascontiguousarray(x)
        extra = set(named) - {s["name"] for s in specs}
        if extra:
            raise InputError(f"unknown input(s) {sorted(extra)}", field="inputs")
        return env

    def __call__(self, *args, backend: str = "auto", threads: int | None = None,
                 capture: dict | None = None, timings: dict | None = None, **named):
        if self.graph is None:
            raise UnsupportedError("this model has no graph (converted from a checkpoint): run "
                                   "its layers one by one, model[name](x)", field="graph")
        threads = check_threads(threads)
        env = dict(self.graph.constants)
        given = self._bind_inputs(args, named)
        env.update(given)
        steps = self._compiled(backend, threads)
        native_key = None
        if self.native_steps and capture is None and _StepRunner is not None:
            native_key = (backend, threads, self.fuse_epilogues,
                          tuple((k, v.shape) for k, v in given.items()))
            native = self._native.get(native_key)
            if native is not None:
                return self._run_native(native, env, timings)
        for node, fn, inputs, output, dead in steps:
            xs = [env[t] if t else None for t in inputs]
            if timings is not None:
                t0 = time.perf_counter()
            try:
                y = fn(xs, capture)
            except Exception as exc:  # noqa: BLE001 - mapped or re-raised unchanged
                err = _node_error(node, exc)
                if err is None:
                    raise
                raise err from None
            env[output] = y
            if timings is not None:
                timings[node.name] = timings.get(node.name, 0.0) + time.perf_counter() - t0
            for t in dead:
                env.pop(t, None)
        outs = tuple(env[o] for o in self.graph.outputs)
        if native_key is not None and len(self._native) < 8:  # bounded: one per input shape
            self._native[native_key] = self._build_native(steps, backend, threads)
        return outs[0] if len(outs) == 1 else outs

    # ---- the same steps run by _core.StepRunner (csrc/runner.cpp): built after a Python
    # run with the same input shapes, when every conv is bound to its input shape. Conv
    # steps whose kernel call is a _core.SpconvCall run without Python; every other step
    # (and a conv whose operands are not as bound, or hold a NaN/Inf) calls the same step
    # function as the loop, which raises with the node's name. A conv whose output feeds a
    # stride-1 conv writes it in that conv's packed input layout (_pack_outputs).
    def _build_native(self, steps, backend, threads):
        slots: dict[str, int] = {}
        for name in (*self.graph.constants, *(s["name"] for s in self.graph.inputs)):
            slots.setdefault(name, len(slots))
        for _, _, inputs, output, _ in steps:
            for t in (*inputs, output):
                if t:
                    slots.setdefault(t, len(slots))
        rows = []
        for node, fn, inputs, output, dead in steps:
            conv = None
            if node.op in ("SparseConv", FUSED_CONV_ADD):
                impl = self.conv_impl(node.attrs["layer"], backend, threads)
                x_shape, out_shape, bound = impl.bound
                call = getattr(bound, "call", None)
                relu, lo, hi = _conv_act(node.attrs, node.attrs.get("act", "none"))
                if (isinstance(call, _SpconvCall) and lo is None and hi is None
                        and len(inputs) == (2 if node.op == FUSED_CONV_ADD else 1)
                        and all(inputs)):
                    conv = (call, x_shape, out_shape, relu)
            rows.append((_located(node, fn), [slots[t] if t else -1 for t in inputs],
                         slots[output], [slots[t] for t in dead], conv))
        self._pack_outputs(steps, rows, {slots[o] for o in self.graph.outputs})
        return slots, _StepRunner(rows), [node.name for node, *_ in steps]

    @staticmethod
    def _pack_outputs(steps, rows, output_slots) -> None:
        """Let each native conv write its output straight into the packed input layout of
        a stride-1 native conv that reads it as x (``SpconvCall.pack_output_for``): that
        conv then skips packing its input (zeros around the data, a row pitch of its own).
        Every other reader gets a strided NumPy view of the same numbers. Not for graph
        outputs (the user gets contiguous arrays), nor when a Python step may overwrite the
        tensor in place (the producer's NaN/Inf flag would go stale)."""
        readers: dict[int, list[tuple[int, int]]] = {}
        for j, (_, ins, _, _, _) in enumerate(rows):
            for k, t in enumerate(ins):
                if t >= 0:
                    readers.setdefault(t, []).append((j, k))
        for _, _, out, _, conv in rows:
            if conv is None or out in output_slots:
                continue
            rs = readers.get(out, [])
            if any(k == 0 and rows[j][4] is None and steps[j][0].op in INPLACE_OPS
                   for j, k in rs):
                continue
            for j, k in rs:
                if k == 0 and rows[j][4] is not None and conv[0].pack_output_for(rows[j][4][0]):
                    break

    def _run_native(self, native, env, timings: dict | None = None):
        slots, runner, names = native
        values = [None] * len(slots)
        for name, v in env.items():
            if name in slots:
                values[slots[name]] = v
        if timings is None:
            runner.run(values)
        else:
            seconds: list[float] = []
            runner.run(values, seconds)
            for name, sec in zip(names, seconds):
                timings[name] = timings.get(name, 0.0) + sec
        outs = tuple(values[slots[o]] for o in self.graph.outputs)
        return outs[0] if len(outs) == 1 else outs

    # ---- compiled steps: each node bound once per (backend, threads) to a function of its
    # inputs, so a call does no per-node lookups (ResNet-56 runs 65 nodes in ~1 ms)
    def _compiled(self, backend, threads) -> list:
        if not isinstance(backend, str):
            raise UnsupportedError(f"must be a backend or kernel name, got {backend!r}",
                                   field="backend")
        key = (backend, threads, self.fuse_epilogues)
        steps = self._steps.get(key)
        if steps is None:
            plan = (self._plan[1] if self._plan and self._plan[0] == self.fuse_epilogues
                    else self._build_plan())
            steps = []
            for node, dead, reuse in plan:
                try:
                    fn = self._step(node, backend, threads, reuse)
                except KepError as exc:
                    raise exc.located(layer=node.name) from None
                steps.append((node, fn, tuple(node.inputs), node.outputs[0], dead))
            self._steps[key] = steps
        return steps

    def _forget_impls(self) -> None:
        """Drop the bound kernels (after the per-layer choice changed, e.g. by tune)."""
        self._impls.clear()
        self._steps.clear()
        self._native.clear()

    def _step(self, node, backend, threads, reuse):
        """The node as a function of its inputs. The steps that call BLAS (the dense conv
        path, large matrix products) run it on one thread (kepsparse/blas.py: a threaded
        BLAS call leaves a worker spinning on the cores the sparse kernels use next)."""
        a = node.attrs
        if node.op in ("SparseConv", FUSED_CONV_ADD):
            impl = self.conv_impl(a["layer"], backend, threads)
            # (the dense path limits BLAS itself, kepsparse/blas.py)
            return (self._conv_step(a, impl, a.get("act", "none")) if node.op == "SparseConv"
                    else self._conv_add_step(a, impl))
        func = FUNCS[node.op]
        consts = self.graph.constants
        if node.op in ("Slice", "Pad") and all(not t or t in consts for t in node.inputs[1:]):
            bound = ops.bind_constant_operands(
                node.op, a, [None, *(consts[t] if t else None for t in node.inputs[1:])])
            return lambda xs, capture: bound(xs[0])
        if node.op == "MaxPool":  # the C++ loop splits output rows over threads
            return lambda xs, capture: func(a, xs, reuse, threads=threads)
        step = lambda xs, capture: func(a, xs, reuse)  # noqa: E731
        if node.op in ("Gemm", "MatMul"):  # BLAS on one thread (see kepsparse/blas.py)
            big = single_threaded(step)
            return lambda xs, capture: (
                step if ops.is_small_product(xs[0], xs[1]) else big)(xs, capture)
        return step

    @staticmethod
    def _conv_step(a, impl, act):
        layer = a["layer"]
        relu, lo, hi = _conv_act(a, act)

        def conv(xs, capture):
            x = xs[0]
            shape, _, bound = impl.bound
            if capture is None and _is_f32c(x) and x.shape == shape:
                y = bound(x, relu)  # fast path: this shape was validated and bound
            else:
                x = _f32c(x)
                if capture is not None:
                    capture[layer] = x
                y = impl(x, relu=relu)
            if lo is not None:
                np.maximum(y, lo, out=y)
            if hi is not None:
                np.minimum(y, hi, out=y)
            return y
        return conv

    @classmethod
    def _conv_add_step(cls, a, impl):
        """A fused Conv -> Add [-> Relu] (see ``fuse_residual_adds``): one kernel call when
        the other addend has exactly the conv output's shape, else the three ops in turn."""
        layer = a["layer"]
        relu = a["act"] == "relu"
        conv = cls._conv_step(a, impl, "none")

        def conv_add(xs, capture):
            x, r = xs
            shape, out_shape, bound = impl.bound
            if (capture is None and _is_f32c(x) and x.shape == shape and _is_f32c(r)
                    and r.shape == out_shape):
                return bound(x, relu, r)  # fast path (see conv)
            x = _f32c(x)
            if (_is_f32c(r) and x.ndim == 4 and r.shape == impl.output_shape(x.shape)):
                if capture is not None:
                    capture[layer] = x
                return impl(x, relu=relu, residual=r)
            y = conv([x], capture)
            # y is this node's own fresh array (may be overwritten); r is not. a + b == b + a
            # exactly, so the order of the original Add does not matter.
            y = FUNCS["Add"]({}, [y, r], True)
            return FUNCS["Relu"]({}, [y], True) if relu else y
        return conv_add

    def profile(self, *args, repeats: int = 5, backend: str = "auto", threads=None,
                **named) -> list[dict]:
        """Per-node time (best of ``repeats`` runs, ms), slowest first."""
        best: dict[str, float] = {}
        self(*args, backend=backend, threads=threads, **named)  # warm-up
        for _ in range(repeats):
            t: dict[str, float] = {}
            self(*args, backend=backend, threads=threads, timings=t, **named)
            for k, v in t.items():
                best[k] = min(best.get(k, np.inf), v)
        ops = {n.name: n.op for n in self.graph.nodes}
        return sorted(({"node": k, "op": ops[k], "ms": round(v * 1e3, 4)}
                       for k, v in best.items()), key=lambda r: -r["ms"])

    def summary(self) -> dict:
        s = super().summary()
        if self.graph is not None:
            s["graph"] = {"nodes": len(self.graph.nodes), "ops": self.graph.op_counts(),
                          "inputs": self.graph.inputs, "outputs": self.graph.outputs}
        return s


def _conv_act(a: dict, act: str):
    """(relu, lo, hi) of a conv node's activation: ReLU fused into the kernel, then the
    clip bounds left (None: no bound). A Clip with min 0 and no max is a ReLU."""
    relu = act == "relu" or (act == "clip" and a.get("clip_min", -np.inf) == 0.0)
    lo = a.get("clip_min") if act == "clip" else None
    hi = a.get("clip_max") if act == "clip" else None
    lo = None if lo is None or lo == 0.0 else np.float32(lo)
    hi = None if hi is None else np.float32(hi)
    return relu, lo, hi


def _node_error(node: Node, exc: Exception) -> Exception | None:
    """The error a step's exception becomes, naming its node (None: re-raise unchanged)."""
    if isinstance(exc, KepError):
        return exc.located(layer=node.name)
    if isinstance(exc, (ValueError, IndexError, TypeError)):
        return InputError(f"{node.op}: {exc}", layer=node.name)
    if isinstance(exc, MemoryError):  # sizes within the caps, but not this machine's
        return InputError(f"{node.op}: out of memory: {exc}", layer=node.name, field="memory")
    return None


def _located(node: Node, fn):
    """The step function ``fn`` raising as the Python loop does (``_node_error``)."""
    def step(xs, capture):
        try:
            return fn(xs, capture)
        except Exception as exc:  # noqa: BLE001 - mapped or re-raised unchanged
            err = _node_error(node, exc)
            if err is None:
                raise
            raise err from None
    return step


def _is_f32c(a) -> bool:
    return type(a) is np.ndarray and a.dtype == np.float32 and a.flags.c_contiguous


def _f32c(a) -> np.ndarray:
    """``a`` as a float32 C-contiguous array, without a call into NumPy when it is one."""
    return a if _is_f32c(a) else np.ascontiguousarray(a, dtype=np.float32)


FUSED_CONV_ADD = "SparseConv+Add"


def fuse_residual_adds(graph: Graph) -> list[Node]:
    """The graph's nodes with every ``SparseConv -> Add [-> Relu]`` chain (a ResNet block's
    last conv, its shortcut add and the block's ReLU) replaced by one FUSED_CONV_ADD node.

    Fused when the conv has no activation of its own, its output feeds only that Add (and
    is no graph output), and the Add has two distinct inputs; the Relu joins when it is the
    Add output's only consumer. The fused node takes the Add's place in the order (both of
    the Add's inputs exist there; the conv's input still does: liveness is computed on this
    list) and keeps the conv's name, so timings and captures stay per layer. The result is
    bit-identical: (conv + bias) + residual, then the ReLU, as the unfused ops compute it."""
    nodes = list(graph.nodes)
    use = graph.consumers()
    outputs = set(graph.outputs)
    producer = {o: n for n in nodes for o in n.outputs if o}
    replace: dict[int, Node] = {}  # id(Add node) -> fused node
    drop: set[int] = set()
    for add in nodes:
        if add.op != "Add" or len(add.inputs) != 2 or add.inputs[0] == add.inputs[1]:
            continue
        for k, t in enumerate(add.inputs):
            conv = producer.get(t)
            if (conv is None or conv.op != "SparseConv" or id(conv) in drop
                    or conv.attrs.get("act", "none") != "none" or t in outputs
                    or len(use.get(t, [])) != 1 or len(conv.outputs) != 1):
                continue
            other = add.inputs[1 - k]
            if not other or producer.get(other) is conv:
                continue
            out, act, relu_node = add.outputs[0], "none", None
            after = use.get(out, [])
            if (out not in outputs and len(after) == 1 and after[0].op == "Relu"
                    and len(after[0].inputs) == 1):
                relu_node = after[0]
                out, act = relu_node.outputs[0], "relu"
            attrs = dict(conv.attrs, act=act, add=add.name,
                         relu=relu_node.name if relu_node else None)
            replace[id(add)] = Node(conv.name, FUSED_CONV_ADD, [conv.inputs[0], other], [out],
                                    attrs)
            drop.add(id(conv))
            if relu_node is not None:
                drop.add(id(relu_node))
            break
    return [replace.get(id(n), n) for n in nodes if id(n) not in drop]


def _shape_str(shape) -> str:
    return "(" + ", ".join("N" if i == 0 else ("?" if d is None else str(d))
                           for i, d in enumerate(shape)) + ")"
