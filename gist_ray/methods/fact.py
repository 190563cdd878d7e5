"""FacT: Factor-Tuning (Jie & Deng, "FacT: Factor-Tuning for Lightweight Adaptation on Vision Transformer",
AAAI 2023, arXiv 2212.03145).

The weight increments of every ``qkv``, ``proj``, ``fc1`` and ``fc2`` of all blocks are cut into ``d x d`` slices
(``qkv``: q, k, v; ``fc1`` / ``fc2``: ``hidden / d`` slices each) and stacked into one tensor of ``n = depth *
(4 + 2 * hidden / d)`` slices, factorised with factors shared across layers::

    fact_tt (tensor-train):  dW_i = s * U @ S_i @ V.T             U, V: d x r, S: n x r x r
    fact_tk (Tucker):        dW_i = s * U @ (sum_j P_ij C_j) @ V.T  U, V: d x r, C: r x r x r, P: n x r

V starts at zero, so training starts at the pretrained function. The increments are applied on the activations
(``x @ V``, then the core, then ``U``); ``merge`` adds the dense slices to the weights.
"""

from dataclasses import dataclass

import torch
from torch import nn

from gist_ray.methods.base import (
    SharedRef,
    attach_shared,
    dims,
    get_site,
    merge_wrappers,
    mlp_hidden,
    plain_linear,
    register_method,
    set_site,
    site_linear,
)

OUT_SLICED = ("qkv", "proj", "fc1")  # slices stacked along the output rows; fc2 along its input columns


@dataclass
class FacTConfig:
    rank: int = 16
    scale: float = 1.0

    def check(self, where: str) -> None:
        from gist_ray.config import ConfigError

        if self.rank < 1:
            raise ConfigError(f"{where}.rank: must be >= 1, got {self.rank}")


class FacTFactors(nn.Module):
    """The shared factors; ``cores(ids)`` gives the ``(k, r, r)`` middle factors of slices ``ids``."""

    def __init__(self, dim: int, rank: int, n: int, kind: str, scale: float) -> None:
        super().__init__()
        self.kind, self.scale = kind, scale
        self.u = nn.Parameter(nn.init.xavier_uniform_(torch.empty(dim, rank)))
        self.v = nn.Parameter(torch.zeros(dim, rank))
        if kind == "tt":
            self.core = nn.Parameter(torch.randn(n, rank, rank) / rank**0.5)
        else:
            self.core = nn.Parameter(torch.randn(rank, rank, rank) / rank**0.5)
            self.p = nn.Parameter(torch.randn(n, rank) / rank**0.5)

    def cores(self, ids: torch.Tensor) -> torch.Tensor:
        if self.kind == "tt":
            return self.core[ids]
        return torch.einsum("kj,jab->kab", self.p[ids], self.core)

    def slices(self, ids: torch.Tensor) -> torch.Tensor:
        """The dense ``(k, d, d)`` increments ``s * U @ S_k @ V.T``."""
        return self.scale * torch.einsum("oa,kab,ib->koi", self.u, self.cores(ids), self.v)


class FacTLinear(nn.Module):
    """A linear layer plus the FacT increment of its slices ``ids``."""

    def __init__(self, inner: nn.Module, factors: FacTFactors, ids: list[int], out_sliced: bool) -> None:
        super().__init__()
        self.inner = inner
        self.factors = SharedRef(factors)
        self.register_buffer("ids", torch.tensor(ids), persistent=False)
        self.out_sliced = out_sliced

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.factors.module
        cores = f.cores(self.ids)  # (k, r, r)
        if self.out_sliced:  # y[k] += s * ((x V) S_k^T) U^T
            z = torch.einsum("...r,ksr->...ks", x @ f.v, cores)
            delta = (z @ f.u.T).flatten(-2)
        else:  # y += s * sum_k ((x_k V) S_k^T) U^T
            t = x.unflatten(-1, (len(self.ids), -1)) @ f.v
            delta = torch.einsum("...kr,ksr->...s", t, cores) @ f.u.T
        return self.inner(x) + f.scale * delta

    def delta_weight(self) -> torch.Tensor:
        s = self.factors.module.slices(self.ids)  # (k, d, d)
        return torch.cat(list(s), dim=0 if self.out_sliced else 1)

    @torch.no_grad()
    def merged(self) -> nn.Linear:
        lin = plain_linear(self.inner)
        lin.weight += self.delta_weight()
        return lin


def _shape(vit) -> tuple[int, int, int]:
    """(d, slices per block, depth); checks the slicing fits the backbone."""
    d, depth = dims(vit)
    hidden = mlp_hidden(vit)
    if hidden % d or site_linear(vit.blocks[0], "proj").in_features != d:
        raise ValueError(f"fact: needs attention width == {d} and an MLP width multiple of {d}, got {hidden}")
    return d, 4 + 2 * hidden // d, depth


def _count_tt(vit, cfg: FacTConfig) -> int:
    d, per, depth = _shape(vit)
    return 2 * d * cfg.rank + depth * per * cfg.rank**2


def _count_tk(vit, cfg: FacTConfig) -> int:
    d, per, depth = _shape(vit)
    return 2 * d * cfg.rank + cfg.rank**3 + depth * per * cfg.rank


def _apply(vit, cfg: FacTConfig, kind: str) -> None:
    d, per, depth = _shape(vit)
    factors = FacTFactors(d, cfg.rank, depth * per, kind, cfg.scale)
    attach_shared(vit, f"fact_{kind}", factors)
    m = (per - 4) // 2  # slices of fc1 and of fc2
    counts = {"qkv": 3, "proj": 1, "fc1": m, "fc2": m}
    nxt = 0
    for block in vit.blocks:
        for site, k in counts.items():
            ids = list(range(nxt, nxt + k))
            nxt += k
            set_site(block, site, FacTLinear(get_site(block, site), factors, ids, site in OUT_SLICED))


def merge(vit) -> None:
    merge_wrappers(vit, FacTLinear)
    for name in [n for n, m in vit.named_children() if isinstance(m, FacTFactors)]:
        delattr(vit, name)


@register_method("fact_tt", FacTConfig, count=_count_tt, merge=merge, paper="FacT-TT, AAAI 2023, arXiv 2212.03145")
def apply_tt(vit, cfg: FacTConfig) -> None:
    _apply(vit, cfg, "tt")


@register_method("fact_tk", FacTConfig, count=_count_tk, merge=merge, paper="FacT-TK, AAAI 2023, arXiv 2212.03145")
def apply_tk(vit, cfg: FacTConfig) -> None:
    _apply(vit, cfg, "tk")
