"""FacT: Factor-Tuning (Jie & Deng, "FacT: Factor-Tuning for Lightweight Adaptation on Vision Transformer",
AAAI 2023, arXiv 2212.03145).

Reference: JieShibo/PETL-ViT, ``FacT/fact_tt.py`` and ``FacT/fact_tk.py`` (``set_FacT``, ``fact_forward_attn``,
``fact_forward_mlp``); per-dataset rank and scale in ``FacT/configs/{tt,tk}/<task>.yaml`` (in
``search_spaces/vtab_fact_tt.yaml`` / ``vtab_fact_tk.yaml``). The increments of every ``qkv``, ``proj``, ``fc1`` and
``fc2`` are cut into ``d x d`` slices (``qkv``: q, k, v; ``fc1`` / ``fc2``: ``m = hidden / d`` slices each) and
factorised with two factors shared by all layers, ``U`` (input, ``d -> r``) and ``V`` (output, ``r -> d``), and a
per-slice ``r x r`` core. A site reads its own input ``x`` (``qkv``/``fc1``: the normalised stream; ``proj``: the
attention output; ``fc2``: the MLP hidden state, slice by slice) and adds::

    s * V(dropout(core(U x)))

fact_tt (tensor-train): one trained core per slice, stored as the reference's per-layer ``nn.Linear`` weights
(q, k, v, proj: ``r -> r``; fc1: ``r -> m r``; fc2: ``m r -> r``). fact_tk (Tucker): the cores of all ``n = depth
(4 + 2m)`` slices come from one ``r x r x r`` tensor ``C`` and an ``r x n`` matrix ``P``, ``core_j = C @ P[:, j]``;
the MLP's ``m`` fc1 cores and ``m`` fc2 cores are read out of ``C @ P[:, ids]`` with the reference's reshapes.

Init: ``U`` nn.Linear's own (kaiming_uniform(a=sqrt(5))), ``V`` zeros (so training starts at the pretrained
function); TT cores nn.Linear's own, U(+-1/sqrt(fan_in)) (fan_in ``r``, or ``m r`` for fc2); TK ``C`` and ``P``
xavier_uniform. Dropout 0.1 after the core. Defaults ``rank: 8``, ``scale: 1`` (``set_FacT(dim=8, s=1)``). Trains:
``U``, ``V``, the cores. ``merge`` adds the dense increments to the weights (exact in eval mode).
"""

import math
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
from gist_ray.typed_config import setting

ATTN_SITES = ("qkv", "proj")  # slices along the output rows: qkv 3, proj 1
MLP_SITES = ("fc1", "fc2")  # fc1: m slices along the output rows; fc2: m slices along the input columns


@dataclass
class FacTConfig:
    rank: int = setting(8, ge=1)
    scale: float = 1.0
    dropout: float = setting(0.1, ge=0.0, lt=1.0)


def _linear_default_(t: torch.Tensor, fan_in: int) -> torch.Tensor:
    """nn.Linear's weight init, U(+-1/sqrt(fan_in))."""
    bound = 1.0 / math.sqrt(fan_in)
    return nn.init.uniform_(t, -bound, bound)


