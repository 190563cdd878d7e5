"""Dataset registry and the decoded in-memory split every loader returns."""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable

import torch

from gist_ray.registry import Registry


@dataclass
class Split:
    """Decoded images (uint8, N x 3 x H x W) and integer labels of one split."""

    images: torch.Tensor
    labels: torch.Tensor
    num_classes: int
    name: str = ""

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 4 or self.images.shape[1] != 3:
            raise ValueError(f"split {self.name!r}: images must be uint8 N x 3 x H x W, got "
                             f"{self.images.dtype} {tuple(self.images.shape)}")
        if len(self.images) != len(self.labels):
            raise ValueError(f"split {self.name!r}: {len(self.images)} images but {len(self.labels)} labels")
        if len(self.labels) == 0:
            raise ValueError(f"split {self.name!r} is empty")
        if int(self.labels.min()) < 0 or int(self.labels.max()) >= self.num_classes:
            raise ValueError(f"split {self.name!r}: labels must be in [0, {self.num_classes}), got "
                             f"[{int(self.labels.min())}, {int(self.labels.max())}]")

    def __len__(self) -> int:
        return len(self.labels)

    def inputs(self, idx: torch.Tensor) -> dict[str, torch.Tensor]:
        """The model's keyword inputs for rows ``idx`` (CPU): ``{"x": uint8 images}`` (the loop resizes and
        normalises them on the device); the batch interface text splits share."""
        rows = idx.cpu().numpy() if isinstance(idx, torch.Tensor) else idx
        if self.images.device.type == "cpu":
            return {"x": torch.from_numpy(self.images.numpy()[rows])}
        return {"x": self.images[torch.as_tensor(rows)]}


# A loader maps (DataConfig, split name) -> Split.
Loader = Callable[..., Split]
DATASETS: Registry[Loader] = Registry("dataset")
# A validator maps (DataConfig, split name) -> None: cheap checks (list files, labels, image files exist)
# that raise ConfigError naming file and line; registered under the dataset's name, optional.
VALIDATORS: Registry[Callable[..., None]] = Registry("dataset validator")


# Splits this process has loaded, newest last: a Tune actor that runs one trial after another (actor reuse) loads
# each split once, not once per trial. Splits are never modified after loading; a few are kept.
_LOADED: OrderedDict[tuple, Split] = OrderedDict()
KEEP_LOADED = 4


def load_splits(cfg, names: list[str]) -> dict[str, Split]:
    """Load each named split of the dataset ``cfg.name`` (the same config and split again: the loaded one)."""
    loader = DATASETS.get(cfg.name)
    out = {}
    for name in names:
        key = (repr(dataclasses.astuple(cfg)), name)
        if key not in _LOADED:
            _LOADED[key] = loader(cfg, name)
            while len(_LOADED) > KEEP_LOADED:
                _LOADED.popitem(last=False)
        _LOADED.move_to_end(key)
        out[name] = _LOADED[key]
    return out


def validate_splits(cfg, names: list[str]) -> None:
    """Check the named splits of ``cfg.name`` without decoding images (no-op for datasets without a validator)."""
    if cfg.name in VALIDATORS:
        check = VALIDATORS.get(cfg.name)
        for name in names:
            if name:
                check(cfg, name)


def preflight(cfg, names: list[str]) -> None:
    """Before any trial starts: check the splits, and for on-disk datasets decode them into the cache.

    A missing list file, a bad label or a corrupt image raises here, in the driver, naming the file and line;
    the trials then read the decoded cache instead of decoding again.
    """
    names = [n for n in names if n]
    validate_splits(cfg, names)
    if cfg.name in VALIDATORS:
        load_splits(cfg, names)
