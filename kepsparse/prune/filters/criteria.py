"""The five filter-importance criteria. Each produces, per conv layer, a *removal order* (all
output-channel indices, the first to be removed first); the pipeline removes the first n of
each layer, n chosen per layer to meet the FLOPs budget.

Only the papers' abstracts are public: every formulation here is kepsparse's *reconstruction*
from the abstract and the prior work it names, not the authors' code; every choice the
abstracts leave open is a parameter with a documented default.

Shared rule: a channel that is dead (zero filter, or zero feature map on the calibration set)
is ordered first by every criterion.

========== =====================================================================================
name       reference
========== =====================================================================================
similarity Li et al., "SFP: Similarity-based filter pruning for deep neural networks",
           Information Sciences (2024), doi:10.1016/j.ins.2024.121418
lfrns      Fang, Yin, "Low functional redundancy network slimming", Alexandria Engineering
           Journal 119 (2025) 437-450, doi:10.1016/j.aej.2024.12.118
fpar       Chen et al., "Filter pruning via attention and rank enhancement", Int. J. Mach.
           Learn. & Cyber. (2024), doi:10.1007/s13042-023-02076-1
fcs        Yang, Xiao, "Feature-channel similarity + mutual-learning fine-tuning (FCS-MLFT)",
           Applied Intelligence 52 (2022) 14560-14570, doi:10.1007/s10489-022-03403-9
l1         Li et al., "Pruning filters for efficient ConvNets", ICLR 2017, arXiv:1608.08710
========== =====================================================================================
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from ...errors import InputError, UnsupportedError
from .. import common

EPS = 1e-12


# ----------------------------------------------------------------------------- small tools

def kmeans(x: np.ndarray, k: int, seed: int = 0, iters: int = 50) -> np.ndarray:
    """Labels of a seeded k-means++ / Lloyd k-means of the rows of ``x`` (deterministic, no
    threads, no warnings; k is clamped to the number of distinct rows)."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    n = len(x)
    k = int(max(1, min(k, len(np.unique(np.round(x, 12), axis=0)))))
    rng = np.random.default_rng(seed)
    centres = [x[rng.integers(n)]]
    for _ in range(1, k):
        d = np.min(((x[:, None, :] - np.asarray(centres)[None]) ** 2).sum(-1), axis=1)
        p = d / d.sum() if d.sum() > 0 else np.full(n, 1.0 / n)
        centres.append(x[rng.choice(n, p=p)])
    c = np.asarray(centres)
    labels = np.zeros(n, dtype=np.int64)
    for it in range(iters):
        d = ((x[:, None, :] - c[None]) ** 2).sum(-1)
        new = d.argmin(1)
        if it and np.array_equal(new, labels):
            break
        labels = new
        for j in range(k):
            if np.any(labels == j):
                c[j] = x[labels == j].mean(0)
    return labels


def minmax(v) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    span = v.max() - v.min() if v.size else 0.0
    return np.zeros_like(v) if span <= EPS else (v - v.min()) / span


