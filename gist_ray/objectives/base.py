"""The objective registry: what a training step minimises, and what it needs from the model and the data.

An objective is an ``nn.Module`` built once per run from its typed config and the built backbone. It declares
its :class:`Needs` (the Gist token, pooled outputs of named blocks, the features the head reads, batches of
same-class pairs) and the run supplies exactly those: block outputs through forward hooks that exist only when
declared (:mod:`gist_ray.objectives.taps`), pairs through :mod:`gist_ray.data.pairs` only when declared. Its own
trainable modules (BYOT's shallow classifiers, USKD's weak classifier) live in it; the model builder attaches it
to the :class:`~gist_ray.gist.GistModel` as ``objective``, so DDP, the optimiser, checkpoints and the parameter
counts (part ``objective``) see them.

:meth:`Objective.step` turns one batch into a :class:`Step`: the loss, its detached parts (the loop logs every
part as ``train/<part>``, whatever its name), and the logits and labels ``train/acc`` is measured on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from torch import Tensor, nn

from gist_ray.objectives.taps import Taps
from gist_ray.registry import Registry

# one training forward of the (wrapped) model, autocast included: images -> (cls logits, gist logits or None)
Forward = Callable[[Tensor], tuple[Tensor, Optional[Tensor]]]


@dataclass(frozen=True)
class Needs:
    """What an objective needs beyond the [CLS] logits. ``blocks`` are 0-based indices over every transformer
    block in forward order (:func:`gist_ray.blocks.blocks`); each is supplied pooled to (B, width)."""

    gist_token: bool = False
    blocks: tuple[int, ...] = ()
    head_input: bool = False  # the features the classifier head reads (pre-logits)
    pairs: bool = False  # every batch is B anchors followed by B same-class partners


@dataclass
class Outputs:
    """What one training forward supplied."""

    logits: Tensor
    gist_logits: Optional[Tensor] = None
    blocks: list[Tensor] = field(default_factory=list)  # pooled outputs of Needs.blocks, in that order
    head_input: Optional[Tensor] = None


@dataclass
class Step:
    """One batch's loss, its parts (detached, for logging) and what ``train/acc`` is measured on."""

    loss: Tensor
    parts: dict[str, Tensor]
    logits: Tensor
    target: Tensor


class Objective(nn.Module):
    """Base class: one forward, then :meth:`loss`. Objectives that need more than one forward (CS-KD) override
    :meth:`step`."""

    def __init__(self, needs: Needs, net: nn.Module) -> None:
        super().__init__()
        self.needs = needs
        # hooks only where an objective declared block outputs or the head's input: plain runs get none
        self.taps = Taps(net, needs.blocks, needs.head_input) if needs.blocks or needs.head_input else None

    def outputs(self, forward: Forward, x: Tensor) -> Outputs:
        logits, gist_logits = forward(x)
        if self.taps is None:
            return Outputs(logits, gist_logits)
        blocks, head_input = self.taps.take()
        return Outputs(logits, gist_logits, blocks, head_input)

    def loss(self, out: Outputs, target: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        raise NotImplementedError

    def step(self, forward: Forward, x: Tensor, y: Tensor) -> Step:
        out = self.outputs(forward, x)
        total, parts = self.loss(out, y)
        return Step(total, parts, out.logits, y)


@dataclass(frozen=True)
class BuildContext:
    """What an objective is built from besides its own config."""

    net: nn.Module  # the backbone with its PEFT method applied (inside the GistModel)
    num_classes: int
    gist: Any  # the run's GistConfig: the gist objective's knobs (gist.mu, gist.lam, ...)


@dataclass(frozen=True)
class ObjectiveSpec:
    """A registered objective. ``gist_token``: whether it uses the Gist token (only ``gist`` does; a run with any
    other objective builds no token)."""

    name: str
    config_cls: type
    build: Callable[[Any, BuildContext], Objective]
    gist_token: bool = False
    paper: str = ""


OBJECTIVES: Registry[ObjectiveSpec] = Registry("objective")


def register_objective(name: str, config_cls: type, gist_token: bool = False, paper: str = "") -> Callable:
    """Decorator for a ``build(cfg, ctx) -> Objective`` function."""

    def deco(build: Callable[[Any, BuildContext], Objective]) -> Callable[[Any, BuildContext], Objective]:
        OBJECTIVES.add(name, ObjectiveSpec(name, config_cls, build, gist_token, paper))
        return build

    return deco
