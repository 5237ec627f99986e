"""Dependency-aware physical filter removal on top of Torch-Pruning's DependencyGraph.

Why Torch-Pruning (``torch_pruning``, DepGraph, Fang et al. CVPR 2023): removing output channel
``c`` of a conv must also remove channel ``c`` of the BatchNorm after it, input channel ``c`` of
every consumer (conv, linear - through flatten, where one channel is H*W features), and - when
the channel runs through residual adds - the same channel of every conv/BN tied by the adds.
DepGraph traces the autograd graph and returns exactly that *group* for any root layer; we use
it for the slicing and keep the *choice* of channels to our criteria (we compute a removal
order per layer and call ``group.prune()``; ``CriterionImportance`` in ``pipeline.py`` adapts a
criterion to Torch-Pruning's own ``Importance`` API for users of its MetaPruner).

Unit of pruning: a *group* = the output channels of one conv (``root``) plus everything the
tracker couples to them. Policies for residual networks (``residual=``):

- ``"keep"`` (default): only groups whose output channels belong to a single conv are pruned
  (in a basic block the inner conv); channels tied through residual adds are kept. This is the
  usual CIFAR ResNet-56 protocol and the only safe one for zero-pad (option-A) shortcuts.
- ``"prune"``: coupled groups are pruned too (a channel is removed from every conv/BN tied by
  the adds; its rank is the mean of its positions in the members' removal orders). A group that
  runs through a zero-pad (``F.pad``) raises ``UnsupportedError``: DepGraph treats the pad as an
  element-wise op and would tie channel c of the narrow stage to channel c of the wide stage,
  which is wrong by the pad offset - use ``"keep"`` or 1x1-conv (option-B) shortcuts.

A group whose channels reach the network output (a conv classifier) is never pruned.
After pruning, ``verify_equivalence`` checks the pruned network against the *masked* network
(removed channels zeroed in place: conv rows, biases, BN gamma/beta) - equal outputs prove the
slicing was consistent.
"""
from __future__ import annotations

import copy
import math
import warnings
from dataclasses import dataclass, field

import numpy as np

from ...errors import InputError, UnsupportedError
from .. import common

#: grad_fn names that change the channel layout but that DepGraph treats as element-wise.
_CHANNEL_BREAKING = ("ConstantPadNd", "ReflectionPad", "ReplicationPad", "PadBackward")


def _tp():
    try:
        import torch_pruning as tp
    except ImportError:
        raise UnsupportedError("filter pruning needs torch-pruning: pip install torch-pruning",
                               field="torch_pruning") from None
    return tp


@dataclass
class Group:
    """One prunable unit: the output channels of ``root`` and what is coupled to them."""
    root: str
    channels: int
    out_convs: list = field(default_factory=list)    # convs whose out channels are removed
    out_bns: list = field(default_factory=list)      # BNs whose channels are removed
    out_linears: list = field(default_factory=list)
    in_layers: list = field(default_factory=list)    # (name, channels_per_group_channel)
    prunable: bool = True
    reason: str = ""                                 # why not prunable
    breaking_ops: list = field(default_factory=list)

    @property
    def coupled(self) -> bool:
        return len(self.out_convs) > 1

    def to_json(self) -> dict:
        return {"root": self.root, "channels": self.channels, "out_convs": self.out_convs,
                "batchnorms": self.out_bns, "consumers": [n for n, _ in self.in_layers],
                "prunable": self.prunable, "reason": self.reason}


def build_graph(model, example):
    """Torch-Pruning's DependencyGraph of ``model`` traced with ``example`` (UnsupportedError if
    the trace fails)."""
    tp = _tp()
    was = model.training
    model.eval()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return tp.DependencyGraph().build_dependency(model, example_inputs=example)
    except Exception as exc:  # noqa: BLE001 - the tracer failed on this model: say which/why
        raise UnsupportedError(f"the dependency tracker (torch_pruning) cannot trace this model: "
                               f"{type(exc).__name__}: {exc}", field="model") from None
    finally:
        model.train(was)


def _is_out(dep) -> bool:
    return getattr(dep.handler, "__name__", "") == "prune_out_channels"


def _is_in(dep) -> bool:
    return getattr(dep.handler, "__name__", "") == "prune_in_channels"


