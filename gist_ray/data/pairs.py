"""Batches of same-class pairs, for objectives that declare ``Needs(pairs=True)`` (CS-KD).

As alinlab/cs-kd's ``PairBatchSampler`` (``datasets.py``): a batch of B anchor indices is followed by B
partner indices, partner ``i`` drawn uniformly from the training images of anchor ``i``'s class (the anchor
itself included, as in the reference). Partners come from the whole training split, also when a worker trains
on a shard of it. Drawing is vectorised (one sort of the labels at set-up, one random number per anchor).
"""

from __future__ import annotations

import torch
from torch import Tensor


class ClassPairs:
    """Same-class partners for anchor indices into ``labels``."""

    def __init__(self, labels: Tensor) -> None:
        labels = labels.detach().cpu().long()
        self.labels = labels
        self.by_class = torch.argsort(labels, stable=True)  # indices grouped by class
        counts = torch.bincount(labels)
        self.counts = counts
        self.starts = torch.cumsum(counts, 0) - counts

    def partners(self, anchors: Tensor, generator: torch.Generator) -> Tensor:
        """One same-class index per anchor (CPU tensors in, out)."""
        c = self.labels[anchors]
        n = self.counts[c]
        offset = (torch.rand(len(anchors), generator=generator, dtype=torch.float64) * n).long().clamp_(max=n - 1)
        return self.by_class[self.starts[c] + offset]

    def batch(self, anchors: Tensor, generator: torch.Generator) -> Tensor:
        """``anchors`` followed by their partners."""
        anchors = anchors.cpu()
        return torch.cat([anchors, self.partners(anchors, generator)])
