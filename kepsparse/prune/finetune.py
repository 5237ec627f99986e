"""Fine-tuning schemes for pruned networks, selectable for any pruning method.

- ``"kd"``: knowledge distillation with a *variable temperature* (the similarity-based
  method's scheme, Li et al. 2024, doi:10.1016/j.ins.2024.121418 - reconstruction):
  L = (1 - alpha) * CE(z_s, y) + alpha * T(t)^2 * KL(softmax(z_t / T(t)) || softmax(z_s / T(t))),
  teacher = the unpruned model (frozen, eval mode); T(t) goes from ``t_start`` to ``t_end``
  over training on a ``t_schedule`` (cosine, linear, step - halves at each third - or
  constant).
- ``"mutual"``: deep mutual learning (Zhang et al. CVPR 2018; FCS-MLFT's scheme, Yang & Xiao
  2022, doi:10.1007/s10489-022-03403-9 - reconstruction): the student and a peer train
  together, each on CE + ``mutual_weight`` * KL(p_peer || p_self), the peer's prediction
  detached (``kl_div(log_softmax(z_self), softmax(z_peer).detach(), "batchmean")``).
  ``peer="dense"``: a copy of the unpruned model (which keeps learning); ``"pruned"``: a copy
  of the pruned student trained on its own data order.
- ``"plain"``: CE only. ``"none"``: no fine-tuning.

All schemes: optimizer ``sgd``/``adam`` with a cosine learning-rate decay over the run; an
optional ``masks`` dict (layer -> 0/1 array) keeps KEP-pruned elements exactly zero.

    history = finetune(pruned, loaders, "kd", teacher=dense, epochs=10)
"""
from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass

from ..errors import InputError
from . import common

SCHEMES = ("kd", "mutual", "plain", "none")


@dataclass
class FinetuneConfig:
    epochs: int = 10
    lr: float = 1e-3
    optimizer: str = "adam"         # adam | sgd
    weight_decay: float = 0.0
    momentum: float = 0.9
    alpha: float = 0.5              # kd: weight of the distillation term
    t_start: float = 8.0            # kd: temperature at the start ...
    t_end: float = 2.0              # ... and at the end
    t_schedule: str = "cosine"      # cosine | linear | step | constant
    peer: str = "dense"             # mutual: dense | pruned
    mutual_weight: float = 1.0      # mutual: weight of the KL term
    peer_lr: float | None = None    # mutual: the peer's learning rate (default: lr)
    max_steps: int | None = None    # stop after this many optimizer steps (smoke runs)
    seed: int = 0

    def check(self) -> "FinetuneConfig":
        if int(self.epochs) < 0:
            raise InputError(f"must be >= 0, got {self.epochs}", field="epochs")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise InputError(f"must be > 0, got {self.lr}", field="lr")
        if not 0.0 <= self.alpha <= 1.0:
            raise InputError(f"must be in [0, 1], got {self.alpha}", field="alpha")
        if self.t_start <= 0 or self.t_end <= 0:
            raise InputError(f"temperatures must be > 0, got {self.t_start} -> {self.t_end}",
                             field="t_start")
        if self.t_schedule not in ("cosine", "linear", "step", "constant"):
            raise InputError(f"unknown schedule {self.t_schedule!r}; choose cosine, linear, step "
                             "or constant", field="t_schedule")
        if self.peer not in ("dense", "pruned"):
            raise InputError(f"unknown peer {self.peer!r}; choose dense or pruned", field="peer")
        return self


def temperature(step: int, total: int, cfg: FinetuneConfig) -> float:
    """T(t) of the KD schedule at optimizer step ``step`` of ``total``."""
    a, b = float(cfg.t_start), float(cfg.t_end)
    f = min(1.0, step / max(1, total - 1))
    if cfg.t_schedule == "constant":
        return a
    if cfg.t_schedule == "linear":
        return a + (b - a) * f
    if cfg.t_schedule == "step":
        return a + (b - a) * min(1.0, math.floor(f * 3) / 2)
    return b + 0.5 * (a - b) * (1 + math.cos(math.pi * f))


def kd_loss(z_s, z_t, y, T: float, alpha: float):
    torch = common._torch()
    F = torch.nn.functional
    ce = F.cross_entropy(z_s, y)
    kl = F.kl_div(F.log_softmax(z_s / T, 1), F.softmax(z_t / T, 1), reduction="batchmean")
    return (1 - alpha) * ce + alpha * T * T * kl


