"""Plain fine-tuning: cross-entropy on the [CLS] logits, nothing else (the "Adapter" row of GIST's Table 11).

The same loss as ``gist`` with ``gist.enabled=false``; as its own objective it lets one sweep dimension
(``objective.name``) hold the baseline next to the self-distillation methods. No token, no hooks, no pairs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor

from gist_ray.objectives.base import BuildContext, Needs, Objective, Outputs, register_objective


@dataclass
class CEConfig:
    """No knobs."""


class CrossEntropy(Objective):
    def loss(self, out: Outputs, target: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        ce = F.cross_entropy(out.logits.float(), target)
        return ce, {"ce_cls": ce.detach()}


@register_objective("ce", CEConfig, paper="plain fine-tuning (cross-entropy)")
def build(cfg: CEConfig, ctx: BuildContext) -> CrossEntropy:
    return CrossEntropy(Needs(), ctx.net)