def _cos_matrix(x: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(x, axis=1)
    u = x / np.maximum(n, EPS)[:, None]
    return np.clip(u @ u.T, -1.0, 1.0)


def _dead_first(order, dead: np.ndarray) -> np.ndarray:
    order = [int(i) for i in order]
    d = [i for i in order if dead[i]]
    return np.asarray(d + [i for i in order if not dead[i]], dtype=np.int64)


# ----------------------------------------------------------------------------- context

class Context:
    """What criteria may look at: the model, its dependency graph and groups, calibration data."""

    def __init__(self, model, DG, groups, loader, seed: int = 0, progress: bool = False):
        self.model, self.DG, self.groups, self.loader = model, DG, groups, loader
        self.seed, self.progress = seed, progress
        self.modules = dict(model.named_modules())
        self.names = {id(m): n for n, m in self.modules.items()}
        self.convs = common.conv_layers(model)

    def layers(self) -> list[str]:
        """Every conv whose removal order is needed (all members of prunable groups)."""
        return [c for g in self.groups if g.prunable for c in g.out_convs]

    def channel_output(self, conv_name: str):
        """The module whose output is the conv's 'channel output': the BN right after it when
        there is one, else the conv itself."""
        torch = common._torch()
        conv = self.modules[conv_name]
        node = self.DG.module2node.get(conv)
        if node is not None and len(node.outputs) == 1:
            nxt = node.outputs[0].module
            if isinstance(nxt, torch.nn.modules.batchnorm._BatchNorm):
                return nxt
        return conv

    def batches(self, n: int):
        for i, batch in enumerate(self.loader):
            if i >= n:
                break
            yield batch[0], batch[1]


def collect_feature_stats(ctx: Context, layers, batches: int = 4, activation: str = "relu",
                          rank: bool = False, rank_samples: int = 32) -> dict:
    """Per conv: ``l1`` (mean |F_c|), ``cos`` (per-sample cosine similarity of channel maps,
    averaged), and with ``rank`` the mean matrix rank of each channel's HxW maps (HRank)."""
    torch = common._torch()
    if activation not in ("relu", "none"):
        raise InputError(f"unknown activation {activation!r}; choose relu or none",
                         field="activation")
    stats = {n: {"l1": 0.0, "cos": 0.0, "n": 0, "rank": 0.0, "rank_n": 0} for n in layers}

    def hook(name):
        def fn(mod, inp, out):
            f = out.detach()
            if activation == "relu":
                f = torch.relu(f)
            N, C = f.shape[:2]
            flat = f.reshape(N, C, -1).double()
            s = stats[name]
            s["l1"] = s["l1"] + flat.abs().mean(-1).sum(0).numpy()
            u = flat / flat.norm(dim=-1, keepdim=True).clamp_min(EPS)
            s["cos"] = s["cos"] + torch.einsum("nip,njp->ij", u, u).numpy()
            s["n"] += N
            if rank and f.dim() == 4:
                k = min(N, rank_samples)
                r = torch.linalg.matrix_rank(f[:k].float()).double()
                s["rank"] = s["rank"] + r.sum(0).numpy()
                s["rank_n"] += k
        return fn

    hooks = [ctx.channel_output(n).register_forward_hook(hook(n)) for n in layers]
    was = ctx.model.training
    ctx.model.eval()
    try:
        with torch.no_grad():
            for x, _ in ctx.batches(batches):
                ctx.model(x)
    finally:
        for h in hooks:
            h.remove()
        ctx.model.train(was)
    out = {}
    for n, s in stats.items():
        if s["n"] == 0:
            raise InputError("the calibration loader yielded no batch", field="data")
        l1 = np.asarray(s["l1"]) / s["n"]
        out[n] = {"l1": l1, "cos": np.asarray(s["cos"]) / s["n"],
                  "rank": (np.asarray(s["rank"]) / s["rank_n"]) if s["rank_n"] else None,
                  "dead": l1 <= 1e-8}
    return out


def train_channel_scalers(ctx: Context, layers, make, penalty=None, steps: int = 60,
                          lr: float = 1e-2, seed: int = 0):
    """Attach a small trainable module per conv (``make(channels) -> nn.Module`` mapping the
    channel output ``y`` to a per-channel multiplier broadcastable to ``y``), train only those
    modules with CE (+ ``penalty(modules)``) for ``steps`` batches with the network frozen (eval
    mode), and return ``(modules, hooks)``; the caller removes the hooks."""
    torch = common._torch()
    torch.manual_seed(seed)
    mods = {n: make(ctx.modules[n].out_channels) for n in layers}

    def hook(name):
        def fn(mod, inp, out):
            return out * mods[name](out)
        return fn

    hooks = [ctx.channel_output(n).register_forward_hook(hook(n)) for n in layers]
    params = [p for m in mods.values() for p in m.parameters()]
    frozen = [(p, p.requires_grad) for p in ctx.model.parameters()]
    for p, _ in frozen:
        p.requires_grad_(False)
    was = ctx.model.training
    ctx.model.eval()
    opt = torch.optim.Adam(params, lr=lr)
    loss_fn = torch.nn.CrossEntropyLoss()
    try:
        step = 0
        while step < steps:
            got = False
            for x, y in ctx.loader:
                got = True
                opt.zero_grad()
                loss = loss_fn(ctx.model(x), y)
                if penalty is not None:
                    loss = loss + penalty(mods)
                loss.backward()
                opt.step()
                step += 1
                if step >= steps:
                    break
            if not got:
                raise InputError("the training loader yielded no batch", field="data")
    except BaseException:
        for h in hooks:
            h.remove()
        raise
    finally:
        for p, rg in frozen:
            p.requires_grad_(rg)
        ctx.model.train(was)
    return mods, hooks


# ----------------------------------------------------------------------------- criteria

class Criterion:
    """Base: ``prepare(ctx)`` once, then ``order(conv_name)`` per layer; ``details(conv_name)``
    is JSON-ready per-layer evidence for the report; ``layer_weights`` (or None) scales the
    per-layer pruning rates (Kernel Dispersion for ``similarity``)."""
    name = "base"
    doi = ""
    reference = ""

    @dataclass
    class Options:
        pass

    def __init__(self, **options):
        fields = set(self.Options.__dataclass_fields__)
        bad = set(options) - fields
        if bad:
            raise InputError(f"unknown option(s) for {self.name}: {', '.join(sorted(bad))}; known: "
                             f"{', '.join(sorted(fields)) or 'none'}", field=sorted(bad)[0])
        self.opts = self.Options(**options)
        self._details: dict = {}
        self.layer_weights: dict | None = None
        self.dispersion: dict | None = None

    def options_json(self) -> dict:
        return asdict(self.opts)

    def prepare(self, ctx: Context) -> None:
        self.ctx = ctx

    def order(self, conv_name: str) -> np.ndarray:
        raise NotImplementedError

    def details(self, conv_name: str) -> dict:
        return self._details.get(conv_name, {})

    def use_kernel_dispersion(self) -> None:
        """Kernel Dispersion (the one implementation): D_g = mean pairwise cosine distance of
        the flattened filters of each prunable group's convs (``self.dispersion``), and
        ``self.layer_weights`` = (mean D / D_g) ** ``dispersion_power`` (option, default 1):
        a tightly clustered, low-dispersion layer is more redundant and pruned harder."""
        disp = {}
        for g in self.ctx.groups:
            if not g.prunable:
                continue
            ds = []
            for c in g.out_convs:
                cos = _cos_matrix(self._weights(c))
                iu = np.triu_indices(len(cos), 1)
                ds.append(float(np.mean(1.0 - cos[iu])) if len(iu[0]) else 1.0)
            disp[g.root] = float(np.mean(ds))
        self.dispersion = disp
        power = getattr(self.opts, "dispersion_power", 1.0)
        mean = float(np.mean(list(disp.values()))) if disp else 1.0
        self.layer_weights = {k: (mean / max(v, 1e-6)) ** power for k, v in disp.items()}

    def _weights(self, conv_name: str) -> np.ndarray:
        w = self.ctx.modules[conv_name].weight.detach().double().numpy()
        return w.reshape(w.shape[0], -1)


class L1Criterion(Criterion):
    """Plain L1-norm filter pruning (the baseline): remove the filters with the smallest
    sum |W_o|. Li, Kadav, Durdanovic, Samet, Graf, "Pruning filters for efficient ConvNets",
    ICLR 2017, arXiv:1608.08710."""
    name = "l1"
    reference = "arXiv:1608.08710 (Li et al., ICLR 2017)"

    @dataclass
    class Options:
        norm: str = "l1"   # l1 | l2

    def order(self, conv_name):
        w = self._weights(conv_name)
        if self.opts.norm not in ("l1", "l2"):
            raise InputError(f"unknown norm {self.opts.norm!r}; choose l1 or l2", field="norm")
        s = np.abs(w).sum(1) if self.opts.norm == "l1" else np.sqrt((w ** 2).sum(1))
        self._details[conv_name] = {"norm": s.round(6).tolist()}
        return _dead_first(np.argsort(s, kind="stable"), s <= EPS)


class SimilarityCriterion(Criterion):
    """Similarity-based filter pruning (named ``similarity``; "SFP" means Soft Filter Pruning
    elsewhere). Li et al., Information Sciences 2024, doi:10.1016/j.ins.2024.121418.

    Reconstruction from the abstract (cluster kernels by similarity; prune the unimportant and
    redundant ones inside each cluster; Kernel Dispersion sets per-layer sparsity):

    1. k-means (``clusters`` x O clusters, at least 1) of the layer's flattened, L2-normalised
       filters.
    2. Inside a cluster, importance = filter norm / max norm of the layer; redundancy = cosine
       distance (``redundancy="nearest"``: to the nearest other *alive* member, so a
       near-duplicate has ~0; ``"centre"``: to the cluster centre, so the most typical member
       is the most redundant); score = beta * importance + (1 - beta) * distance/2.
    3. Greedy: remove the lowest score, recompute distances among the survivors, repeat; the
       most important member of each cluster is removed only after every other filter.
    4. Kernel Dispersion D_l = mean pairwise cosine distance of the layer's normalised filters;
       the per-layer rate is proportional to (mean D / D_l) ** ``dispersion_power`` (a tightly
       clustered, low-dispersion layer is more redundant and pruned harder), scaled by the
       pipeline to meet the global FLOPs target (``allocation="dispersion"``).
    Fine-tuning in the paper: distillation with a variable temperature (``finetune="kd"``).
    """
    name = "similarity"
    doi = "10.1016/j.ins.2024.121418"

    @dataclass
    class Options:
        clusters: float = 0.25          # clusters per layer as a fraction of its filters
        beta: float = 0.5               # weight of importance vs redundancy
        norm: str = "l1"                # importance: l1 | l2
        redundancy: str = "nearest"     # nearest | centre
        dispersion_power: float = 1.0   # per-layer rate ~ (mean D / D_l) ** power

    def prepare(self, ctx):
        super().prepare(ctx)
        o = self.opts
        if not 0 <= o.beta <= 1:
            raise InputError(f"must be in [0, 1], got {o.beta}", field="beta")
        if not 0 < o.clusters <= 1:
            raise InputError(f"must be in (0, 1], got {o.clusters}", field="clusters")
        if o.redundancy not in ("nearest", "centre"):
            raise InputError(f"unknown redundancy {o.redundancy!r}; choose nearest or centre",
                             field="redundancy")
        self.use_kernel_dispersion()

    def order(self, conv_name):
        o = self.opts
        w = self._weights(conv_name)
        O = len(w)
        norms = np.abs(w).sum(1) if o.norm == "l1" else np.sqrt((w ** 2).sum(1))
        dead = norms <= EPS
        imp = norms / max(norms.max(), EPS)
        u = w / np.maximum(np.linalg.norm(w, axis=1), EPS)[:, None]
        k = max(1, int(round(o.clusters * O)))
        labels = kmeans(u, k, seed=self.ctx.seed)
        dist = (1.0 - np.clip(u @ u.T, -1, 1)) / 2.0       # in [0, 1]
        protected = set()
        for c in np.unique(labels):
            members = np.flatnonzero(labels == c)
            protected.add(int(members[np.argmax(imp[members])]))
        same = labels[:, None] == labels[None, :]
        near = np.where(same, dist, np.inf)
        np.fill_diagonal(near, np.inf)
        alive = np.ones(O, dtype=bool)
        prot = np.zeros(O, dtype=bool)
        prot[list(protected)] = True
        order = []
        while alive.any():
            if o.redundancy == "nearest":
                red = np.where(alive[None, :], near, np.inf).min(1)
                red[~np.isfinite(red)] = 1.0
            else:
                red = np.ones(O)
                for c in np.unique(labels[alive]):
                    mem = alive & (labels == c)
                    centre = u[mem].mean(0)
                    cn = max(np.linalg.norm(centre), EPS)
                    red[mem] = (1.0 - u[mem] @ centre / cn) / 2.0
            scores = o.beta * imp + (1 - o.beta) * red
            cand = alive & ~prot
            if not cand.any():
                cand = alive
            scores = np.where(cand, scores, np.inf)
            pick = int(np.argmin(scores))
            order.append(pick)
            alive[pick] = False
        self._details[conv_name] = {"clusters": int(len(np.unique(labels))),
                                    "cluster_of": labels.tolist()}
        return _dead_first(order, dead)


class LFRNSCriterion(Criterion):
    """LFRNS - low functional redundancy network slimming. Fang, Yin, Alexandria Engineering
    Journal 119 (2025) 437-450, doi:10.1016/j.aej.2024.12.118.

    Reconstruction from the abstract (cluster feature maps to find functionally redundant
    filters; a learned feature contribution ranking (FCR) unit restores important channels):

    1. Feature maps of each conv's channel output (after BN, ``activation`` applied) on
       ``batches`` calibration batches; distance = 1 - mean per-sample cosine similarity;
       average-linkage agglomerative clustering into ``clusters`` x O clusters.
    2. Candidate set = every channel but each cluster's representative (``representative``:
       the member with the largest mean |feature map| ("norm") or the medoid).
    3. FCR unit = one learnable gate per channel (init 1) multiplying the channel output,
       trained for ``fcr_steps`` batches with CE + ``fcr_l1`` * sum|g| (network slimming's L1 on
       scaling factors; the paper-scale values are ~1e-4 for VGG, 1e-5 for ResNet over full
       training - the default here is larger because only the gates train, briefly).
    4. Candidates are removed in increasing |g| order: the highest-|g| candidates are the ones
       "restored" when the layer's budget is smaller than the candidate set; representatives
       come last (also by |g|). The gates are discarded afterwards (the network is unchanged).
    """
    name = "lfrns"
    doi = "10.1016/j.aej.2024.12.118"

    @dataclass
    class Options:
        clusters: float = 0.25          # clusters per layer as a fraction of its channels
        batches: int = 4                # calibration batches for the feature maps
        activation: str = "relu"        # relu | none, applied to the channel output
        representative: str = "norm"    # norm | medoid
        fcr_steps: int = 60
        fcr_lr: float = 1e-2
        fcr_l1: float = 1e-3

    def prepare(self, ctx):
        super().prepare(ctx)
        torch = common._torch()
        o = self.opts
        if o.representative not in ("norm", "medoid"):
            raise InputError(f"unknown representative {o.representative!r}; choose norm or "
                             "medoid", field="representative")
        if not 0 < o.clusters <= 1:
            raise InputError(f"must be in (0, 1], got {o.clusters}", field="clusters")
        layers = ctx.layers()
        self.stats = collect_feature_stats(ctx, layers, o.batches, o.activation)

        def make(c):
            m = torch.nn.Module()
            m.g = torch.nn.Parameter(torch.ones(c))
            m.forward = lambda y, m=m: m.g.view(1, -1, *([1] * (y.dim() - 2)))
            return m

        def l1(mods):
            return o.fcr_l1 * sum(m.g.abs().sum() for m in mods.values())

        mods, hooks = train_channel_scalers(ctx, layers, make, l1, o.fcr_steps, o.fcr_lr, ctx.seed)
        for h in hooks:
            h.remove()
        self.gates = {n: m.g.detach().abs().double().numpy() for n, m in mods.items()}

    def order(self, conv_name):
        try:
            from scipy.cluster.hierarchy import fcluster, linkage
        except ImportError:
            raise UnsupportedError("lfrns clusters feature maps with scipy: pip install scipy",
                                   field="scipy") from None
        o = self.opts
        st = self.stats[conv_name]
        O = len(st["l1"])
        dist = np.clip(1.0 - st["cos"], 0.0, 2.0)
        dist = 0.5 * (dist + dist.T)
        np.fill_diagonal(dist, 0.0)
        k = max(1, int(round(o.clusters * O)))
        if O > 1:
            iu = np.triu_indices(O, 1)
            labels = fcluster(linkage(dist[iu], method="average"), t=k, criterion="maxclust") - 1
        else:
            labels = np.zeros(1, dtype=np.int64)
        reps = []
        for c in np.unique(labels):
            mem = np.flatnonzero(labels == c)
            if o.representative == "norm":
                reps.append(int(mem[np.argmax(st["l1"][mem])]))
            else:
                reps.append(int(mem[np.argmin(dist[np.ix_(mem, mem)].sum(1))]))
        g = self.gates[conv_name]
        is_rep = np.zeros(O, dtype=bool)
        is_rep[reps] = True
        cand = sorted(np.flatnonzero(~is_rep), key=lambda i: (g[i], i))
        rest = sorted(np.flatnonzero(is_rep), key=lambda i: (g[i], i))
        self._details[conv_name] = {"clusters": int(len(reps)), "candidates": len(cand),
                                    "fcr_gate": g.round(4).tolist()}
        return _dead_first(cand + rest, st["dead"])


class FPARCriterion(Criterion):
    """FPAR - filter pruning via attention and rank enhancement. Chen et al., Int. J. Mach.
    Learn. & Cyber. (2024), doi:10.1007/s13042-023-02076-1.

    Reconstruction from the abstract (criterion from channel-attention weights and feature-map
    rank; the mean channel attention is nearly constant across batches, so a few suffice):

    1. An SE block s = sigmoid(W2 ReLU(W1 GAP(y))) (``se_reduction``) is attached to each conv's
       channel output (the network has none) and trained alone, network frozen, for
       ``se_steps`` batches with CE; a_c = mean of s_c over ``attention_batches`` batches.
    2. r_c = mean matrix rank of channel c's HxW maps (HRank; ``rank_batches`` batches of at
       most ``rank_samples`` images - HRank used 5 x 128).
    3. I_c = beta * minmax(a_c) + (1 - beta) * minmax(r_c) (``fusion="sum"``) or
       minmax(a_c) * minmax(r_c) (``"product"``); lowest I_c removed first.
    """
    name = "fpar"
    doi = "10.1007/s13042-023-02076-1"

    @dataclass
    class Options:
        beta: float = 0.5
        fusion: str = "sum"             # sum | product
        se_reduction: int = 4
        se_steps: int = 60
        se_lr: float = 1e-2
        attention_batches: int = 4
        rank_batches: int = 2
        rank_samples: int = 32
        activation: str = "relu"

    def prepare(self, ctx):
        super().prepare(ctx)
        torch = common._torch()
        o = self.opts
        if o.fusion not in ("sum", "product"):
            raise InputError(f"unknown fusion {o.fusion!r}; choose sum or product", field="fusion")
        if not 0 <= o.beta <= 1:
            raise InputError(f"must be in [0, 1], got {o.beta}", field="beta")
        layers = ctx.layers()
        self.stats = collect_feature_stats(ctx, layers, o.rank_batches, o.activation, rank=True,
                                           rank_samples=o.rank_samples)
        nn = torch.nn

        class SE(nn.Module):
            def __init__(self, c):
                super().__init__()
                h = max(2, c // max(1, int(o.se_reduction)))
                self.fc1, self.fc2 = nn.Linear(c, h), nn.Linear(h, c)
                self.last = None

            def forward(self, y):
                z = y.mean(dim=tuple(range(2, y.dim()))) if y.dim() > 2 else y
                s = torch.sigmoid(self.fc2(torch.relu(self.fc1(z))))
                self.last = s.detach()
                return s.view(*s.shape, *([1] * (y.dim() - 2)))

        mods, hooks = train_channel_scalers(ctx, layers, SE, None, o.se_steps, o.se_lr, ctx.seed)
        sums = {n: 0.0 for n in layers}
        count = 0
        try:
            with torch.no_grad():
                ctx.model.eval()
                for x, _ in ctx.batches(o.attention_batches):
                    ctx.model(x)
                    for n in layers:
                        sums[n] = sums[n] + mods[n].last.double().sum(0).numpy()
                    count += len(x)
        finally:
            for h in hooks:
                h.remove()
        self.attention = {n: np.asarray(v) / max(count, 1) for n, v in sums.items()}

    def order(self, conv_name):
        o = self.opts
        a = minmax(self.attention[conv_name])
        r = minmax(self.stats[conv_name]["rank"])
        imp = o.beta * a + (1 - o.beta) * r if o.fusion == "sum" else a * r
        self._details[conv_name] = {"attention": self.attention[conv_name].round(4).tolist(),
                                    "rank": self.stats[conv_name]["rank"].round(3).tolist()}
        return _dead_first(np.argsort(imp, kind="stable"), self.stats[conv_name]["dead"])


class FCSCriterion(Criterion):
    """FCS - feature-channel similarity (with MLFT, mutual-learning fine-tuning). Yang, Xiao,
    Applied Intelligence 52 (2022) 14560-14570, doi:10.1007/s10489-022-03403-9.

    Reconstruction from the abstract (cosine similarity between output feature channels;
    K-Means on the feature maps' L1 norms groups channels into bins; similarity compared inside
    each bin; mutual-learning fine-tuning):

    1. Per channel, n_c = mean |F_c| over ``batches`` calibration batches; 1-D k-means of n_c
       into ``bins`` bins (clamped to the number of distinct values).
    2. Inside each bin, S_ij = mean per-sample cosine similarity of the flattened maps.
    3. Greedy: take the most similar alive pair in any bin (S_ij >= ``threshold`` when set), remove
       the member with the smaller n_c; when no pair qualifies, remove the smallest n_c.
    Fine-tuning in the paper: deep mutual learning (``finetune="mutual"``).
    """
    name = "fcs"
    doi = "10.1007/s10489-022-03403-9"

    @dataclass
    class Options:
        bins: int = 4
        batches: int = 4
        threshold: float | None = None  # minimum similarity for a pair to count
        activation: str = "relu"

    def prepare(self, ctx):
        super().prepare(ctx)
        if int(self.opts.bins) < 1:
            raise InputError(f"must be >= 1, got {self.opts.bins}", field="bins")
        self.stats = collect_feature_stats(ctx, ctx.layers(), self.opts.batches,
                                           self.opts.activation)

    def order(self, conv_name):
        o = self.opts
        st = self.stats[conv_name]
        n = st["l1"]
        O = len(n)
        bins = kmeans(n, int(o.bins), seed=self.ctx.seed)
        S = st["cos"].copy()
        same = bins[:, None] == bins[None, :]
        S[~same] = -np.inf
        np.fill_diagonal(S, -np.inf)
        thr = -np.inf if o.threshold is None else float(o.threshold)
        alive = np.ones(O, dtype=bool)
        order = []
        while alive.any():
            sub = np.where(alive[:, None] & alive[None, :], S, -np.inf)
            i, j = np.unravel_index(np.argmax(sub), sub.shape)
            if np.isfinite(sub[i, j]) and sub[i, j] >= thr:
                pick = int(i if (n[i], i) < (n[j], j) else j)
            else:
                idx = np.flatnonzero(alive)
                pick = int(idx[np.argmin(n[idx])])
            order.append(pick)
            alive[pick] = False
        self._details[conv_name] = {"bin_of": bins.tolist(), "l1": n.round(5).tolist()}
        return _dead_first(order, st["dead"])


CRITERIA = {c.name: c for c in (SimilarityCriterion, LFRNSCriterion, FPARCriterion, FCSCriterion,
                                L1Criterion)}

#: What each method's paper fine-tunes with (used when ``finetune="paper"``).
PAPER_FINETUNE = {"similarity": "kd", "lfrns": "plain", "fpar": "plain", "fcs": "mutual",
                  "l1": "plain"}


def make_criterion(name: str, **options) -> Criterion:
    if name not in CRITERIA:
        raise InputError(f"unknown filter criterion {name!r}; choose from "
                         f"{', '.join(CRITERIA)}", field="method")
    return CRITERIA[name](**options)