def find_groups(model, DG, residual: str = "keep", exclude=()) -> list[Group]:
    """The model's conv output-channel groups (one per distinct group), in module order."""
    tp = _tp()
    torch = common._torch()
    nn = torch.nn
    if residual not in ("keep", "prune"):
        raise InputError(f"unknown residual policy {residual!r}; choose keep or prune",
                         field="residual")
    names = {id(m): n for n, m in model.named_modules()}
    convs = common.conv_layers(model)
    exclude = set(exclude or ())
    unknown = exclude - set(convs)
    if unknown:
        raise InputError(f"not a Conv2d of the model: {', '.join(sorted(unknown))}",
                         layer=sorted(unknown)[0], field="exclude")
    seen: set = set()
    groups: list[Group] = []
    for name, conv in convs.items():
        if name in seen:
            continue
        if conv not in DG.module2node:
            continue  # not used in forward
        g = Group(root=name, channels=int(conv.out_channels))
        if conv.groups != 1:
            g.prunable, g.reason = False, "grouped/depthwise conv (pruned with its producer)"
            groups.append(g)
            seen.add(name)
            continue
        grp = DG.get_pruning_group(conv, tp.prune_conv_out_channels,
                                   idxs=list(range(conv.out_channels)))
        for dep, idxs in grp:
            mod = dep.target.module
            mname = names.get(id(mod))
            if _is_out(dep):
                if isinstance(mod, nn.Conv2d):
                    g.out_convs.append(mname)
                elif isinstance(mod, nn.modules.batchnorm._BatchNorm):
                    g.out_bns.append(mname)
                elif isinstance(mod, nn.Linear):
                    g.out_linears.append(mname)
                elif type(mod).__name__ == "_OutputOp":
                    g.prunable, g.reason = False, "its channels are the network's output"
                else:
                    r = repr(mod)
                    if any(b in r for b in _CHANNEL_BREAKING):
                        g.breaking_ops.append(r)
            elif _is_in(dep) and isinstance(mod, (nn.Conv2d, nn.Linear)):
                per = max(1, len(idxs) // max(1, conv.out_channels))
                g.in_layers.append((mname, per))
        g.out_convs = list(dict.fromkeys(g.out_convs))
        g.out_bns = list(dict.fromkeys(g.out_bns))
        seen.update(g.out_convs)
        seen.add(name)
        if g.out_linears:
            g.prunable, g.reason = False, "coupled to a Linear layer's outputs"
        if g.prunable and exclude & set(g.out_convs):
            g.prunable, g.reason = False, "excluded"
        if g.prunable and g.coupled:
            if residual == "keep":
                g.prunable = False
                g.reason = ("residual channels kept (tied through adds: "
                            + ", ".join(g.out_convs) + ")")
            elif g.breaking_ops:
                raise UnsupportedError(
                    "its output channels are tied through a zero-pad (option-A) shortcut "
                    f"({g.breaking_ops[0]}) that the dependency tracker treats as element-wise, "
                    "so channel indices would be mis-aligned across stages; use residual='keep' "
                    "(prune only the inner convs of each block) or 1x1-conv (option-B) shortcuts",
                    layer=name, field="residual")
        groups.append(g)
    return groups


def check_traced(model, DG, costs: dict) -> None:
    """UnsupportedError naming the first conv that runs in forward but that the tracker did not
    see (its output leaves autograd - ``.numpy()``, ``.detach()``, ``torch.no_grad`` in forward)."""
    mods = dict(model.named_modules())
    for name in costs:
        m = mods[name]
        if m not in DG.module2node:
            raise UnsupportedError("the dependency tracker (torch_pruning) does not see this "
                                   "layer: its output leaves autograd in forward (detach, numpy, "
                                   "no_grad), so its consumers cannot be found", layer=name,
                                   field="model")


# ----------------------------------------------------------------------------- FLOPs estimates

def layer_costs(model, example) -> dict:
    """name -> (macs per sample, bias adds per sample) of each Conv2d/Linear used in forward."""
    torch = common._torch()
    out_shapes = {}
    layers = common.weight_layers(model)
    hooks = [m.register_forward_hook(lambda mod, i, o, n=n: out_shapes.__setitem__(n, o.shape))
             for n, m in layers.items()]
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(example[:1])
    finally:
        for h in hooks:
            h.remove()
        model.train(was)
    costs = {}
    for n, m in layers.items():
        if n not in out_shapes:
            continue
        s = out_shapes[n]
        if isinstance(m, torch.nn.Conv2d):
            pix = int(s[-1] * s[-2])
            costs[n] = (m.weight.numel() * pix, (m.out_channels * pix) if m.bias is not None else 0)
        else:
            rows = int(np.prod(s[1:-1])) if len(s) > 2 else 1
            costs[n] = (m.weight.numel() * rows, rows * m.out_features if m.bias is not None else 0)
    return costs


def estimate_flops(costs: dict, groups: list[Group], removed: dict) -> float:
    """FLOPs (MACs + bias adds) after removing ``removed[root]`` channels of each group."""
    out_frac = {}
    in_frac = {}
    for g in groups:
        n = removed.get(g.root, 0)
        if not n:
            continue
        f = (g.channels - n) / g.channels
        for c in g.out_convs:
            out_frac[c] = f
        for c, _ in g.in_layers:
            in_frac[c] = in_frac.get(c, 1.0) * f
    total = 0.0
    for name, (macs, bias) in costs.items():
        fo = out_frac.get(name, 1.0)
        total += macs * fo * in_frac.get(name, 1.0) + bias * fo
    return total


def allocate(groups: list[Group], costs: dict, *, flops_reduction=None, ratio=None,
             weights: dict | None = None, max_rate: float = 0.9, min_keep: int = 1) -> dict:
    """Channels to remove per prunable group: ``{root: n}``.

    ``ratio``: a rate for every prunable group, or ``{layer: rate}`` (InputError naming the layer
    when a rate would remove every filter). ``flops_reduction``: the global FLOPs target; per
    group rate = min(max_rate, s * weights[root]) (``weights`` default 1: uniform; the similarity
    method passes its Kernel-Dispersion weights), ``s`` found by bisection.
    """
    prunable = [g for g in groups if g.prunable]
    by_root = {g.root: g for g in groups}
    if ratio is not None:
        rates = ratio if isinstance(ratio, dict) else {g.root: ratio for g in prunable}
        out = {}
        for layer, r in rates.items():
            if layer not in by_root:
                raise InputError("not a Conv2d of the model (or not a group root)", layer=layer,
                                 field="ratio")
            g = by_root[layer]
            try:
                r = float(r)
            except (TypeError, ValueError):
                raise InputError(f"not a number: {r!r}", layer=layer, field="ratio") from None
            if not 0.0 <= r < 1.0 or not math.isfinite(r):
                raise InputError(f"ratio {r} must be in [0, 1)", layer=layer, field="ratio")
            if not g.prunable and r > 0:
                raise InputError(f"cannot prune this layer: {g.reason}", layer=layer, field="ratio")
            n = int(round(r * g.channels))
            if n >= g.channels:
                raise InputError(f"ratio {r} would remove all {g.channels} filters of the layer "
                                 "(at least one must stay)", layer=layer, field="ratio")
            out[layer] = n
        return out
    if flops_reduction is None:
        raise InputError("give flops_reduction or ratio", field="flops_reduction")
    try:
        target = float(flops_reduction)
    except (TypeError, ValueError):
        raise InputError(f"not a number: {flops_reduction!r}", field="flops_reduction") from None
    if not 0.0 < target < 1.0:
        raise InputError(f"must be in (0, 1), got {target}", field="flops_reduction")
    if not prunable:
        raise InputError("the model has no prunable conv group (see the residual policy)",
                         field="flops_reduction")
    if not 0 < max_rate < 1:
        raise InputError(f"must be in (0, 1), got {max_rate}", field="max_rate")
    weights = weights or {}
    w = {g.root: float(weights.get(g.root, 1.0)) for g in prunable}
    dense = estimate_flops(costs, groups, {})
    goal = (1.0 - target) * dense

    def counts(s):
        out = {}
        for g in prunable:
            r = min(max_rate, s * w[g.root])
            out[g.root] = min(int(math.floor(r * g.channels + 1e-9)), g.channels - min_keep)
        return out

    hi = max_rate / min(w.values()) if min(w.values()) > 0 else 1e6
    best = counts(hi)
    reach = estimate_flops(costs, groups, best)
    if reach > goal:
        raise InputError(f"a {target:.0%} FLOPs reduction is out of reach: pruning every prunable "
                         f"group to max_rate={max_rate} removes {1 - reach / dense:.1%} (raise "
                         "max_rate, use residual='prune', or lower the target)",
                         field="flops_reduction")
    lo = 0.0
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if estimate_flops(costs, groups, counts(mid)) <= goal:
            hi = mid
        else:
            lo = mid
    return counts(hi)


# ----------------------------------------------------------------------------- pruning

def _group_items(model, DG, root: str, idxs) -> list:
    tp = _tp()
    conv = dict(model.named_modules())[root]
    return DG.get_pruning_group(conv, tp.prune_conv_out_channels, idxs=list(map(int, idxs)))


def zeroing_plan(model, DG, removal: dict) -> dict:
    """{module name: output-channel indices to zero} that mimics removing ``removal``."""
    torch = common._torch()
    nn = torch.nn
    names = {id(m): n for n, m in model.named_modules()}
    plan: dict = {}
    for root, idxs in removal.items():
        if len(idxs) == 0:
            continue
        for dep, ix in _group_items(model, DG, root, idxs):
            mod = dep.target.module
            if _is_out(dep) and isinstance(mod, (nn.Conv2d, nn.Linear,
                                                 nn.modules.batchnorm._BatchNorm)):
                plan.setdefault(names[id(mod)], set()).update(int(i) for i in ix)
    return {k: sorted(v) for k, v in plan.items()}


def apply_zeroing(model, plan: dict) -> None:
    """Zero the given output channels in place (weights, bias; BN gamma and beta)."""
    torch = common._torch()
    mods = dict(model.named_modules())
    with torch.no_grad():
        for name, idxs in plan.items():
            m = mods[name]
            ix = torch.as_tensor(idxs, dtype=torch.long)
            if m.weight is not None:
                m.weight[ix] = 0
            if getattr(m, "bias", None) is not None:
                m.bias[ix] = 0


def remove_channels(model, example, removal: dict, DG=None):
    """Physically remove ``removal[root]`` (output-channel indices of each group root) from
    ``model`` in place with Torch-Pruning; returns the zeroing plan of the same removal (for
    ``verify_equivalence``). UnsupportedError / InputError name the offending layer."""
    DG = DG if DG is not None else build_graph(model, example)
    mods = dict(model.named_modules())
    for root, idxs in removal.items():
        if root not in mods:
            raise InputError("no such layer in the model", layer=root, field="removal")
        n_out = mods[root].out_channels
        bad = [i for i in idxs if not 0 <= int(i) < n_out]
        if bad:
            raise InputError(f"channel index {bad[0]} out of range [0, {n_out})", layer=root,
                             field="removal")
        if len(set(map(int, idxs))) >= n_out:
            raise InputError(f"would remove all {n_out} filters of the layer", layer=root,
                             field="removal")
    plan = zeroing_plan(model, DG, removal)
    for root, idxs in removal.items():
        if len(idxs) == 0:
            continue
        grp = _group_items(model, DG, root, sorted(set(map(int, idxs))))
        if not DG.check_pruning_group(grp):
            raise InputError("the removal would leave a coupled layer with no channel",
                             layer=root, field="removal")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            grp.prune()
    return plan


def verify_equivalence(original, pruned, plan: dict, example, atol: float = 1e-4,
                       rtol: float = 1e-4) -> float:
    """Max |pruned(x) - masked(x)|; UnsupportedError if shapes or values disagree."""
    torch = common._torch()
    masked = copy.deepcopy(original)
    apply_zeroing(masked, plan)
    masked.eval()
    was = pruned.training
    pruned.eval()
    try:
        with torch.no_grad():
            a = masked(example)
            b = pruned(example)
    except Exception as exc:  # noqa: BLE001
        raise UnsupportedError(f"the pruned network no longer runs: {type(exc).__name__}: {exc}",
                               field="model") from None
    finally:
        pruned.train(was)
    if tuple(a.shape) != tuple(b.shape):
        raise UnsupportedError(f"pruning changed the output shape {tuple(a.shape)} -> "
                               f"{tuple(b.shape)}", field="model")
    diff = float((a - b).abs().max())
    scale = float(a.abs().max()) + 1e-12
    if diff > atol + rtol * scale:
        raise UnsupportedError(f"the pruned network differs from the masked network by {diff:.3g}: "
                               "the dependency tracker mis-sliced a coupled layer (pass "
                               "verify='shape' if a layer maps zero to non-zero on purpose)",
                               field="model")
    return diff


def channel_counts(model) -> dict:
    return {n: int(m.out_channels) for n, m in common.conv_layers(model).items()}


def resize_to_state(model, state: dict) -> None:
    """Resize the Conv2d/BatchNorm/Linear modules of a freshly built ``model`` to the shapes of a
    pruned ``state`` dict (in place), so ``load_state_dict`` accepts it."""
    torch = common._torch()
    nn = torch.nn
    for name, m in model.named_modules():
        key = f"{name}.weight" if name else "weight"
        if key not in state:
            continue
        w = state[key]
        if isinstance(m, nn.Conv2d):
            if w.dim() != 4:
                raise InputError(f"expected a 4-D conv weight, got shape {tuple(w.shape)}",
                                 layer=name, field="weight")
            m.out_channels = int(w.shape[0])
            m.in_channels = int(w.shape[1]) * m.groups
            m.weight = nn.Parameter(torch.empty_like(w))
            if m.bias is not None:
                m.bias = nn.Parameter(torch.empty(w.shape[0], dtype=w.dtype))
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            c = int(w.shape[0])
            m.num_features = c
            m.weight = nn.Parameter(torch.empty(c, dtype=w.dtype))
            m.bias = nn.Parameter(torch.empty(c, dtype=w.dtype))
            m.running_mean = torch.zeros(c)
            m.running_var = torch.ones(c)
        elif isinstance(m, nn.Linear):
            m.out_features, m.in_features = int(w.shape[0]), int(w.shape[1])
            m.weight = nn.Parameter(torch.empty_like(w))
            if m.bias is not None:
                m.bias = nn.Parameter(torch.empty(w.shape[0], dtype=w.dtype))
