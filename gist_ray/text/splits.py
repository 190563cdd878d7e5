"""Text splits: untokenised rows (:class:`RawSplit`) and tokenised rows (:class:`TextSplit`).

A :class:`TextSplit` is the text counterpart of :class:`gist_ray.data.Split`: it holds every row's token ids
(one flat array plus offsets: nothing padded is stored), labels and, for STS-B-like tasks, the gold scores.
``split.inputs(idx)`` turns row indices into the model's keyword inputs, padded to the longest row of that
batch (dynamic padding); that function is the whole batch interface the training loop needs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

TOKENIZE_CHUNK = 2048  # rows per tokenizer call (fast tokenizers batch internally)


@dataclass
class RawSplit:
    """Untokenised rows of one split: one or two texts per row, labels (-1: unlabelled), optional scores."""

    text_a: list[str]
    text_b: list[str] | None
    labels: np.ndarray
    num_classes: int
    scores: np.ndarray | None = None
    name: str = ""
    task: str = ""

    def __post_init__(self) -> None:
        n = len(self.text_a)
        self.labels = np.ascontiguousarray(self.labels, dtype=np.int64)
        if self.text_b is not None and len(self.text_b) != n:
            raise ValueError(f"split {self.name!r}: {n} first texts but {len(self.text_b)} second texts")
        if len(self.labels) != n or (self.scores is not None and len(self.scores) != n):
            raise ValueError(f"split {self.name!r}: {n} rows but {len(self.labels)} labels")
        if n == 0:
            raise ValueError(f"split {self.name!r} of {self.task!r} is empty")
        if int(self.labels.min()) < -1 or int(self.labels.max()) >= self.num_classes:
            raise ValueError(f"split {self.name!r}: labels must be in [0, {self.num_classes}) or -1 (unlabelled), "
                             f"got [{int(self.labels.min())}, {int(self.labels.max())}]")

    def __len__(self) -> int:
        return len(self.text_a)


@dataclass
class TextSplit:
    """Tokenised rows: flat token ids with offsets, optional segment ids, labels, optional gold scores."""

    ids: torch.Tensor  # int32, all rows concatenated
    offsets: torch.Tensor  # int64, N + 1: row i is ids[offsets[i]:offsets[i+1]]
    type_ids: torch.Tensor | None  # uint8 segment ids aligned with ids (None: the tokenizer has none)
    labels: torch.Tensor  # int64 class indices, -1 for unlabelled rows (GLUE test)
    num_classes: int
    pad_id: int
    name: str = ""
    task: str = ""
    scores: torch.Tensor | None = None  # float32 gold scores (STS-B), compared with the predicted bin's value

    def __post_init__(self) -> None:
        n = len(self.labels)
        if len(self.offsets) != n + 1 or int(self.offsets[-1]) != len(self.ids):
            raise ValueError(f"split {self.name!r}: offsets do not match {n} rows and {len(self.ids)} tokens")
        if n == 0:
            raise ValueError(f"split {self.name!r} is empty")
        if bool((self.offsets[1:] <= self.offsets[:-1]).any()):
            raise ValueError(f"split {self.name!r}: every row needs at least one token")
        if self.type_ids is not None and len(self.type_ids) != len(self.ids):
            raise ValueError(f"split {self.name!r}: {len(self.type_ids)} segment ids for {len(self.ids)} tokens")

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def labelled(self) -> bool:
        return bool((self.labels >= 0).all())

    def lengths(self) -> torch.Tensor:
        return self.offsets[1:] - self.offsets[:-1]

    def inputs(self, idx: torch.Tensor | Sequence[int], pad_to_multiple_of: int = 1) -> dict[str, torch.Tensor]:
        """``input_ids``, ``attention_mask`` (and ``token_type_ids``) of rows ``idx``, right-padded to their
        longest row (rounded up to ``pad_to_multiple_of``: fewer distinct shapes for torch.compile), as int64 CPU
        tensors ready for ``model(**inputs)``."""
        rows = np.asarray(idx.cpu() if isinstance(idx, torch.Tensor) else idx, dtype=np.int64)
        offsets = self.offsets.numpy()
        starts, lens = offsets[rows], offsets[rows + 1] - offsets[rows]
        width = -(-int(lens.max()) // pad_to_multiple_of) * pad_to_multiple_of
        pos = np.arange(width)[None, :]
        mask = pos < lens[:, None]
        flat = starts[:, None] + np.minimum(pos, lens[:, None] - 1)
        out = {
            "input_ids": torch.from_numpy(np.where(mask, self.ids.numpy()[flat], self.pad_id).astype(np.int64)),
            "attention_mask": torch.from_numpy(mask.astype(np.int64)),
        }
        if self.type_ids is not None:
            out["token_type_ids"] = torch.from_numpy(np.where(mask, self.type_ids.numpy()[flat], 0).astype(np.int64))
        return out


def tokenizer_has_segments(tokenizer: Any) -> bool:
    return "token_type_ids" in getattr(tokenizer, "model_input_names", ())


def tokenize_arrays(raw: RawSplit, tokenizer: Any, max_length: int) -> dict[str, np.ndarray]:
    """Tokenise every row (pairs truncated longest-first to ``max_length``) into flat numpy arrays."""
    segments = tokenizer_has_segments(tokenizer)
    ids: list[np.ndarray] = []
    types: list[np.ndarray] = []
    lengths: list[int] = []
    for lo in range(0, len(raw), TOKENIZE_CHUNK):
        a = raw.text_a[lo : lo + TOKENIZE_CHUNK]
        b = raw.text_b[lo : lo + TOKENIZE_CHUNK] if raw.text_b is not None else None
        enc = tokenizer(a, b, truncation=True, max_length=max_length, return_attention_mask=False,
                        return_token_type_ids=segments)
        for k, row in enumerate(enc["input_ids"]):
            if not row:
                raise ValueError(f"split {raw.name!r} of {raw.task!r}: row {lo + k} tokenises to nothing")
            ids.append(np.asarray(row, dtype=np.int32))
            lengths.append(len(row))
            if segments:
                types.append(np.asarray(enc["token_type_ids"][k], dtype=np.uint8))
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    arrays = {"ids": np.concatenate(ids), "offsets": offsets, "labels": raw.labels}
    if segments:
        arrays["type_ids"] = np.concatenate(types)
    if raw.scores is not None:
        arrays["scores"] = np.ascontiguousarray(raw.scores, dtype=np.float32)
    return arrays


def pad_id_of(tokenizer: Any) -> int:
    pad = getattr(tokenizer, "pad_token_id", None)
    if pad is None:
        raise ValueError(f"tokenizer {type(tokenizer).__name__} has no pad token; set one before tokenising")
    return int(pad)


def split_from_arrays(arrays: dict[str, np.ndarray], num_classes: int, pad_id: int, name: str = "",
                      task: str = "") -> TextSplit:
    """A :class:`TextSplit` over the arrays of :func:`tokenize_arrays` (or of a cache entry)."""

    def t(key: str) -> torch.Tensor | None:
        return torch.from_numpy(np.ascontiguousarray(arrays[key])) if key in arrays else None

    return TextSplit(ids=t("ids"), offsets=t("offsets"), type_ids=t("type_ids"), labels=t("labels"),
                     num_classes=num_classes, pad_id=pad_id, name=name, task=task, scores=t("scores"))


def tokenize(raw: RawSplit, tokenizer: Any, max_length: int) -> TextSplit:
    """Tokenise a :class:`RawSplit` in memory (no cache; see :mod:`gist_ray.text.tokenize_cache`)."""
    return split_from_arrays(tokenize_arrays(raw, tokenizer, max_length), raw.num_classes, pad_id_of(tokenizer),
                             raw.name, raw.task)
