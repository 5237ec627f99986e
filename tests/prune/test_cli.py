"""``kepsparse prune kep``: end to end on a user module, and one-line errors for bad input."""
from __future__ import annotations

import json
import textwrap

import pytest

torch = pytest.importorskip("torch")

import kepsparse  # noqa: E402
from kepsparse.cli import main  # noqa: E402

USER_MODULE = textwrap.dedent('''
    import torch
    from torch import nn

    def factory():
        return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(),
                             nn.Conv2d(4, 8, 3, padding=1), nn.ReLU(),
                             nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                             nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 2))

    def loader():
        g = torch.Generator().manual_seed(0)
        x = torch.randn(64, 1, 6, 6, generator=g)
        y = (x.mean(dim=(1, 2, 3)) > 0).long()
        ds = torch.utils.data.TensorDataset(x, y)
        return (torch.utils.data.DataLoader(ds, batch_size=16, shuffle=True, generator=g),
                torch.utils.data.DataLoader(ds, batch_size=64))

    def no_conv():
        return nn.Sequential(nn.Flatten(), nn.Linear(36, 2))
''')


@pytest.fixture
def user_module(tmp_path):
    path = tmp_path / "user.py"
    path.write_text(USER_MODULE)
    return path


def test_prune_kep_end_to_end(tmp_path, user_module, capsys):
    out = tmp_path / "out" / "pruned.pt"
    plot = tmp_path / "curves.png"
    rc = main(["prune", "kep", "--model", f"{user_module}:factory", "--data",
               f"{user_module}:loader", "--sparsity", "0.7", "--patterns", "3",
               "--train-epochs", "2", "--penalty-epochs", "1", "--epochs", "1",
               "--no-progress", "--threads", "1", "-o", str(out), "--plot", str(plot),
               "--prune-masks"])
    assert rc == 0, capsys.readouterr().err
    assert out.is_file() and plot.stat().st_size > 1000
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["conv_sparsity"]["model"] >= 0.7
    assert report["excluded_layers"] == ["0"]
    assert "weights" in report["source"]
    check = report["sparse_check"]
    assert set(check["layers"]) == {"0", "2", "4"}
    assert check["max_abs_err"] <= 1e-4 * max(1.0, max(r["max_abs_out"] for r in check["layers"].values()))
    state = torch.load(out, weights_only=True)
    assert "2.weight_orig" in state and "2.weight_mask" in state and "0.weight" in state
    model = kepsparse.convert(out, format="pattern")
    assert model["2"].weight.n_patterns - 1 <= 3
    assert "wrote" in capsys.readouterr().out
    # the prune-style checkpoint loads back into the model (weight = weight_orig * weight_mask)
    import importlib.util
    from kepsparse.prune.common import load_checkpoint
    spec = importlib.util.spec_from_file_location("user_mod", user_module)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    net = mod.factory()
    load_checkpoint(net, out)
    assert torch.equal(net[2].weight == 0, state["2.weight_mask"] == 0)


def _error(capsys, argv):
    rc = main(argv)
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert err.startswith("kepsparse: error:") and "\n" not in err and "Traceback" not in err
    return err


def test_impossible_sparsity_one_line_error(tmp_path, capsys):
    for bad in ("1.0", "-0.2"):
        err = _error(capsys, ["prune", "kep", "--model", "digits", "--data", "digits",
                              "--sparsity", bad, "-o", str(tmp_path / "x.pt")])
        assert "'sparsity'" in err and "[0, 1)" in err


def test_checkpoint_not_matching_the_model(tmp_path, capsys):
    from kepsparse.nets.digits import DigitsCNN
    ckpt = tmp_path / "small.pt"
    torch.save(DigitsCNN(widths=(8, 16, 32)).state_dict(), ckpt)
    err = _error(capsys, ["prune", "kep", "--model", "digits", "--data", "digits",
                          "--checkpoint", str(ckpt), "-o", str(tmp_path / "x.pt")])
    assert "small.pt" in err and "'conv1.weight'" in err and "(8, 1, 3, 3)" in err
    sd = DigitsCNN().state_dict()
    del sd["fc.bias"]
    sd["extra"] = torch.zeros(1)
    torch.save(sd, ckpt)
    err = _error(capsys, ["prune", "kep", "--model", "digits", "--data", "digits",
                          "--checkpoint", str(ckpt), "-o", str(tmp_path / "x.pt")])
    assert "missing 1 key(s): fc.bias" in err and "unexpected 1 key(s): extra" in err
    err = _error(capsys, ["prune", "kep", "--model", "digits", "--data", "digits",
                          "--checkpoint", str(tmp_path / "nope.pt"), "-o", str(tmp_path / "x.pt")])
    assert "nope.pt" in err and "no such" in err


def test_no_prunable_conv_and_bad_specs(tmp_path, user_module, capsys):
    err = _error(capsys, ["prune", "kep", "--model", f"{user_module}:no_conv", "--data",
                          f"{user_module}:loader", "--train-epochs", "1", "--no-progress",
                          "-o", str(tmp_path / "x.pt")])
    assert "no torch.nn.Conv2d" in err
    err = _error(capsys, ["prune", "kep", "--model", "resnet9000", "--data", "digits",
                          "-o", str(tmp_path / "x.pt")])
    assert "'model'" in err and "resnet9000" in err and "digits" in err
    err = _error(capsys, ["prune", "kep", "--model", f"{user_module}:missing", "--data",
                          "digits", "-o", str(tmp_path / "x.pt")])
    assert "no callable 'missing'" in err
    err = _error(capsys, ["prune", "kep", "--model", "digits", "--data", "digits",
                          "--exclude", "conv9", "--checkpoint", str(_digits_ckpt(tmp_path)),
                          "--penalty-epochs", "0", "--epochs", "0", "-o", str(tmp_path / "x.pt")])
    assert "'exclude'" in err and "conv9" in err


def _digits_ckpt(tmp_path):
    from kepsparse.nets.digits import DigitsCNN
    path = tmp_path / "digits.pt"
    torch.save(DigitsCNN().state_dict(), path)
    return path


def test_prune_command_lists_kep_and_plugged_methods():
    from kepsparse.cli import build_parser
    from kepsparse.prune.cli import method_modules
    assert method_modules()[0] == "kepsparse.prune.kep_cli"
    args = build_parser().parse_args(["prune", "kep", "--model", "digits", "--data", "digits",
                                      "-o", "x.pt", "--scope", "filter", "--global",
                                      "--exclude", "none"])
    assert args.method == "kep" and args.scope == "filter" and args.global_target
    assert args.sparsity == 0.8 and args.patterns == 8 and callable(args.func)
