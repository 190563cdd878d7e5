"""VeRA: Vector-based Random Matrix Adaptation (Kopiczko, Blankevoort & Asano, ICLR 2024, arXiv 2310.11454).

Reference: huggingface/peft, ``src/peft/tuners/vera/model.py`` (``_kaiming_init``, ``_init_vera_A_vera_B``),
``layer.py`` (``VeraLayer.update_layer``, ``Linear.forward``) and ``config.py`` (defaults). One pair of frozen random
matrices ``A`` (rank x in) and ``B`` (out x rank) is shared by every adapted linear; each adapted layer (or, on
timm's fused ``qkv``, each adapted part q / k / v of it) trains two vectors, ``d`` (rank) and ``b`` (out)::

    y = W x + b * (B (d * (A dropout(x))))          i.e.  dW = diag(b) B diag(d) A

``A`` and ``B`` are sized to the largest adapted layer (each layer uses their leading rows and columns) and drawn,
``A`` first, from a generator seeded with ``projection_seed`` (peft's ``projection_prng_key``), each U(+-bound)
with ``bound = sqrt(6 / fan_in)`` (``kaiming_uniform`` with gain sqrt(2); fan_in is ``in`` for ``A`` and ``rank`` for
``B``), so they are rebuilt identically and never saved; only ``d`` and ``b`` are. ``b`` starts at zero (training
starts at the pretrained function), ``d`` at ``d_init`` (0.1). Dropout on the input, default 0 (``vera_dropout``).
Default targets: q and v, as the paper adapts the query and value projections of ViTs; timm fuses them into
``qkv``, so ``q`` and ``v`` name its first and last third. Rank 256. ``merge`` folds ``dW`` into the weight.

Written here because peft's VeRA keeps its shared matrices on the tuner object, which
``peft.inject_adapter_in_model`` refuses; only ``get_peft_model`` (a transformers-model wrapper) offers it.
"""

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from gist_ray.errors import ConfigError
from gist_ray.methods.base import (
    SITES,
    SharedRef,
    attach_shared,
    blocks,
    get_site,
    merge_wrappers,
    plain_linear,
    register_method,
    set_site,
    site_linear,
)
from gist_ray.typed_config import setting

QKV_PARTS = ("q", "k", "v")  # thirds of timm's fused qkv output rows
TARGETS = QKV_PARTS + tuple(SITES)
WHOLE = "all"  # the part name of a wholly adapted layer


@dataclass
class VeRAConfig:
    rank: int = setting(256, ge=1)
    d_init: float = 0.1
    projection_seed: int = 0
    dropout: float = setting(0.0, ge=0.0, lt=1.0)
    targets: list[str] = field(default_factory=lambda: ["q", "v"])

    def check(self, where: str) -> None:
        bad = [t for t in self.targets if t not in TARGETS]
        if not self.targets or bad or len(set(self.targets)) < len(self.targets):
            raise ConfigError(f"{where}.targets: expected a non-empty list of distinct {list(TARGETS)}, "
                              f"got {self.targets!r}")
        if "qkv" in self.targets and set(QKV_PARTS) & set(self.targets):
            raise ConfigError(f"{where}.targets: qkv already covers q, k and v; got {self.targets!r}")


def kaiming_bound(fan_in: int) -> float:
    """peft's ``_kaiming_init``: gain sqrt(2), bound sqrt(3) * gain / sqrt(fan_in)."""
    return math.sqrt(3.0) * math.sqrt(2.0) / math.sqrt(fan_in)


class VeRAProjections(nn.Module):
    """The shared frozen pair (non-persistent buffers: rebuilt from the seed, never checkpointed)."""

    def __init__(self, rank: int, max_in: int, max_out: int, seed: int, device: torch.device) -> None:
        super().__init__()
        g = torch.Generator(device="cpu").manual_seed(seed)
        a, b = torch.empty(rank, max_in, device="cpu"), torch.empty(max_out, rank, device="cpu")
        for m in (a, b):  # A first, then B, from one generator, as peft draws them
            bound = kaiming_bound(m.shape[1])
            m.uniform_(-bound, bound, generator=g)
        self.register_buffer("A", a.to(device), persistent=False)
        self.register_buffer("B", b.to(device), persistent=False)


