"""GIST's learnable token around any timm VisionTransformer (or Swin Transformer) carrying any PEFT method.

On a ViT the token is inserted right after the prefix tokens ([CLS]) once position embeddings are added, as in
the official code, through a forward hook on ``norm_pre``: the backbone and the method are left untouched. On a
Swin it joins the last stage (see :mod:`gist_ray.gist.swin`). Both
the [CLS] and the (mean) Gist output go through the same head. Training mode returns
``(cls_logits, gist_logits)``; evaluation returns ``cls_logits`` only. With ``enabled=False`` the wrapper is a
pass-through: outputs are exactly the backbone's. On a ViT, block 0's ``qkv`` computes its input gradient for the
token rows only when that is exact (:mod:`gist_ray.gist.token_rows`; ``token_row_grad=False`` turns it off).
"""

from __future__ import annotations

import torch
from torch import nn

from gist_ray.backbones import vit_of
from gist_ray.blocks import family
from gist_ray.gist import swin, token_rows


class GistToken(nn.Module):
    """``length`` learnable tokens, initialised U(-init_range, init_range), with dropout."""

    def __init__(self, dim: int, length: int = 1, init_range: float = 0.5, dropout: float = 0.1) -> None:
        super().__init__()
        self.tokens = nn.Parameter(torch.empty(1, length, dim).uniform_(-init_range, init_range))
        self.drop = nn.Dropout(dropout)

    @property
    def length(self) -> int:
        return self.tokens.shape[1]

    def insert(self, x: torch.Tensor, at: int) -> torch.Tensor:
        tok = self.drop(self.tokens.expand(x.shape[0], -1, -1)).to(x.dtype)
        return torch.cat([x[:, :at], tok, x[:, at:]], dim=1)


class GistModel(nn.Module):
    """``backbone`` (a timm ViT, method already applied) plus an optional Gist token."""

    def __init__(
        self,
        backbone: nn.Module,
        enabled: bool = True,
        length: int = 1,
        init_range: float = 0.5,
        dropout: float = 0.1,
        token_row_grad: bool = True,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.enabled = enabled
        self.gist: GistToken | None = None
        # the training objective (gist_ray.objectives), attached by the model builder: its own trainable modules
        # (if any) live here so that DDP, the optimiser and checkpoints see them; forward() never calls it
        self.objective: nn.Module | None = None
        if not enabled:
            return
        vit = vit_of(backbone)
        self.swin = family(vit) == "swin"
        if self.swin:
            self.gist = GistToken(int(vit.num_features), length, init_range, dropout)
            swin.prepare(vit).register_forward_hook(self._swin_insert_hook)
            return
        self.gist = GistToken(vit.embed_dim, length, init_range, dropout)
        self.at = int(vit.num_prefix_tokens)
        if vit.global_pool not in ("token", "map"):
            # pooled heads (avg/max) must not average the Gist token into the [CLS]-side prediction
            vit.num_prefix_tokens += length
        vit.norm_pre.register_forward_hook(self._insert_hook)
        self._rows = token_rows.install(vit, self.at, length) if token_row_grad else None

    def _insert_hook(self, module: nn.Module, args: tuple, out: torch.Tensor) -> torch.Tensor:
        seq = self.gist.insert(out, self.at)
        token_rows.offer(self._rows, out, seq)
        return seq

    def _swin_insert_hook(self, module: nn.Module, args: tuple, out: torch.Tensor) -> torch.Tensor:
        return self.gist.insert(swin.to_sequence(out), 0)

    def forward(self, x: torch.Tensor):
        if self.gist is None:
            logits = self.backbone(x)
            return (logits, None) if self.training else logits
        vit = self.backbone
        tokens = vit.forward_features(x)
        if self.swin:
            cls_logits, gist_logits = swin.logits(vit, tokens, self.gist.length)
            return (cls_logits, gist_logits) if self.training else cls_logits
        cls_logits = vit.forward_head(tokens)
        if not self.training:
            return cls_logits
        g = tokens[:, self.at : self.at + self.gist.length].mean(1)
        gist_logits = vit.head(vit.head_drop(vit.fc_norm(g)))
        return cls_logits, gist_logits
