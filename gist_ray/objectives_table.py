"""Trainable parameters of one PEFT method under every registered objective (``gist-ray methods``-style).

GIST's Table 11 compares objectives on one method at (roughly) one budget; BYOT's shallow classifiers and
USKD's weak classifier add trainable parameters that never predict. Each row builds the model as a run does
(``build_model``, default knobs, random weights), on the ``meta`` device by default (shapes only: seconds for
ViT-B), and splits its trainable parameters into method / token / head / objective.
"""

from __future__ import annotations

import torch

from gist_ray.config import GistConfig
from gist_ray.model import PARTS, build_model, trainable_counts
from gist_ray.objectives import OBJECTIVES


def objectives_table(backbone: str, num_classes: int, method: str = "gist_adapter", device: str = "meta") -> list[dict]:
    """One row per objective: ``name``, the parts of :data:`gist_ray.model.PARTS`, ``total``, ``paper``."""
    rows = []
    for name in OBJECTIVES.names():
        with torch.device(device):
            model = build_model(backbone, num_classes, method, {}, GistConfig(enabled=True), weights="none",
                                objective=name)
        counts = trainable_counts(model)
        rows.append({"name": name, **{p: counts[p] for p in PARTS}, "total": counts["total"],
                     "paper": OBJECTIVES.get(name).paper})
    return rows


def format_objectives_table(rows: list[dict]) -> str:
    """Aligned text, counts with thousands separators, totals also in millions."""
    head = ("objective", *PARTS, "total", "total (M)", "paper")
    body = [(r["name"], *(f"{r[p]:,}" for p in PARTS), f"{r['total']:,}", f"{r['total'] / 1e6:.3f}", r["paper"])
            for r in rows]
    widths = [max(len(str(line[i])) for line in [head, *body]) for i in range(len(head))]
    left = {0, len(head) - 1}

    def fmt(line: tuple) -> str:
        return "  ".join(str(c).ljust(w) if i in left else str(c).rjust(w)
                         for i, (c, w) in enumerate(zip(line, widths))).rstrip()

    return "\n".join([fmt(head), "  ".join("-" * w for w in widths), *map(fmt, body)])