def mutual_loss(z_self, z_peer, y, weight: float):
    torch = common._torch()
    F = torch.nn.functional
    return F.cross_entropy(z_self, y) + weight * F.kl_div(
        F.log_softmax(z_self, 1), F.softmax(z_peer.detach(), 1), reduction="batchmean")


def finetune(student, loaders, scheme: str = "kd", teacher=None, masks: dict | None = None,
             config: FinetuneConfig | None = None, progress: bool = False, **options) -> list:
    """Fine-tune ``student`` in place; returns the per-epoch history (loss, temperature,
    test accuracy when ``loaders`` has a test loader). ``teacher``: the unpruned model (needed by
    ``kd`` and by ``mutual`` with ``peer="dense"``; never modified). ``options``: any
    ``FinetuneConfig`` field."""
    torch = common._torch()
    if scheme not in SCHEMES:
        raise InputError(f"unknown fine-tuning scheme {scheme!r}; choose from "
                         f"{', '.join(SCHEMES)}", field="finetune")
    if config is None:
        bad = set(options) - set(FinetuneConfig.__dataclass_fields__)
        if bad:
            raise InputError(f"unknown fine-tuning option(s): {', '.join(sorted(bad))}",
                             field=sorted(bad)[0])
        config = FinetuneConfig(**options)
    cfg = config.check()
    if isinstance(loaders, (dict, tuple, list)):
        loaders = common.as_loaders(loaders)
    else:  # a bare training DataLoader
        loaders = {"train": loaders, "test": None}
    train, test = loaders["train"], loaders.get("test")
    history: list = []
    if scheme == "none" or int(cfg.epochs) == 0:
        return history
    if scheme == "kd" or (scheme == "mutual" and cfg.peer == "dense"):
        if teacher is None:
            raise InputError(f"the {scheme!r} scheme needs the unpruned model as teacher/peer",
                             field="teacher")
    torch.manual_seed(cfg.seed)
    steps_per_epoch = len(train)
    total = int(cfg.epochs) * steps_per_epoch
    if cfg.max_steps is not None:
        total = min(total, int(cfg.max_steps))
    opt = common.make_optimizer(student.parameters(), cfg.optimizer, cfg.lr, cfg.momentum,
                                cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / max(1, total))))
    guard = common.MaskGuard(student, masks) if masks else None
    peer = peer_opt = peer_sched = None
    if scheme == "kd":
        teacher = copy.deepcopy(teacher).eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
    elif scheme == "mutual":
        peer = copy.deepcopy(teacher if cfg.peer == "dense" else student).train()
        for p in peer.parameters():
            p.requires_grad_(True)
        peer_opt = common.make_optimizer(peer.parameters(), cfg.optimizer, cfg.peer_lr or cfg.lr,
                                         cfg.momentum, cfg.weight_decay)
        peer_sched = torch.optim.lr_scheduler.LambdaLR(
            peer_opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / max(1, total))))
    bar = common.progress_bar(int(cfg.epochs), f"fine-tune ({scheme})", progress)
    step = 0
    try:
        for epoch in range(int(cfg.epochs)):
            student.train()
            run_loss = 0.0
            n = 0
            T = None
            for batch in train:
                if step >= total:
                    break
                x, y = batch[0], batch[1]
                z = student(x)
                if scheme == "plain":
                    loss = torch.nn.functional.cross_entropy(z, y)
                elif scheme == "kd":
                    T = temperature(step, total, cfg)
                    with torch.no_grad():
                        zt = teacher(x)
                    loss = kd_loss(z, zt, y, T, cfg.alpha)
                else:
                    zp = peer(x)
                    loss = mutual_loss(z, zp, y, cfg.mutual_weight)
                    peer_loss = mutual_loss(zp, z, y, cfg.mutual_weight)
                    peer_opt.zero_grad()
                    peer_loss.backward()
                    peer_opt.step()
                    peer_sched.step()
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
                if guard is not None:
                    guard.apply()
                run_loss += float(loss.detach()) * len(y)
                n += len(y)
                step += 1
            rec = {"epoch": epoch + 1, "loss": run_loss / max(n, 1), "steps": step}
            if T is not None:
                rec["temperature"] = round(T, 4)
            if test is not None:
                rec["accuracy"] = common.evaluate(student, test)
                bar.note(f"acc {rec['accuracy']:.2f}%")
            history.append(rec)
            bar.advance()
            if step >= total:
                break
    finally:
        bar.close()
        if guard is not None:
            guard.remove()
    student.eval()
    return history


def config_json(cfg: FinetuneConfig) -> dict:
    return asdict(cfg)
