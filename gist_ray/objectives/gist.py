"""GIST (Ruan et al., arXiv 2312.07255): ``CE(cls) + mu * CE(gist) + lambda * I(cls, gist; T)``.

Reference: JCruan519/GIST, ``train.py`` (the loss) and ``models/vision_transformer.py`` (the token). The loss
itself is :func:`gist_ray.losses.gist_objective`; this file makes it the default objective. Its knobs stay under
``gist.*`` (``gist.mu``, ``gist.lam``, ``gist.T``, ``gist.interaction``, ``gist.t_squared``) as before, and
``gist.enabled=false`` makes it plain CE on the [CLS] logits, as it always did. It needs the Gist token; it
adds ``agreement`` (how often the [CLS] and Gist argmax agree) to the parts it reports.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from gist_ray.losses import gist_objective
from gist_ray.objectives.base import BuildContext, Needs, Objective, Outputs, register_objective


@dataclass
class GistObjectiveConfig:
    """No knobs here: GIST's live under ``gist.*``."""


class GistObjective(Objective):
    def __init__(self, ctx: BuildContext) -> None:
        super().__init__(Needs(gist_token=True), ctx.net)
        g = ctx.gist
        self.mu, self.lam, self.temperature = g.mu, g.lam, g.temperature
        self.interaction, self.t_squared = g.interaction, g.t_squared

    def loss(self, out: Outputs, target: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        total, parts = gist_objective(out.logits, out.gist_logits, target, mu=self.mu, lam=self.lam,
                                      temperature=self.temperature, interaction=self.interaction,
                                      t_squared=self.t_squared)
        if out.gist_logits is not None:
            parts["agreement"] = (out.logits.argmax(-1) == out.gist_logits.argmax(-1)).float().mean().detach()
        return total, parts


@register_objective("gist", GistObjectiveConfig, gist_token=True, paper="GIST, arXiv 2312.07255")
def build(cfg: GistObjectiveConfig, ctx: BuildContext) -> GistObjective:
    return GistObjective(ctx)
