"""GIST's learnable token inside a Hugging Face text encoder carrying any text PEFT method.

The token joins the sequence once the embeddings are computed, as in the official ViT code (right after [CLS],
after position embeddings and their dropout):

- BERT family: a forward hook on ``embeddings`` inserts it at index 1, after [CLS] / ``<s>``. The embedding
  output already holds word + position + segment embeddings, LayerNorm and dropout, so the token carries no
  position or segment embedding of its own, and the text keeps its pretrained positions 0..L-1 (nothing shifts).
  The attention mask is extended with a 1 at the token's index, so every text token attends to it and it to
  them, while padding stays masked for both.
- T5: no absolute positions exist (a relative position bias is computed inside attention from sequence
  indices), and there is no [CLS]. A placeholder id takes index 0 of the input; a forward pre-hook on the first
  block replaces that row by the token, i.e. after the embedding dropout, as on a ViT. At index 0 the token
  shifts every text token by one, which leaves every text-to-text relative distance unchanged.

The [CLS]-side representation is the first token's output (BERT family) or the masked mean over the text tokens'
outputs (T5, which has no [CLS]; the Gist rows are excluded). The Gist output (mean over its ``length`` rows)
goes through the same head. Training mode returns ``(cls_logits, gist_logits)``; evaluation returns
``cls_logits`` only; with ``enabled=False`` the encoder runs untouched and training returns ``(logits, None)``,
exactly like :class:`gist_ray.gist.GistModel`, so :func:`gist_ray.losses.gist_objective` applies unchanged.
"""

from __future__ import annotations

import torch
from torch import nn

from gist_ray.gist.model import GistToken
from gist_ray.text.families import TextFamily, family_of


class ClassificationHead(nn.Module):
    """AdapterHub's default classification head (adapter-hub/adapters, ``src/adapters/heads/base.py``,
    ``ClassificationHead`` with ``layers=2``): dropout, dense + tanh, dropout, linear; weights N(0, std), zero
    biases (the backbone's ``_init_weights``). One head for every family; a pretrained BERT pooler is not used."""

    def __init__(self, hidden: int, num_classes: int, dropout: float, std: float) -> None:
        super().__init__()
        self.drop1 = nn.Dropout(dropout)
        self.dense = nn.Linear(hidden, hidden)
        self.drop2 = nn.Dropout(dropout)
        self.out = nn.Linear(hidden, num_classes)
        for lin in (self.dense, self.out):
            nn.init.normal_(lin.weight, std=std)
            nn.init.zeros_(lin.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.drop2(torch.tanh(self.dense(self.drop1(x)))))


def head_defaults(encoder: nn.Module, family: TextFamily) -> tuple[float, float]:
    """(dropout, init std) of the head as AdapterHub / the backbone would pick them."""
    cfg = encoder.config
    dropout = getattr(cfg, "classifier_dropout", None)
    if dropout is None:
        dropout = getattr(cfg, "hidden_dropout_prob", None)
    if dropout is None:
        dropout = getattr(cfg, "dropout_rate", 0.0)
    std = getattr(cfg, "initializer_range", None)
    if std is None:  # T5: factor * d_model^-0.5, as its _init_weights does for classification heads
        std = float(getattr(cfg, "initializer_factor", 1.0)) * family.hidden_size(encoder) ** -0.5
    return float(dropout), float(std)


class TextGistModel(nn.Module):
    """``backbone`` (a text encoder, method already applied) plus a classification head and an optional Gist
    token. ``forward(input_ids, attention_mask, token_type_ids=None)``."""

    def __init__(self, backbone: nn.Module, num_classes: int, enabled: bool = True, length: int = 1,
                 init_range: float = 0.5, dropout: float = 0.1, head_dropout: float | None = None) -> None:
        super().__init__()
        self.backbone = backbone
        self.family = family_of(backbone)
        hidden = self.family.hidden_size(backbone)
        drop, std = head_defaults(backbone, self.family)
        self.head = ClassificationHead(hidden, num_classes, drop if head_dropout is None else head_dropout, std)
        self.enabled = enabled
        self.at = self.family.gist_at
        self.gist: GistToken | None = None
        if not enabled:
            return
        self.gist = GistToken(hidden, length, init_range, dropout)
        if self.family.name == "t5":
            backbone.encoder.block[0].register_forward_pre_hook(self._replace_placeholder, with_kwargs=True)
        else:
            backbone.embeddings.register_forward_hook(self._insert_after_embeddings)

    @property
    def length(self) -> int:
        return self.gist.length if self.gist is not None else 0

    def _insert_after_embeddings(self, module: nn.Module, args: tuple, out: torch.Tensor) -> torch.Tensor:
        return self.gist.insert(out, self.at)

    def _replace_placeholder(self, module: nn.Module, args: tuple, kwargs: dict):
        hidden = args[0] if args else kwargs["hidden_states"]
        at, n = self.at, self.gist.length
        hidden = self.gist.insert(torch.cat([hidden[:, :at], hidden[:, at + n :]], dim=1), at)
        if args:
            return (hidden, *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": hidden}

    def _extend(self, t: torch.Tensor, fill: int) -> torch.Tensor:
        pad = t.new_full((t.shape[0], self.gist.length), fill)
        return torch.cat([t[:, : self.at], pad, t[:, self.at :]], dim=1)

    def features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                 token_type_ids: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(the [CLS]-side representation, the Gist representation or None), before the head."""
        kwargs = {"token_type_ids": token_type_ids} if token_type_ids is not None else {}
        mask = attention_mask
        if self.gist is not None:
            mask = self._extend(attention_mask, 1)
            if self.family.name == "t5":  # a placeholder row, replaced by the token at the first block
                input_ids = self._extend(input_ids, int(self.backbone.config.pad_token_id or 0))
        h = self.backbone(input_ids=input_ids, attention_mask=mask, **kwargs).last_hidden_state
        n = self.length
        gist = h[:, self.at : self.at + n].mean(1) if n else None
        if self.family.pooling == "first":
            return h[:, 0], gist
        text = torch.cat([h[:, : self.at], h[:, self.at + n :]], dim=1) if n else h
        m = attention_mask.to(text.dtype).unsqueeze(-1)
        return (text * m).sum(1) / m.sum(1).clamp_min(1.0), gist

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None):
        cls, gist = self.features(input_ids, attention_mask, token_type_ids)
        cls_logits = self.head(cls)
        if not self.training:
            return cls_logits
        return cls_logits, (self.head(gist) if gist is not None else None)
