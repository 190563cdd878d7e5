"""BitFit (Ben Zaken, Goldberg & Ravfogel, "BitFit: Simple Parameter-efficient Fine-tuning for Transformer-based
Masked Language-models", ACL 2022, arXiv 2106.10199).

Reference: benzakenelad/BitFit, ``glue_evaluator.py`` (``BIAS_TERMS_DICT['all']``: every parameter named
``bias``). Only the bias terms of the backbone's weighted ops train (patch projection, norms, qkv, proj, fc1, fc2,
final norm: every bias of a timm ViT but the head's); no parameter is added, nothing is re-initialised. Biases of
modules added by other methods are not touched.
"""

from dataclasses import dataclass

from gist_ray.methods.base import backbone_ops, register_method, unwrap


@dataclass
class BitFitConfig:
    """No knobs."""


def _biases(vit) -> list:
    biases = (getattr(unwrap(getattr(parent, attr)), "bias", None) for parent, attr in backbone_ops(vit))
    return [b for b in biases if b is not None]


@register_method(
    "bitfit", BitFitConfig, count=lambda vit, cfg: sum(b.numel() for b in _biases(vit)), paper="BitFit, arXiv 2106.10199",
    families=("vit", "swin"),
)
def apply(vit, cfg: BitFitConfig) -> None:
    for b in _biases(vit):
        b.requires_grad_(True)
