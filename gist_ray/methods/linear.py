"""Linear probing: only the classification head trains (GIST Table 2, "LP"; JCruan519/GIST ``optim_factory.py``,
``tuning_mode == 'linear_probe'``)."""

from dataclasses import dataclass

from gist_ray.methods.base import register_method


@dataclass
class LinearConfig:
    """No knobs: the backbone stays frozen."""


@register_method("linear", LinearConfig, count=lambda vit, cfg: 0, paper="Linear probing baseline",
                 families=("vit", "swin"))
def apply(vit, cfg: LinearConfig) -> None:
    return None
