"""Bad input gets one kepsparse error naming the layer and the field."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from kepsparse.errors import InputError, KepError, UnsupportedError  # noqa: E402
from kepsparse.prune.filters import filter_prune  # noqa: E402
from kepsparse.prune.filters import graph as G  # noqa: E402

from ._nets import planted_model, synthetic_loaders  # noqa: E402


def _groups(model, x):
    return G.find_groups(model, G.build_graph(model, x))


def test_a_ratio_that_removes_every_filter_names_the_layer():
    with pytest.raises(InputError) as e:
        filter_prune(planted_model(), synthetic_loaders(), "l1", ratio={"conv1": 0.99},
                     finetune_scheme="none")
    assert e.value.layer == "conv1" and e.value.field == "ratio"
    assert "would remove all 8 filters" in str(e.value)
    with pytest.raises(InputError, match="ratio 1.0 must be in"):
        filter_prune(planted_model(), synthetic_loaders(), "l1", ratio=1.0,
                     finetune_scheme="none")


def test_removing_every_channel_directly_is_refused():
    model = planted_model()
    x = torch.randn(1, 1, 8, 8)
    with pytest.raises(InputError) as e:
        G.remove_channels(model, x, {"conv2": list(range(6))})
    assert e.value.layer == "conv2" and e.value.field == "removal"
    with pytest.raises(InputError, match="out of range"):
        G.remove_channels(model, x, {"conv2": [6]})


def test_unreachable_or_invalid_flops_target():
    with pytest.raises(InputError) as e:
        filter_prune(planted_model(), synthetic_loaders(), "l1", flops_reduction=1.5)
    assert e.value.field == "flops_reduction"
    with pytest.raises(InputError, match="out of reach"):
        filter_prune(planted_model(), synthetic_loaders(), "l1", flops_reduction=0.95,
                     max_rate=0.3)


def test_zero_pad_shortcut_with_residual_pruning_is_refused_with_the_layer():
    """CIFAR ResNet-56's option-A shortcuts: the tracker would mis-align channels across stages."""
    from kepsparse.nets.resnet import resnet56
    model = resnet56()
    x = torch.zeros(1, 3, 8, 8)
    with pytest.raises(UnsupportedError) as e:
        G.find_groups(model, G.build_graph(model, x), residual="prune")
    assert e.value.field == "residual" and e.value.layer is not None
    assert "zero-pad" in str(e.value) and "residual='keep'" in str(e.value)


def test_a_model_the_tracker_cannot_trace():
    class Untraceable(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(1, 4, 3)

        def forward(self, x):  # leaves autograd: the dependency graph cannot be traced
            y = self.conv(x)
            return torch.from_numpy(y.detach().numpy()).flatten(1) @ torch.ones(144, 2)

    with pytest.raises(UnsupportedError) as e:
        filter_prune(Untraceable(), synthetic_loaders(classes=2), "l1", ratio=0.5,
                     finetune_scheme="none")
    assert e.value.field == "model" and e.value.layer == "conv"


def test_a_slicing_error_is_caught_by_the_equivalence_check():
    """If a removal is not what the masked model does (simulated: a wrong plan), verify says so."""
    model = planted_model()
    x = torch.randn(4, 1, 8, 8)
    import copy
    original = copy.deepcopy(model)
    G.remove_channels(model, x, {"conv1": [0, 1]})
    with pytest.raises(UnsupportedError, match="differs from the masked network"):
        G.verify_equivalence(original, model, {"conv1": [3, 4]}, x)


def test_unknown_names():
    loaders = synthetic_loaders()
    for kwargs, field in [({"finetune_scheme": "nope"}, "finetune"),
                          ({"allocation": "nope"}, "allocation"),
                          ({"residual": "nope"}, "residual"),
                          ({"exclude": ("convX",)}, "exclude"),
                          ({"verify": "nope"}, "verify")]:
        with pytest.raises(KepError) as e:
            filter_prune(planted_model(), loaders, "l1", **kwargs)
        assert e.value.field == field, kwargs
    with pytest.raises(InputError) as e:
        filter_prune(planted_model(), loaders, "l1", ratio={"convX": 0.5}, finetune_scheme="none")
    assert e.value.layer == "convX"
