"""One forward pass with forward hooks: how FLOPs are counted and activations are captured."""
from __future__ import annotations


def traced_forward(model, x, hooks: dict):
    """Run ``model(x)`` once in eval mode without gradients, with ``hooks`` ({module:
    forward-hook}) registered; the hooks are removed and the train/eval mode restored
    whatever happens. Returns the model's output."""
    import torch
    handles = [m.register_forward_hook(fn) for m, fn in hooks.items()]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return model(x)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
