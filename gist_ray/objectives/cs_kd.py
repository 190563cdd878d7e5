"""CS-KD, class-wise self-knowledge distillation (Yun et al., CVPR 2020, arXiv 2003.13964): the prediction on
an image is pulled towards the prediction on another image of the same class.

Reference: alinlab/cs-kd, ``train.py`` (``KDLoss``, the ``--cls`` branch of ``train``) and ``datasets.py``
(``PairBatchSampler``). A batch is B anchors followed by B partners, partner ``i`` drawn uniformly from the
training images of anchor ``i``'s class (possibly itself, as in the reference); :mod:`gist_ray.data.pairs`
builds such batches because this objective declares ``pairs``. The anchors are forwarded with gradient, the
partners after them without (``torch.no_grad``, still in training mode); the loss is::

    L = CE(z_anchor, y) + lam * T^2 * KL(softmax(z_partner / T) || softmax(z_anchor / T))

(``KLDivLoss(reduction="sum") / B``) with the reference's defaults ``T = 4`` (``--temp``), ``lam = 1``
(``--lamda``). ``train.batch_size`` counts anchors, like the reference's ``--batch-size``; ``train/acc`` is the
anchors' accuracy, as the reference reports it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from gist_ray.objectives.base import BuildContext, Forward, Needs, Objective, Step, register_objective
from gist_ray.typed_config import setting


@dataclass
class CSKDConfig:
    """CS-KD's knobs with the reference's defaults."""

    temperature: float = setting(4.0, gt=0.0, aliases=("T", "temp"))
    lam: float = setting(1.0, ge=0.0, aliases=("lambda", "lamda"), doc="weight of the class-wise KD term")


def class_wise_kd(logits: Tensor, partner_logits: Tensor, temperature: float) -> Tensor:
    """The reference's ``KDLoss``: ``T^2 * sum KL(softmax(partner / T) || softmax(logits / T)) / B``."""
    log_p = F.log_softmax(logits / temperature, -1)
    q = F.softmax(partner_logits / temperature, -1)
    return F.kl_div(log_p, q, reduction="sum") * temperature**2 / logits.shape[0]


class CSKD(Objective):
    def __init__(self, cfg: CSKDConfig, ctx: BuildContext) -> None:
        super().__init__(Needs(pairs=True), ctx.net)
        self.temperature, self.lam = cfg.temperature, cfg.lam

    def step(self, forward: Forward, x: Tensor, y: Tensor) -> Step:
        if len(y) % 2:
            raise ValueError(f"cs_kd: a batch is anchors then partners, so its size must be even, got {len(y)}")
        b = len(y) // 2
        logits, _ = forward(x[:b])
        with torch.no_grad():
            partner, _ = forward(x[b:])
        ce = F.cross_entropy(logits.float(), y[:b])
        kd = class_wise_kd(logits.float(), partner.float().detach(), self.temperature)
        return Step(ce + self.lam * kd, {"ce_cls": ce.detach(), "cls_kd": kd.detach()}, logits, y[:b])


@register_objective("cs_kd", CSKDConfig, paper="CS-KD, CVPR 2020, arXiv 2003.13964")
def build(cfg: CSKDConfig, ctx: BuildContext) -> CSKD:
    return CSKD(cfg, ctx)
