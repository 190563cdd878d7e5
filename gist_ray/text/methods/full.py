"""Full fine-tuning: every encoder parameter trains (the paper's Table 3 "FT" row)."""

from dataclasses import dataclass

from gist_ray.text.methods.base import register_text_method


@dataclass
class FullConfig:
    """No knobs: everything is unfrozen."""


@register_text_method("full", FullConfig, count=lambda enc, fam, cfg: sum(p.numel() for p in enc.parameters()),
                      paper="Full fine-tuning baseline")
def apply(encoder, family, cfg: FullConfig) -> None:
    for p in encoder.parameters():
        p.requires_grad_(True)
