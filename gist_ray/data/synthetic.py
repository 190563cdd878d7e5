"""The built-in synthetic suite: small VTAB-like tasks rendered in memory, deterministic by seed.

Scenes hold 1-6 coloured objects (circle, square, triangle, bar, cross) on a noisy background. Each task labels
the same kind of scene differently, in the spirit of VTAB's groups:

- ``shapes``: one object; label = shape x colour family (15 classes)            (natural-like object class)
- ``count``: 1-6 objects; label = how many (6 classes)                           (Clevr/count-like)
- ``location``: one small object; label = cell of a 3x3 grid (9 classes)         (dSprites/location-like)
- ``orientation``: one bar; label = its angle in 8 bins over [0, pi) (8 classes) (dSprites/orientation-like)
- ``source``: the pretraining task of the ``vit_synth_*`` backbones: one salient object among 0-3 small
  distractors, six attribute labels (multi-head); it is never a fine-tuning target.

Splits ``train``, ``val``, ``test`` (sizes from the config) come from disjoint seeds; ``trainval`` is
``train`` + ``val`` (the VTAB-1k refit split).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
import torch

from gist_ray.data.base import DATASETS, Split

SHAPES = ("circle", "square", "triangle", "bar", "cross")
PALETTE = np.array(
    [[230, 40, 40], [40, 200, 60], [50, 90, 240], [240, 220, 40], [220, 60, 220], [40, 220, 230]], dtype=np.float32
)
COLOUR_FAMILY = (0, 1, 2, 0, 2, 1)  # red/yellow -> warm, green/cyan -> green, blue/magenta -> cool
DEFAULT_SIZE = 32


@dataclass
class Obj:
    shape: int
    colour: int
    cx: float
    cy: float
    r: float
    theta: float


def _mask(obj: Obj, xx: np.ndarray, yy: np.ndarray) -> np.ndarray:
    dx, dy = xx - obj.cx, yy - obj.cy
    c, s = np.cos(obj.theta), np.sin(obj.theta)
    u, v = dx * c + dy * s, -dx * s + dy * c
    r = obj.r
    name = SHAPES[obj.shape]
    if name == "circle":
        return u * u + v * v < r * r
    if name == "square":
        return (np.abs(u) < 0.8 * r) & (np.abs(v) < 0.8 * r)
    if name == "triangle":
        return (v > -0.8 * r) & (v < 0.8 * r) & (np.abs(u) < (0.8 * r - v) * 0.6)
    if name == "bar":
        return (np.abs(u) < r) & (np.abs(v) < 0.25 * r)
    return ((np.abs(u) < 0.28 * r) & (np.abs(v) < r)) | ((np.abs(v) < 0.28 * r) & (np.abs(u) < r))


def _render(objs: list[Obj], size: int, rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    bg = rng.uniform(0, 90, size=3).astype(np.float32)
    img = np.broadcast_to(bg[:, None, None], (3, size, size)).copy()
    img += rng.normal(0, 12, size=(3, size, size)).astype(np.float32)
    for o in objs:
        m = _mask(o, xx, yy)
        col = PALETTE[o.colour] + rng.normal(0, 12, size=3).astype(np.float32)
        img[:, m] = col[:, None]
    return np.clip(img, 0, 255).astype(np.uint8)


def _random_obj(rng: np.random.Generator, shape: int | None = None, r: tuple[float, float] = (0.12, 0.22),
                margin: float | None = None) -> Obj:
    rad = rng.uniform(*r)
    m = rad if margin is None else margin
    return Obj(
        shape=int(rng.integers(len(SHAPES))) if shape is None else shape,
        colour=int(rng.integers(len(PALETTE))),
        cx=float(rng.uniform(m, 1 - m)),
        cy=float(rng.uniform(m, 1 - m)),
        r=float(rad),
        theta=float(rng.uniform(0, np.pi)),
    )


def _scene_shapes(rng):
    o = _random_obj(rng, r=(0.18, 0.3))
    return [o], o.shape * 3 + COLOUR_FAMILY[o.colour]


def _scene_count(rng):
    n = int(rng.integers(1, 7))
    return [_random_obj(rng, r=(0.07, 0.11)) for _ in range(n)], n - 1


def _scene_location(rng):
    o = _random_obj(rng, r=(0.07, 0.1), margin=0.02)
    o.cx, o.cy = float(rng.uniform(0.04, 0.96)), float(rng.uniform(0.04, 0.96))
    return [o], int(min(o.cy * 3, 2)) * 3 + int(min(o.cx * 3, 2))


def _scene_orientation(rng):
    o = _random_obj(rng, shape=SHAPES.index("bar"), r=(0.25, 0.4), margin=0.4)
    return [o], int(o.theta / np.pi * 8) % 8


TASKS = {
    "shapes": (_scene_shapes, 15),
    "count": (_scene_count, 6),
    "location": (_scene_location, 9),
    "orientation": (_scene_orientation, 8),
}

# Source task: one salient object among 0-3 small distractors; six attribute heads.
SOURCE_HEADS = (len(SHAPES), len(PALETTE), 4, 3, 3, 4)  # shape, colour, object count, x-bin, y-bin, angle-bin


def _scene_source(rng):
    n = int(rng.integers(0, 4))
    objs = [_random_obj(rng, r=(0.05, 0.08)) for _ in range(n)]
    o = _random_obj(rng, r=(0.16, 0.3))
    objs.append(o)  # drawn last, fully visible
    labels = (o.shape, o.colour, n, int(min(o.cx * 3, 2)), int(min(o.cy * 3, 2)), int(o.theta / np.pi * 4) % 4)
    return objs, labels


SPLIT_OFFSET = {"train": 0, "val": 1, "test": 2}


def _seed(task: str, split: str, seed: int) -> int:
    return zlib.crc32(f"{task}/{split}/{seed}".encode())


def render_task(task: str, split: str, n: int, size: int = DEFAULT_SIZE, seed: int = 0):
    """(uint8 images N x 3 x size x size, labels) for ``task``; labels are N x 6 for ``source``."""
    scene = _scene_source if task == "source" else TASKS[task][0]
    rng = np.random.default_rng(_seed(task, split, seed))
    images = np.empty((n, 3, size, size), dtype=np.uint8)
    labels = []
    for i in range(n):
        objs, y = scene(rng)
        images[i] = _render(objs, size, rng)
        labels.append(y)
    return torch.from_numpy(images), torch.tensor(labels, dtype=torch.long)


@DATASETS.register("synthetic")
def load(cfg, split: str) -> Split:
    """A split of the built-in synthetic task ``cfg.task``."""
    if cfg.task not in TASKS:
        raise ValueError(f"data.task: unknown synthetic task {cfg.task!r}; known: {', '.join(TASKS)}")
    size = cfg.image_size or DEFAULT_SIZE
    if split == "trainval":
        a, b = load(cfg, "train"), load(cfg, "val")
        return Split(torch.cat([a.images, b.images]), torch.cat([a.labels, b.labels]), a.num_classes, split)
    sizes = {"train": cfg.n_train, "val": cfg.n_val, "test": cfg.n_test}
    if split not in sizes:
        raise ValueError(f"data split {split!r}: the synthetic suite has train, val, test, trainval")
    images, labels = render_task(cfg.task, split, sizes[split], size, cfg.seed)
    return Split(images, labels, TASKS[cfg.task][1], split)