def layer_parts(site: str, targets: list[str], out_features: int) -> list[tuple[str, int, int]]:
    """(part, first row, end row) of the adapted parts of ``site``'s output."""
    if site != "qkv" or "qkv" in targets:
        return [(WHOLE, 0, out_features)] if site in targets else []
    third = out_features // 3
    return [(p, i * third, (i + 1) * third) for i, p in enumerate(QKV_PARTS) if p in targets]


class VeRALinear(nn.Module):
    """A linear layer plus ``b_p * (B (d_p * (A x)))`` on each adapted part ``p`` of its output rows."""

    def __init__(self, inner: nn.Module, lin: nn.Linear, shared: VeRAProjections, d_init: float,
                 parts: list[tuple[str, int, int]], dropout: float) -> None:
        super().__init__()
        self.inner = inner
        self.shared = SharedRef(shared)
        self.in_features, self.out_features = lin.in_features, lin.out_features
        self.parts = parts
        self.dropout = nn.Dropout(dropout)
        rank, device = shared.A.shape[0], lin.weight.device
        self.d = nn.ParameterDict({p: nn.Parameter(torch.full((rank,), float(d_init), device=device))
                                   for p, _, _ in parts})
        self.b = nn.ParameterDict({p: nn.Parameter(torch.zeros(e - s, device=device)) for p, s, e in parts})

    def _a(self) -> torch.Tensor:
        return self.shared.module.A[:, : self.in_features]

    def _b(self, rows: int) -> torch.Tensor:
        return self.shared.module.B[:rows]

    def _pieces(self, make) -> list[torch.Tensor]:
        """``make(part, rows)`` for each part, zeros (``make(None, rows)``) between them, in row order."""
        out, at = [], 0
        for p, s, e in self.parts:
            if s > at:
                out.append(make(None, s - at))
            out.append(make(p, e - s))
            at = e
        if at < self.out_features:
            out.append(make(None, self.out_features - at))
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.linear(self.dropout(x), self._a())

        def piece(p, rows):
            if p is None:
                return h.new_zeros(*h.shape[:-1], rows)
            return F.linear(h * self.d[p], self._b(rows)) * self.b[p]

        return self.inner(x) + torch.cat(self._pieces(piece), dim=-1)

    def delta(self) -> torch.Tensor:
        a = self._a()

        def piece(p, rows):
            if p is None:
                return a.new_zeros(rows, self.in_features)
            return (self.b[p][:, None] * self._b(rows)) @ (self.d[p][:, None] * a)

        return torch.cat(self._pieces(piece), dim=0)

    @torch.no_grad()
    def merged(self) -> nn.Linear:
        lin = plain_linear(self.inner)
        lin.weight += self.delta().to(lin.weight.dtype)
        return lin


def _layers(vit, cfg: VeRAConfig) -> list[tuple[nn.Module, str, nn.Linear, list[tuple[str, int, int]]]]:
    sites = dict.fromkeys("qkv" if t in QKV_PARTS else t for t in cfg.targets)
    out = []
    for block in blocks(vit):
        for site in sites:
            lin = site_linear(block, site)
            out.append((block, site, lin, layer_parts(site, cfg.targets, lin.out_features)))
    return out


def _count(vit, cfg: VeRAConfig) -> int:
    return sum(cfg.rank + e - s for _, _, _, parts in _layers(vit, cfg) for _, s, e in parts)


def merge(vit) -> None:
    merge_wrappers(vit, VeRALinear)


@register_method("vera", VeRAConfig, count=_count, merge=merge, paper="VeRA, ICLR 2024, arXiv 2310.11454",
                 families=("vit", "swin"))
def apply(vit, cfg: VeRAConfig) -> None:
    layers = _layers(vit, cfg)
    max_in = max(lin.in_features for _, _, lin, _ in layers)
    max_out = max(e - s for _, _, _, parts in layers for _, s, e in parts)
    shared = VeRAProjections(cfg.rank, max_in, max_out, cfg.projection_seed, layers[0][2].weight.device)
    attach_shared(vit, "vera_projections", shared)
    for block, site, lin, parts in layers:
        set_site(block, site, VeRALinear(get_site(block, site), lin, shared, cfg.d_init, parts, cfg.dropout))
