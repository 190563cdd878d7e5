"""Train and evaluate a :class:`~gist_ray.text.gist.TextGistModel` with the GIST objective, in plain PyTorch.

A small, self-contained trainer for the text side (tests, the text quickstart); the platform's Ray / MLflow
training loop takes text through the same two calls it uses here: ``split.inputs(idx)`` for a batch and
:func:`gist_ray.losses.gist_objective` on ``model(**inputs)`` (``gist_ray.train.loop``; docs/text.md, "How it works on the platform"). AdamW with no
decay on biases, norms and the Gist token; linear warmup then linear decay (Hugging Face's default schedule, which
ATTEMPT's Table 3 runs used); gradient clipping at 1.0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gist_ray.losses import gist_objective
from gist_ray.text.metrics import task_metrics
from gist_ray.text.splits import TextSplit


@dataclass
class GistLoss:
    """The GIST objective's knobs (the official constants by default)."""

    mu: float = 0.5
    lam: float = 0.75
    temperature: float = 3.0
    interaction: str = "bkl"
    t_squared: bool = False


def _to(inputs: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in inputs.items()}


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            skip = p.ndim <= 1 or name.startswith("gist.") or "norm" in name.lower()
            (no_decay if skip else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def linear_schedule(warmup: int, total: int):
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total - step) / max(1, total - warmup))

    return f


def train_text(model: nn.Module, train: TextSplit, *, epochs: int = 1, batch_size: int = 32, lr: float = 3e-4,
               weight_decay: float = 0.0, warmup_steps: int = 0, max_steps: int | None = None,
               loss: GistLoss | None = None, grad_clip: float = 1.0, seed: int = 0,
               device: torch.device | str | None = None,
               on_epoch_end: Callable[[int], None] | None = None) -> list[dict[str, float]]:
    """Train ``model`` in place; returns one record per step (``loss`` and every part the objective reports).
    ``on_epoch_end(epoch)`` (1-based) runs after each full epoch, e.g. to evaluate and keep the best state."""
    if not train.labelled:
        raise ValueError(f"split {train.name!r} has unlabelled rows; it cannot be trained on")
    loss = loss or GistLoss()
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model.to(device).train()
    steps_per_epoch = math.ceil(len(train) / batch_size)
    total = min(max_steps or steps_per_epoch * epochs, steps_per_epoch * epochs)
    opt = torch.optim.AdamW(param_groups(model, weight_decay), lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, linear_schedule(warmup_steps, total))
    params = [p for p in model.parameters() if p.requires_grad]
    history: list[dict[str, float]] = []
    gen = torch.Generator().manual_seed(seed)
    for epoch in range(epochs):
        order = torch.randperm(len(train), generator=gen)
        for i in range(0, len(order), batch_size):
            if len(history) >= total:
                return history
            idx = order[i : i + batch_size]
            y = train.labels[idx].to(device)
            cls_logits, gist_logits = model(**_to(train.inputs(idx), device))
            value, parts = gist_objective(cls_logits, gist_logits, y, mu=loss.mu, lam=loss.lam,
                                          temperature=loss.temperature, interaction=loss.interaction,
                                          t_squared=loss.t_squared)
            opt.zero_grad(set_to_none=True)
            value.backward()
            if grad_clip > 0:
                nn.utils.clip_grad_norm_(params, grad_clip)
            opt.step()
            sched.step()
            record = {"step": float(len(history) + 1), "loss": float(value.detach())}
            record.update({k: float(v) for k, v in parts.items()})
            if not math.isfinite(record["loss"]):
                raise FloatingPointError(f"training loss became {record['loss']} at step {len(history) + 1}")
            history.append(record)
        if on_epoch_end is not None:
            on_epoch_end(epoch + 1)
            model.train()
    return history


@torch.no_grad()
def predict_logits(model: nn.Module, split: TextSplit, batch_size: int = 128,
                   device: torch.device | str | None = None) -> np.ndarray:
    """[CLS] logits of every row of ``split``, in row order (rows sorted by length inside, for less padding)."""
    device = torch.device(device or next(model.parameters()).device)
    was_training = model.training
    model.eval()
    order = torch.argsort(split.lengths())
    out = np.empty((len(split), 0), dtype=np.float32)
    chunks: list[np.ndarray] = []
    for i in range(0, len(order), batch_size):
        idx = order[i : i + batch_size]
        chunks.append(model(**_to(split.inputs(idx), device)).float().cpu().numpy())
    logits = np.concatenate(chunks) if chunks else out
    result = np.empty_like(logits)
    result[order.numpy()] = logits
    model.train(was_training)
    return result


def evaluate_text(model: nn.Module, split: TextSplit, metrics: tuple[str, ...], batch_size: int = 128,
                  device: torch.device | str | None = None) -> dict[str, Any]:
    """The task metrics of the [CLS] prediction over ``split``, plus its cross-entropy ``loss``."""
    logits = predict_logits(model, split, batch_size, device)
    labels = split.labels.numpy()
    scores = split.scores.numpy() if split.scores is not None else None
    out: dict[str, Any] = task_metrics(metrics, logits, labels, scores)
    out["loss"] = float(F.cross_entropy(torch.from_numpy(logits), split.labels))
    return out
