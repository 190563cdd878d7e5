"""Linear probing: only the classification head trains; the encoder stays frozen."""

from dataclasses import dataclass

from gist_ray.text.methods.base import register_text_method


@dataclass
class LinearConfig:
    """No knobs: the encoder stays frozen."""


@register_text_method("linear", LinearConfig, count=lambda enc, fam, cfg: 0, paper="Linear probing baseline")
def apply(encoder, family, cfg: LinearConfig) -> None:
    return None
