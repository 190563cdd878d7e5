"""Full fine-tuning: every backbone parameter trains (GIST Table 2, "FT"; JCruan519/GIST ``optim_factory.py``,
``tuning_mode == 'FT'``). Nothing is added or re-initialised."""

from dataclasses import dataclass

from gist_ray.methods.base import register_method


@dataclass
class FullConfig:
    """No knobs: everything is unfrozen."""


def _count(vit, cfg) -> int:
    head = {id(p) for p in vit.get_classifier().parameters()}
    return sum(p.numel() for p in vit.parameters() if id(p) not in head)


@register_method("full", FullConfig, count=_count, paper="Full fine-tuning baseline", families=("vit", "swin"))
def apply(vit, cfg: FullConfig) -> None:
    for p in vit.parameters():
        p.requires_grad_(True)
