"""SSF: Scaling & Shifting your Features (Lian et al., NeurIPS 2022, arXiv 2210.08823).

Reference: dongzelian/SSF, ``models/vision_transformer.py`` (``init_ssf_scale_shift``, ``ssf_ada`` and their uses in
``PatchEmbed``, ``Attention``, ``Mlp``, ``Block`` and ``forward_features``) and ``models/swin_transformer.py``. A
per-channel scale and shift ``y * gamma + beta`` on the output of every weighted op (patch projection and its norm,
each block's norm1 / qkv / proj / norm2 / fc1 / fc2, the final norm; on a Swin also each patch-merging norm and
reduction), before any dropout. Init: ``gamma ~ N(1, 0.02)``, ``beta ~ N(0, 0.02)``. No dropout. Trains: the
gammas and betas. ``merge`` folds each pair into the weights and bias of the op before it.
"""

from dataclasses import dataclass

import torch
from torch import nn

from gist_ray.methods.base import backbone_ops, merge_wrappers, register_method, unwrap
from gist_ray.typed_config import setting


@dataclass
class SSFConfig:
    init_std: float = setting(0.02, ge=0.0)


def out_channels(module: nn.Module) -> int:
    m = unwrap(module)
    if isinstance(m, nn.Linear):
        return m.out_features
    if isinstance(m, nn.Conv2d):
        return m.out_channels
    if isinstance(m, nn.LayerNorm):
        return m.normalized_shape[-1]
    raise TypeError(f"ssf: unsupported op {type(m).__name__}")


class ScaleShift(nn.Module):
    """``inner(x) * gamma + beta`` over the channel dimension (last for tokens, 1 for a conv's NCHW output)."""

    def __init__(self, inner: nn.Module, channels: int, std: float) -> None:
        super().__init__()
        self.inner = inner
        self.gamma = nn.Parameter(torch.empty(channels).normal_(1.0, std))
        self.beta = nn.Parameter(torch.empty(channels).normal_(0.0, std))
        self.conv = isinstance(unwrap(inner), nn.Conv2d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.inner(x)
        if self.conv:
            return y * self.gamma[:, None, None] + self.beta[:, None, None]
        return y * self.gamma + self.beta

    @torch.no_grad()
    def merged(self) -> nn.Module:
        """Scale the op's output rows (weight and bias), then add the shift to the bias."""
        m = self.inner
        if type(m) not in (nn.Linear, nn.Conv2d) and not isinstance(m, nn.LayerNorm):
            raise TypeError(f"cannot merge into a {type(m).__name__}: merge the method applied inside it first")
        if m.weight is None:
            raise TypeError("ssf: cannot merge into a LayerNorm without affine parameters")
        shape = (-1,) + (1,) * (m.weight.dim() - 1)
        m.weight.mul_(self.gamma.view(shape))
        if m.bias is None:
            m.bias = nn.Parameter(self.beta.clone(), requires_grad=False)
        else:
            m.bias.mul_(self.gamma).add_(self.beta)
        return m


def _count(vit, cfg: SSFConfig) -> int:
    return sum(2 * out_channels(getattr(p, a)) for p, a in backbone_ops(vit))


def merge(vit) -> None:
    merge_wrappers(vit, ScaleShift)


@register_method("ssf", SSFConfig, count=_count, merge=merge, paper="SSF, NeurIPS 2022, arXiv 2210.08823",
                 families=("vit", "swin"))
def apply(vit, cfg: SSFConfig) -> None:
    for parent, attr in backbone_ops(vit):
        op = getattr(parent, attr)
        setattr(parent, attr, ScaleShift(op, out_channels(op), cfg.init_std))
