"""``kepsparse prune <filter method>``: the sub-commands added by register_filter_methods."""
from __future__ import annotations

import argparse
import json

import pytest

torch = pytest.importorskip("torch")

from kepsparse.errors import InputError  # noqa: E402
from kepsparse.prune.filters import METHODS, register_filter_methods  # noqa: E402


def _parser():
    p = argparse.ArgumentParser(prog="kepsparse prune")
    register_filter_methods(p.add_subparsers(dest="method", required=True))
    return p


def test_every_method_is_registered_with_its_knobs():
    p = _parser()
    for m in METHODS:
        a = p.parse_args([m, "--model", "digits", "--data", "digits", "-o", "x.pt"])
        assert a.method == m and a.flops_reduction == 0.5 and a.finetune == "paper"
    a = p.parse_args(["similarity", "--model", "m", "--data", "d", "-o", "x.pt", "--clusters",
                      "0.5", "--redundancy", "centre", "--finetune", "kd", "--t-start", "6"])
    assert a.opt_clusters == 0.5 and a.opt_redundancy == "centre" and a.t_start == 6.0
    a = p.parse_args(["l1", "--model", "m", "--data", "d", "-o", "x.pt", "--ratio",
                      "conv1=0.25,conv2=0.5"])
    assert a.ratio == {"conv1": 0.25, "conv2": 0.5}


def test_run_writes_checkpoint_and_report(tmp_path, capsys):
    out = tmp_path / "l1.pt"
    args = _parser().parse_args([
        "l1", "--model", "digits", "--data", "digits", "--train-epochs", "1", "--epochs", "1",
        "--flops-reduction", "0.4", "--finetune", "kd", "--threads", "1", "--no-progress",
        "-o", str(out), "--plot", str(tmp_path / "l1.png")])
    assert args.func(args) == 0
    rep = json.loads((tmp_path / "l1.json").read_text())
    assert rep["method"] == "l1" and rep["config"]["finetune"] == "kd"
    assert rep["flops"]["reduction"] >= 0.4 and rep["flops"]["before"] == 1196554
    assert set(rep["accuracy"]) >= {"dense", "after_removal", "after_finetune", "final"}
    assert rep["layers"]["conv2"]["channels_after"] < 32
    assert (tmp_path / "l1.png").stat().st_size > 0
    # the checkpoint is a plain state_dict of the slimmer network: kepsparse convert reads it
    from kepsparse import convert
    sparse = convert(out)
    assert sparse["conv2"].shape[0] == rep["layers"]["conv2"]["channels_after"]
    assert "channels kept: conv1" in capsys.readouterr().out


def test_bad_ratio_fails_before_training(tmp_path):
    args = _parser().parse_args([
        "fcs", "--model", "digits", "--data", "digits", "--train-epochs", "1", "--threads", "1",
        "--ratio", "conv2=1.0", "--no-progress", "-o", str(tmp_path / "x.pt")])
    with pytest.raises(InputError) as e:
        args.func(args)
    assert e.value.layer == "conv2" and e.value.field == "ratio"
    assert not (tmp_path / "x.pt").exists()
