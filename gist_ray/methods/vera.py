"""VeRA: Vector-based Random Matrix Adaptation (Kopiczko, Blankevoort & Asano, ICLR 2024, arXiv 2310.11454).

One pair of frozen random matrices ``A`` (rank x in) and ``B`` (out x rank) is shared by every adapted linear;
each layer trains only two vectors, ``d`` (rank) and ``b`` (out)::

    y = W x + b * (B (d * (A x)))          i.e.  dW = diag(b) B diag(d) A

``A`` and ``B`` are Kaiming-uniform, drawn from ``projection_seed`` (so they are rebuilt identically and never
saved; only ``d`` and ``b`` are), and sized to the largest adapted layer, each layer using their leading rows and
columns as in the paper's reference implementation. ``b`` starts at zero (training starts at the pretrained
function), ``d`` at ``d_init``. ``merge`` folds ``dW`` into the weight.

Written here because peft's VeRA keeps its shared matrices on the tuner object, which
``peft.inject_adapter_in_model`` refuses; only ``get_peft_model`` (a transformers-model wrapper) offers it.
"""

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from gist_ray.methods.base import (
    SharedRef,
    attach_shared,
    blocks,
    check_sites,
    get_site,
    merge_wrappers,
    plain_linear,
    register_method,
    set_site,
    site_linear,
)


@dataclass
class VeRAConfig:
    rank: int = 256
    d_init: float = 0.1
    projection_seed: int = 0
    targets: list[str] = field(default_factory=lambda: ["qkv"])

    def check(self, where: str) -> None:
        from gist_ray.config import ConfigError

        if self.rank < 1:
            raise ConfigError(f"{where}.rank: must be >= 1, got {self.rank}")
        check_sites(self.targets, where)


class VeRAProjections(nn.Module):
    """The shared frozen pair (non-persistent buffers: rebuilt from the seed, never checkpointed)."""

    def __init__(self, rank: int, max_in: int, max_out: int, seed: int, device: torch.device) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        a, b = torch.empty(rank, max_in, device="cpu"), torch.empty(max_out, rank, device="cpu")
        for m in (a, b):
            bound = 1.0 / math.sqrt(m.shape[1])  # kaiming_uniform_(a=sqrt(5)), as nn.Linear initialises
            m.uniform_(-bound, bound, generator=g)
        self.register_buffer("A", a.to(device), persistent=False)
        self.register_buffer("B", b.to(device), persistent=False)


class VeRALinear(nn.Module):
    """A linear layer plus ``b * (B (d * (A x)))`` with the shared ``A``, ``B``."""

    def __init__(self, inner: nn.Module, lin: nn.Linear, shared: VeRAProjections, d_init: float) -> None:
        super().__init__()
        self.inner = inner
        self.shared = SharedRef(shared)
        self.in_features, self.out_features = lin.in_features, lin.out_features
        rank = shared.A.shape[0]
        self.d = nn.Parameter(torch.full((rank,), float(d_init), device=lin.weight.device))
        self.b = nn.Parameter(torch.zeros(lin.out_features, device=lin.weight.device))

    def _pair(self) -> tuple[torch.Tensor, torch.Tensor]:
        s = self.shared.module
        return s.A[:, : self.in_features], s.B[: self.out_features]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self._pair()
        return self.inner(x) + F.linear(F.linear(x, a) * self.d, b) * self.b

    def delta(self) -> torch.Tensor:
        a, b = self._pair()
        return (self.b[:, None] * b) @ (self.d[:, None] * a)

    @torch.no_grad()
    def merged(self) -> nn.Linear:
        lin = plain_linear(self.inner)
        lin.weight += self.delta().to(lin.weight.dtype)
        return lin


def _count(vit, cfg: VeRAConfig) -> int:
    layers = [site_linear(b, s) for b in blocks(vit) for s in cfg.targets]
    return sum(cfg.rank + lin.out_features for lin in layers)


def merge(vit) -> None:
    merge_wrappers(vit, VeRALinear)


@register_method("vera", VeRAConfig, count=_count, merge=merge, paper="VeRA, ICLR 2024, arXiv 2310.11454",
                 families=("vit", "swin"))
def apply(vit, cfg: VeRAConfig) -> None:
    layers = [(b, s, site_linear(b, s)) for b in blocks(vit) for s in cfg.targets]
    max_in = max(lin.in_features for _, _, lin in layers)
    max_out = max(lin.out_features for _, _, lin in layers)
    shared = VeRAProjections(cfg.rank, max_in, max_out, cfg.projection_seed, layers[0][2].weight.device)
    attach_shared(vit, "vera_projections", shared)
    for block, site, lin in layers:
        set_site(block, site, VeRALinear(get_site(block, site), lin, shared, cfg.d_init))
