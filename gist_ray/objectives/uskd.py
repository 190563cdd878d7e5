"""USKD, the self-distillation half of "From Knowledge Distillation to Self-Knowledge Distillation: A Unified
Approach with Normalized Loss and Customized Soft Labels" (Yang et al., ICCV 2023, arXiv 2303.13005).

Reference: yzd-v/cls_KD, ``mmcls/models/dis_losses/uskd.py`` (``USKDLoss``) and
``mmcls/models/classifiers/distiller.py`` (which features it reads), ViT defaults from
``configs/distillers/imagenet/deit-t_sd_img.py``: ``alpha = 1``, ``beta = 0.1``, ``mu = 0.005``. With final
logits ``z`` (probabilities ``s``, target probability ``s_t``) and a weak classifier ``w = fc(f_mid)`` on an
intermediate feature::

    L = CE(z, y) + alpha * L_target + beta * L_non_target + mu * L_weak
    L_target     = -mean_b p_t log s_t,  p_t = s_t^2 + 1 - mean_batch(s_t^2)             (detached)
    L_weak       = CE(w, 0.9 * onehot(y) + 0.1 / C)
    L_non_target = CE over the non-target classes of z against Zipf labels 1/rank, renormalised, where the rank
                   orders softmax(w) / (1 - softmax(w)_t) + log_softmax(z) / (1 - log_softmax(z)_t)  (detached)

(the rank adds the final logits' log-probabilities, as the reference code does). ``f_mid`` is, as in the
reference, the [CLS] token of ViT block ``int(0.5 * depth)`` (6 of 12), or on a Swin the grid mean of the
penultimate stage's output after a LayerNorm of its own (mmcls's ``norm2``, which trains); ``objective.block``
(1-based) chooses another block. ``fc`` (and the Swin LayerNorm) train and count as objective parameters.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gist_ray.blocks import family
from gist_ray.objectives.base import BuildContext, Needs, Objective, Outputs, register_objective
from gist_ray.objectives.taps import backbone_depth, check_blocks, depth, middle_block, widths
from gist_ray.typed_config import setting

WEAK_TARGET = 0.9  # the reference's weak-supervision label: 0.9 on the class, 0.1 spread uniformly


@dataclass
class USKDConfig:
    """USKD's knobs with the reference's ViT defaults."""

    alpha: float = setting(1.0, ge=0.0, doc="weight of the soft target-class loss")
    beta: float = setting(0.1, ge=0.0, doc="weight of the Zipf non-target loss")
    mu: float = setting(0.005, ge=0.0, doc="weight of the weak classifier's loss")
    block: int = setting(0, ge=0, doc="1-based block the weak classifier reads; 0: the reference's choice")

    def check_backbone(self, backbone: str, where: str) -> None:
        if self.block:
            check_blocks([self.block], backbone_depth(backbone), where, "block")


def uskd_terms(logits: Tensor, weak_logits: Tensor, target: Tensor, zipf: Tensor) -> dict[str, Tensor]:
    """``target`` (L_target), ``non_target`` (L_non_target) and ``weak`` (L_weak, without mu), as the reference."""
    n, c = logits.shape
    label = target.view(n, 1)
    s_t = torch.gather(F.softmax(logits, 1), 1, label)
    p_t = s_t**2
    p_t = (p_t + 1.0 - p_t.mean(0, True)).detach()
    log_s = F.log_softmax(logits, 1)
    log_s_t = torch.gather(log_s, 1, label)
    loss_t = -(p_t * log_s_t).sum(1).mean()

    soft = torch.zeros_like(logits).scatter_(1, label, WEAK_TARGET) + (1.0 - WEAK_TARGET) / c
    loss_weak = -(soft * F.log_softmax(weak_logits, 1)).sum(1).mean()

    w = F.softmax(weak_logits, 1)
    w_t = torch.gather(w, 1, label)
    score = w / (1 - w_t.sum(1, True) + 1e-6) + log_s / (1 - log_s_t.sum(1, True) + 1e-6)
    order = torch.sort(score, descending=True, dim=-1)[1]
    z = torch.gather(zipf.repeat(n, 1), 1, torch.argsort(order))  # class c gets 1 / (its rank)
    mask = torch.ones_like(logits).scatter_(1, label, 0).bool()
    ns = F.log_softmax(logits[mask].reshape(n, -1), 1)
    nz = z[mask].reshape(n, -1)
    nz = (nz / nz.sum(1, keepdim=True)).detach()
    loss_non = -(nz * ns).sum(1).mean()
    return {"target": loss_t, "non_target": loss_non, "weak": loss_weak}


class USKD(Objective):
    def __init__(self, cfg: USKDConfig, ctx: BuildContext) -> None:
        net = ctx.net
        number = cfg.block or middle_block(net)
        check_blocks([number], depth(net), "objective", "block")
        super().__init__(Needs(blocks=(number - 1,)), net)
        self.alpha, self.beta, self.mu = cfg.alpha, cfg.beta, cfg.mu
        (w,) = widths(net, [number])
        self.norm = nn.LayerNorm(w) if family(net) == "swin" else nn.Identity()
        self.fc = nn.Linear(w, ctx.num_classes)
        self.register_buffer("zipf", 1.0 / torch.arange(1, ctx.num_classes + 1, dtype=torch.float32),
                             persistent=False)

    def loss(self, out: Outputs, target: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        logits = out.logits.float()
        ce = F.cross_entropy(logits, target)
        weak_logits = self.fc(self.norm(out.blocks[0].float()))
        t = uskd_terms(logits, weak_logits, target, self.zipf)
        uskd = self.alpha * t["target"] + self.beta * t["non_target"] + self.mu * t["weak"]
        parts = {"ce_cls": ce.detach(), "uskd": uskd.detach(), **{f"uskd_{k}": v.detach() for k, v in t.items()}}
        return ce + uskd, parts


@register_objective("uskd", USKDConfig, paper="USKD, ICCV 2023, arXiv 2303.13005")
def build(cfg: USKDConfig, ctx: BuildContext) -> USKD:
    return USKD(cfg, ctx)