class FacTFactors(nn.Module):
    """The shared factors. ``core(block, site)`` is the ``(a, b)`` matrix that site's ``U x`` is multiplied by:
    ``qkv`` (r, 3r), ``proj`` (r, r), ``fc1`` (r, m r), ``fc2`` (m r, r)."""

    def __init__(self, dim: int, rank: int, depth: int, m: int, kind: str, scale: float, dropout: float) -> None:
        super().__init__()
        self.kind, self.scale, self.rank, self.m = kind, scale, rank, m
        self.u = nn.Parameter(_linear_default_(torch.empty(rank, dim), dim))  # FacTu.weight (d -> r)
        self.v = nn.Parameter(torch.zeros(dim, rank))  # FacTv.weight (r -> d), zeros
        self.dropout = nn.Dropout(dropout)
        r = rank
        if kind == "tt":  # the reference's per-layer nn.Linear weights, (out, in)
            self.attn = nn.Parameter(_linear_default_(torch.empty(depth, 4, r, r), r))  # q, k, v, proj
            self.fc1 = nn.Parameter(_linear_default_(torch.empty(depth, m * r, r), r))
            self.fc2 = nn.Parameter(_linear_default_(torch.empty(depth, r, m * r), m * r))
        else:
            self.c = nn.Parameter(nn.init.xavier_uniform_(torch.empty(r, r, r)))  # FacTc
            self.p = nn.Parameter(nn.init.xavier_uniform_(torch.empty(r, depth * (4 + 2 * m))))  # FacTp

    def core(self, block: int, site: str) -> torch.Tensor:
        r, m = self.rank, self.m
        if self.kind == "tt":
            if site in ATTN_SITES:
                w = self.attn[block, :3] if site == "qkv" else self.attn[block, 3:]
                return torch.cat(list(w.transpose(-1, -2)), dim=1)  # (r, k r): [W_q^T | W_k^T | W_v^T]
            return (self.fc1 if site == "fc1" else self.fc2)[block].T
        first = block * (4 + 2 * m)
        if site in ATTN_SITES:
            ids = slice(first, first + 3) if site == "qkv" else slice(first + 3, first + 4)
            cores = torch.einsum("abc,cj->jab", self.c, self.p[:, ids])  # (k, r, r): core_j = C @ P[:, j]
            return torch.cat(list(cores), dim=1)
        t = self.c @ self.p[:, first + 4: first + 4 + 2 * m]  # (r, r, 2m), as the reference's FacTc @ FacTp[...]
        if site == "fc1":
            return t[:, :, :m].reshape(r, m * r)
        return t[:, :, m:].reshape(r, m * r).T

    def delta(self, x: torch.Tensor, block: int, site: str) -> torch.Tensor:
        """``s * V(dropout(core(U x)))`` for the input ``x`` of ``site`` in ``block``."""
        k = self.core(block, site)
        if site == "fc2":  # U on each of the m input slices, then the (m r -> r) core
            z = (x.unflatten(-1, (self.m, -1)) @ self.u.T).flatten(-2) @ k
            return self.scale * (self.dropout(z) @ self.v.T)
        z = self.dropout((x @ self.u.T) @ k).unflatten(-1, (-1, self.rank))  # (..., slices, r)
        return self.scale * (z @ self.v.T).flatten(-2)

    def dense(self, block: int, site: str) -> torch.Tensor:
        """The weight increment of ``site`` in ``block`` (what ``delta`` adds, without dropout)."""
        k = self.core(block, site)
        if site == "fc2":  # dW[:, i d:(i+1) d] = s V K^T[:, i r:(i+1) r] U
            kt = k.T.unflatten(1, (self.m, self.rank))  # (r, m, r)
            return self.scale * torch.cat([self.v @ kt[:, i] @ self.u for i in range(self.m)], dim=1)
        kk = k.unflatten(1, (-1, self.rank))  # (r, slices, r): K_i = kk[:, i]
        return self.scale * torch.cat([self.v @ kk[:, i].T @ self.u for i in range(kk.shape[1])], dim=0)


class FacTLinear(nn.Module):
    """A linear layer plus the FacT increment of ``site`` in block ``block``."""

    def __init__(self, inner: nn.Module, factors: FacTFactors, block: int, site: str) -> None:
        super().__init__()
        self.inner = inner
        self.factors = SharedRef(factors)
        self.block, self.site = block, site

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x) + self.factors.module.delta(x, self.block, self.site)

    @torch.no_grad()
    def merged(self) -> nn.Linear:
        lin = plain_linear(self.inner)
        lin.weight += self.factors.module.dense(self.block, self.site)
        return lin


def _shape(vit) -> tuple[int, int, int]:
    """(d, m = MLP slices, depth); checks the slicing fits the backbone."""
    d, depth = dims(vit)
    hidden = mlp_hidden(vit)
    if hidden % d or site_linear(vit.blocks[0], "proj").in_features != d:
        raise ValueError(f"fact: needs attention width == {d} and an MLP width multiple of {d}, got {hidden}")
    return d, hidden // d, depth


def _count_tt(vit, cfg: FacTConfig) -> int:
    d, m, depth = _shape(vit)
    return 2 * d * cfg.rank + depth * (4 + 2 * m) * cfg.rank**2


def _count_tk(vit, cfg: FacTConfig) -> int:
    d, m, depth = _shape(vit)
    return 2 * d * cfg.rank + cfg.rank**3 + depth * (4 + 2 * m) * cfg.rank


def _apply(vit, cfg: FacTConfig, kind: str) -> None:
    d, m, depth = _shape(vit)
    factors = FacTFactors(d, cfg.rank, depth, m, kind, cfg.scale, cfg.dropout)
    attach_shared(vit, f"fact_{kind}", factors)
    for i, block in enumerate(vit.blocks):
        for site in ATTN_SITES + MLP_SITES:
            set_site(block, site, FacTLinear(get_site(block, site), factors, i, site))


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
