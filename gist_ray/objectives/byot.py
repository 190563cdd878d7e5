"""BYOT, "Be Your Own Teacher" (Zhang et al., ICCV 2019, arXiv 1905.08094): classifiers attached to shallow
blocks learn from the labels and from the deepest classifier, which teaches them.

Reference: the authors' code, ArchipLab-LinfengZhang/pytorch-self-distillation-final, ``train.py`` (the loss)
and ``resnet.py`` (the classifiers). Per step, with the deepest classifier's logits ``z`` and features ``F``
(both detached: the teacher gets no gradient from the distillation terms), and shallow classifier ``i``'s
logits ``z_i`` and features ``F_i``::

    L = CE(z, y) + sum_i [ alpha * SoftCE(z_i / T, softmax(z / T)) + (1 - alpha) * CE(z_i, y) ]
                 + beta * sum_{i but the deepest shallow one} || A_i(F_i) - F ||_2

with the reference's defaults ``T = 3``, ``alpha = 0.3`` (``loss_coefficient``), ``beta = 0.03``
(``feature_loss_coefficient``); ``SoftCE(a, q) = -mean_b sum_c q log softmax(a)`` (no T^2), ``|| . ||_2``
``torch.dist`` over the whole batch, ``A_i`` a linear adaptation layer (PyTorch's default init) to the deepest
features' width, absent for the deepest shallow classifier as in the reference loop (which skips ``index 1``).

On a transformer (the reference is a ResNet): a shallow classifier reads the pooled output of a block (ViT:
the [CLS] token; Swin: the grid mean) through a LayerNorm and a linear layer, and sits after blocks
``depth/4, depth/2, 3*depth/4`` of a ViT (3, 6, 9 of 12) or at the ends of every Swin stage but the last (the
ResNet's stages 1-3); ``objective.blocks`` (1-based) chooses others. The deepest features ``F`` are what the
head reads. The differences from the reference and their reasons are in docs/methods.md ("Objectives").
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gist_ray.errors import ConfigError
from gist_ray.objectives.base import BuildContext, Needs, Objective, Outputs, register_objective
from gist_ray.objectives.taps import backbone_depth, check_blocks, depth, head_width, quarter_blocks, widths
from gist_ray.typed_config import setting


@dataclass
class BYOTConfig:
    """BYOT's knobs with the authors' defaults."""

    temperature: float = setting(3.0, gt=0.0, aliases=("T",))
    alpha: float = setting(0.3, ge=0.0, le=1.0, doc="weight of the distillation term (reference: loss_coefficient)")
    beta: float = setting(0.03, ge=0.0, doc="weight of the feature term (reference: feature_loss_coefficient)")
    blocks: list[int] = field(default_factory=list)  # 1-based blocks with a shallow classifier; [] = quarters

    def check(self, where: str) -> None:
        if self.blocks and (min(self.blocks) < 1 or self.blocks != sorted(set(self.blocks))):
            raise ConfigError(f"{where}.blocks: 1-based block numbers, increasing, got {self.blocks}")

    def check_backbone(self, backbone: str, where: str) -> None:
        if self.blocks:
            check_blocks(self.blocks, backbone_depth(backbone), where, "blocks")


def soft_cross_entropy(logits: Tensor, teacher_probs: Tensor, temperature: float) -> Tensor:
    """The reference's ``CrossEntropy``: ``-mean_b sum_c q_c log softmax(logits / T)_c``."""
    return -(F.log_softmax(logits / temperature, -1) * teacher_probs).sum(-1).mean()


class BYOT(Objective):
    def __init__(self, cfg: BYOTConfig, ctx: BuildContext) -> None:
        net = ctx.net
        numbers = list(cfg.blocks) or quarter_blocks(net)
        check_blocks(numbers, depth(net), "objective", "blocks")
        super().__init__(Needs(blocks=tuple(b - 1 for b in numbers), head_input=True), net)
        self.numbers = numbers
        self.temperature, self.alpha, self.beta = cfg.temperature, cfg.alpha, cfg.beta
        ws = widths(net, numbers)
        self.norms = nn.ModuleList(nn.LayerNorm(w, eps=1e-6) for w in ws)
        self.classifiers = nn.ModuleList(nn.Linear(w, ctx.num_classes) for w in ws)
        teacher_w = head_width(net)
        # the deepest shallow classifier has no feature term (and no adaptation layer), as in the reference loop
        self.adapters = nn.ModuleDict({str(b): nn.Linear(w, teacher_w) for b, w in zip(numbers[:-1], ws[:-1])}
                                      if self.beta > 0 else {})

    def loss(self, out: Outputs, target: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        logits = out.logits.float()
        ce = F.cross_entropy(logits, target)
        parts: dict[str, Tensor] = {"ce_cls": ce.detach()}
        teacher = F.softmax(logits.detach() / self.temperature, -1)
        teacher_feature = out.head_input.detach().float()
        total = ce
        for k, (b, pooled) in enumerate(zip(self.numbers, out.blocks)):
            feature = self.norms[k](pooled.float())
            z = self.classifiers[k](feature)
            kd = soft_cross_entropy(z, teacher, self.temperature)
            ce_k = F.cross_entropy(z, target)
            total = total + self.alpha * kd + (1.0 - self.alpha) * ce_k
            parts.update({f"ce_block{b}": ce_k.detach(), f"kd_block{b}": kd.detach(),
                          f"acc_block{b}": (z.argmax(-1) == target).float().mean().detach()})
            if str(b) in self.adapters:
                feat = torch.dist(self.adapters[str(b)](feature), teacher_feature)
                total = total + self.beta * feat
                parts[f"feature_block{b}"] = feat.detach()
        return total, parts


@register_objective("byot", BYOTConfig, paper="BYOT, ICCV 2019, arXiv 1905.08094")
def build(cfg: BYOTConfig, ctx: BuildContext) -> BYOT:
    return BYOT(cfg, ctx)
