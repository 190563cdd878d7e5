"""Visual Prompt Tuning, shallow and deep (Jia et al., ECCV 2022, arXiv 2203.12119).

Reference: KMnP/vpt, ``src/models/vit_prompt/vit.py`` (``PromptedTransformer``: ``incorporate_prompt``,
``forward_deep_prompt``) and ``src/configs/config.py`` (``MODEL.PROMPT`` defaults: 5 tokens, dropout 0.0, no
projection, random init). Shallow: prompts enter before the first block and stay. Deep: each later block replaces
the previous block's prompts with its own. Init: U(+-sqrt(6 / (3 * patch_h * patch_w + d))) (the reference's
"xavier_uniform" bound, from the patch-embedding fan-in). Dropout on the prompts (default 0; the official
``demo.ipynb`` runs VPT-deep on VTAB with 0.1 and VPT-shallow without). Trains: the prompts. Per-dataset prompt
lengths of VPT-deep: ``search_spaces/vtab_vpt.yaml``.

Deliberate difference: prompts are appended at the end of the token sequence instead of right after [CLS]:
attention is permutation-equivariant once position embeddings are added, so the [CLS] output is the same, and
token indices used by other components (the Gist token right after [CLS]) do not move.
"""

import math
from dataclasses import dataclass

import torch
from torch import nn

from gist_ray.methods.base import dims, register_method, wrap_blocks
from gist_ray.typed_config import setting


@dataclass
class VPTConfig:
    length: int = setting(5, ge=1)
    dropout: float = setting(0.0, ge=0.0, lt=1.0)


class PromptBlock(nn.Module):
    """Adds (``replace=False``) or swaps in (``replace=True``) ``length`` prompt tokens, then runs the block."""

    def __init__(self, inner: nn.Module, prompts: nn.Parameter, replace: bool, dropout: float) -> None:
        super().__init__()
        self.inner = inner
        self.prompts = prompts
        self.replace = replace
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, **kw) -> torch.Tensor:
        p = self.drop(self.prompts.expand(x.shape[0], -1, -1)).to(x.dtype)
        base = x[:, : -p.shape[1]] if self.replace else x
        return self.inner(torch.cat([base, p], dim=1), **kw)


def _init_prompts(vit, length: int) -> nn.Parameter:
    d, _ = dims(vit)
    patch = vit.patch_embed.patch_size
    val = math.sqrt(6.0 / float(3 * patch[0] * patch[1] + d))  # VPT's xavier-uniform bound
    return nn.Parameter(torch.empty(1, length, d).uniform_(-val, val))


@register_method("vpt_shallow", VPTConfig, count=lambda vit, c: c.length * dims(vit)[0], paper="VPT, arXiv 2203.12119")
def apply_shallow(vit, cfg: VPTConfig) -> None:
    vit.blocks[0] = PromptBlock(vit.blocks[0], _init_prompts(vit, cfg.length), replace=False, dropout=cfg.dropout)


@register_method(
    "vpt_deep", VPTConfig, count=lambda vit, c: c.length * dims(vit)[0] * dims(vit)[1], paper="VPT, arXiv 2203.12119"
)
def apply_deep(vit, cfg: VPTConfig) -> None:
    wrap_blocks(vit, lambda i, b: PromptBlock(b, _init_prompts(vit, cfg.length), replace=i > 0, dropout=cfg.dropout))
