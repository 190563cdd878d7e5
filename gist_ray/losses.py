"""The GIST objective and the registered interaction losses.

``L = CE(cls) + mu * CE(gist) + lambda * I(cls, gist; T)``. The default interaction ``bkl`` is the
bidirectional KL of the temperature-softened distributions, ``KL(p_cls || p_gist) + KL(p_gist || p_cls)``,
without the T^2 factor (as in the official code); ``t_squared=True`` multiplies ``I`` by T^2.
Every function returns plain tensors; ``gist_objective`` returns the total and each part for logging.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from gist_ray.registry import Registry

# An interaction loss maps (cls_logits, gist_logits, T) to (value, parts-for-logging).
InteractionFn = Callable[[Tensor, Tensor, float], tuple[Tensor, dict[str, Tensor]]]
INTERACTIONS: Registry[InteractionFn] = Registry("interaction loss")


def kl(log_p: Tensor, log_q: Tensor) -> Tensor:
    """Batch-mean ``KL(p || q)`` from log-probabilities."""
    return (log_p.exp() * (log_p - log_q)).sum(-1).mean()


def _soft(cls_logits: Tensor, gist_logits: Tensor, T: float) -> tuple[Tensor, Tensor]:
    return F.log_softmax(cls_logits.float() / T, -1), F.log_softmax(gist_logits.float() / T, -1)


@INTERACTIONS.register("bkl")
def bidirectional_kl(cls_logits: Tensor, gist_logits: Tensor, T: float) -> tuple[Tensor, dict[str, Tensor]]:
    """GIST's BKLD: forward plus reverse KL."""
    lc, lg = _soft(cls_logits, gist_logits, T)
    fwd, rev = kl(lc, lg), kl(lg, lc)
    return fwd + rev, {"kl_cls_gist": fwd, "kl_gist_cls": rev}


@INTERACTIONS.register("fkl")
def forward_kl(cls_logits: Tensor, gist_logits: Tensor, T: float) -> tuple[Tensor, dict[str, Tensor]]:
    """``KL(p_cls || p_gist)`` only."""
    lc, lg = _soft(cls_logits, gist_logits, T)
    fwd = kl(lc, lg)
    return fwd, {"kl_cls_gist": fwd}


@INTERACTIONS.register("rkl")
def reverse_kl(cls_logits: Tensor, gist_logits: Tensor, T: float) -> tuple[Tensor, dict[str, Tensor]]:
    """``KL(p_gist || p_cls)`` only."""
    lc, lg = _soft(cls_logits, gist_logits, T)
    rev = kl(lg, lc)
    return rev, {"kl_gist_cls": rev}


@INTERACTIONS.register("mse")
def mse_probs(cls_logits: Tensor, gist_logits: Tensor, T: float) -> tuple[Tensor, dict[str, Tensor]]:
    """Mean squared error between the softened probabilities (paper Table 8)."""
    lc, lg = _soft(cls_logits, gist_logits, T)
    v = F.mse_loss(lc.exp(), lg.exp(), reduction="none").sum(-1).mean()
    return v, {}


@INTERACTIONS.register("cosine")
def cosine(cls_logits: Tensor, gist_logits: Tensor, T: float) -> tuple[Tensor, dict[str, Tensor]]:
    """``1 - cos(p_cls, p_gist)`` of the softened probabilities (paper Table 8)."""
    lc, lg = _soft(cls_logits, gist_logits, T)
    v = (1.0 - F.cosine_similarity(lc.exp(), lg.exp(), dim=-1)).mean()
    return v, {}


@INTERACTIONS.register("js")
def jensen_shannon(cls_logits: Tensor, gist_logits: Tensor, T: float) -> tuple[Tensor, dict[str, Tensor]]:
    """Jensen-Shannon divergence: mean KL of each distribution to their average."""
    lc, lg = _soft(cls_logits, gist_logits, T)
    log_m = torch.logsumexp(torch.stack([lc, lg]), 0) - math.log(2.0)  # no per-step host->device copy
    v = 0.5 * (kl(lc, log_m) + kl(lg, log_m))
    return v, {}


def gist_objective(
    cls_logits: Tensor,
    gist_logits: Tensor | None,
    target: Tensor,
    *,
    mu: float = 0.5,
    lam: float = 0.75,
    temperature: float = 3.0,
    interaction: str = "bkl",
    t_squared: bool = False,
) -> tuple[Tensor, dict[str, Tensor]]:
    """The GIST loss. With ``gist_logits=None`` (GIST off) it is plain CE on the [CLS] logits.

    Returns ``(total, parts)``; parts hold ``ce_cls``, ``ce_gist``, ``interaction`` and the
    interaction's own parts (e.g. both KL directions), all detached.
    """
    ce_cls = F.cross_entropy(cls_logits.float(), target)
    parts: dict[str, Tensor] = {"ce_cls": ce_cls.detach()}
    if gist_logits is None:
        return ce_cls, parts
    ce_gist = F.cross_entropy(gist_logits.float(), target)
    inter, inter_parts = INTERACTIONS.get(interaction)(cls_logits, gist_logits, temperature)
    if t_squared:
        inter = inter * temperature**2
    total = ce_cls + mu * ce_gist + lam * inter
    parts.update({"ce_gist": ce_gist.detach(), "interaction": inter.detach()})
    parts.update({k: v.detach() for k, v in inter_parts.items()})
    return total, parts
