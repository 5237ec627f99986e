"""FLOPs / parameter counter with the literature's conventions (see METHODS.md).

"FLOPs" = multiply-accumulates of Conv2d and Linear layers, plus one add per output for a
layer with a bias (conv-bias adds included); BatchNorm, activations, pooling and residual adds
are not counted. A module called twice in one forward counts twice; a Linear applied to
(1, ..., F) inputs counts once per row. Params = every parameter of the module (BatchNorm's
affine included, running statistics not). Sparse counts (``nonzero=True``) count only the
non-zero weights and parameters - after a hard prune (exact zeros outside the masks) that is
the literature's "params/FLOPs after pruning". This is kepsparse's one counter (the pruning
methods' reports use it too).

    >>> count(resnet56(), (3, 32, 32))   # {'params': 853018, 'flops': 125485706, ...}
"""
from __future__ import annotations

from .tracing import traced_forward


def count(model, input_shape, nonzero: bool = False) -> dict:
    """{'params', 'flops', 'conv_flops', 'linear_flops', 'layers': [...], 'flops_per_layer':
    {name: flops summed over its calls}} for one image. ``input_shape``: (C, H, W) (a zero
    input of the model's parameter dtype) or an example tensor whose first sample is used.
    ``nonzero``: count only non-zero weights (pruned nets)."""
    import math

    import torch
    import torch.nn as nn

    rows = []

    def weight_count(m):
        w = m.weight.detach()
        return int((w != 0).sum()) if nonzero else w.numel()

    def conv_hook(m, inp, out):
        per_out = weight_count(m) / m.out_channels  # MACs per output element
        n = out.shape[2] * out.shape[3]
        macs = int(round(per_out * m.out_channels * n))
        bias = out.shape[1] * n if m.bias is not None else 0
        rows.append({"name": names[m], "kind": "conv", "flops": macs + bias})

    def linear_hook(m, inp, out):
        n = math.prod(out.shape[1:-1])  # rows: 1 for (1, F); T for (1, T, F)
        bias = m.out_features if m.bias is not None else 0
        rows.append({"name": names[m], "kind": "linear", "flops": n * (weight_count(m) + bias)})

    if isinstance(input_shape, torch.Tensor):
        x = input_shape[:1]
    else:
        p = next(model.parameters(), None)
        dtype = p.dtype if p is not None and p.is_floating_point() else torch.float32
        device = p.device if p is not None else None
        x = torch.zeros((1, *input_shape), dtype=dtype, device=device)
    names = {m: n for n, m in model.named_modules()}
    traced_forward(model, x, {m: conv_hook if isinstance(m, nn.Conv2d) else linear_hook
                              for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))})
    if nonzero:
        params = sum(int((p != 0).sum()) for p in model.parameters())
    else:
        params = sum(p.numel() for p in model.parameters())
    conv = sum(r["flops"] for r in rows if r["kind"] == "conv")
    linear = sum(r["flops"] for r in rows if r["kind"] == "linear")
    per_layer: dict = {}
    for r in rows:
        per_layer[r["name"]] = per_layer.get(r["name"], 0) + r["flops"]
    return {"params": params, "flops": conv + linear, "conv_flops": conv,
            "linear_flops": linear, "layers": rows, "flops_per_layer": per_layer}


def human(n: float) -> str:
    for unit, div in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.2f} {unit}"
    return str(n)
