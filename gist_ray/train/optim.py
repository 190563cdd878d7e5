"""The optimisation recipe: AdamW, weight-decay groups, and the learning-rate schedule.

Three schedules (``train.schedule``):

- ``step_cosine`` (default): linear warmup over ``warmup_epochs`` (fractional epochs allowed), then cosine decay
  to zero, updated every step.
- ``step_linear``: linear warmup, then linear decay to zero, per step (Hugging Face's default; ATTEMPT's Table 3
  runs: 500 warmup steps, ``train.warmup_steps``, which replaces ``warmup_epochs`` in either per-step schedule).
- ``epoch_cosine``: the official GIST recipe (JCruan519/GIST ``train.py``: timm's ``create_scheduler`` with
  ``--sched cosine``): the lr is set once per epoch, warmed up linearly from ``warmup_lr`` over
  ``warmup_epochs`` epochs, then follows a cosine from ``lr`` to ``min_lr`` over ``epochs - cooldown_epochs``
  epochs, and stays at ``min_lr`` for the last ``cooldown_epochs`` (timm's ``CosineLRScheduler`` with
  ``t_in_epochs=True``, ``warmup_prefix=False``, ``cycle_limit=1``: the official run is ``--epochs 100`` plus
  timm's default 10 cooldown epochs, 110 in all).

Weight decay follows timm's ``param_groups_weight_decay`` as the official code calls it: no decay on 1-d
parameters (biases, norms, scales), biases, ``pos_embed`` and ``cls_token``; everything else that trains decays,
the Gist token and prompts included.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn

from gist_ray.config import TrainConfig

NO_DECAY_NAMES = ("pos_embed", "cls_token", "dist_token")  # timm VisionTransformer.no_weight_decay()


def decays(name: str, p: torch.Tensor) -> bool:
    """Whether a trainable parameter gets weight decay (timm's rule, as in the official GIST code)."""
    return not (p.ndim <= 1 or name.endswith(".bias") or name.rsplit(".", 1)[-1] in NO_DECAY_NAMES)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (decay if decays(name, p) else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def step_cosine(warmup_steps: int, total_steps: int) -> Callable[[int], float]:
    """Linear warmup to the base lr, then cosine decay to zero (a factor of the base lr per step)."""

    def f(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return f


def step_linear(warmup_steps: int, total_steps: int) -> Callable[[int], float]:
    """Linear warmup to the base lr, then linear decay to zero (Hugging Face's ``linear`` schedule)."""

    def f(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))

    return f


def epoch_cosine_lr(epoch: int, t: TrainConfig) -> float:
    """The official recipe's lr during epoch ``epoch`` (0-based): timm's CosineLRScheduler at ``t = epoch``."""
    warmup = int(round(t.warmup_epochs))
    if epoch < warmup:
        return t.warmup_lr + epoch * (t.lr - t.warmup_lr) / warmup
    t_initial = t.epochs - t.cooldown_epochs
    if epoch >= t_initial:
        return t.min_lr
    return t.min_lr + 0.5 * (t.lr - t.min_lr) * (1 + math.cos(math.pi * epoch / t_initial))


def make_optimizer(model: nn.Module, t: TrainConfig, steps_per_epoch: int):
    """AdamW over ``model``'s trainable parameters and a per-step ``LambdaLR`` carrying the chosen schedule (its
    state dict is all a checkpoint needs to resume the schedule exactly)."""
    opt = torch.optim.AdamW(param_groups(model, t.weight_decay), lr=t.lr)
    if t.schedule == "epoch_cosine":
        factor = lambda step: epoch_cosine_lr(step // steps_per_epoch, t) / t.lr  # noqa: E731
    else:
        warmup = t.warmup_steps if t.warmup_steps is not None else int(round(t.warmup_epochs * steps_per_epoch))
        factor = (step_linear if t.schedule == "step_linear" else step_cosine)(warmup, steps_per_epoch * t.epochs)
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, factor)
