"""The trainable-parameter table of every registered method on one backbone (``gist-ray methods``).

Each method is built with its default configuration exactly as a run builds it (``build_model``'s two halves:
the backbone, random weights, made once and copied for each method, then ``attach``, Gist token enabled), and its
trainable parameters are split into method / token / head. By default the model is built on PyTorch's ``meta``
device: shapes only, no memory; ``device="cpu"`` builds real randomly initialised models (same numbers). The
backbone is made once because timm's initialisation runs even on ``meta`` (0.6 s for a Swin-B here, 18 times).
Methods not defined on the backbone's family (e.g. VPT on a Swin) get a row without counts.
"""

from __future__ import annotations

import copy

import torch

from gist_ray.backbones import backbone_family, create_backbone, vit_of
from gist_ray.config import GistConfig, from_dict
from gist_ray.methods import METHODS, method_families
from gist_ray.model import attach, trainable_counts


def methods_table(backbone: str, num_classes: int, device: str = "meta") -> list[dict]:
    """One row per registered method: ``method``, ``method_params``, ``token``, ``head``, ``total`` (counted on the
    built model), ``closed_form`` (the method's optional closed-form count, which must equal ``method_params``;
    None where the method gives none) and ``paper``; a
    method not defined on the backbone's family has ``method_params`` None."""
    rows = []
    fam = backbone_family(backbone)
    with torch.device(device):
        proto = create_backbone(backbone, num_classes, weights="none")
    for name in METHODS.names():
        spec = METHODS.get(name)
        cfg = from_dict(spec.config_cls, {}, "method")
        families = method_families(name, cfg)
        if fam not in families:
            rows.append(dict(method=name, method_params=None, token=None, head=None, total=None, closed_form=None,
                             paper=f"{spec.paper} [not on {fam}: {'/'.join(families)} only]"))
            continue
        with torch.device(device):
            model = attach(copy.deepcopy(proto), num_classes, name, {}, GistConfig(enabled=True))
        counts = trainable_counts(model)
        closed = spec.count(vit_of(model), cfg) if spec.count is not None else None
        rows.append(
            dict(
                method=name,
                method_params=counts["method"],
                token=counts["token"],
                head=counts["head"],
                total=counts["total"],
                closed_form=closed,
                paper=spec.paper,
            )
        )
    return rows


def format_methods_table(rows: list[dict]) -> str:
    """Aligned text: counts with thousands separators, totals also in millions; ``!`` marks a closed-form
    count that disagrees with the built model."""
    head = ("method", "method", "token", "head", "total", "total (M)", "paper")
    body = [
        (r["method"], "-", "-", "-", "-", "-", r["paper"])
        if r["method_params"] is None
        else (
            r["method"],
            f"{r['method_params']:,}" + ("" if r["closed_form"] in (None, r["method_params"]) else f" !{r['closed_form']:,}"),
            f"{r['token']:,}",
            f"{r['head']:,}",
            f"{r['total']:,}",
            f"{r['total'] / 1e6:.3f}",
            r["paper"],
        )
        for r in rows
    ]
    widths = [max(len(str(line[i])) for line in [head, *body]) for i in range(len(head))]
    left = {0, len(head) - 1}

    def fmt(line: tuple) -> str:
        cells = [str(c).ljust(w) if i in left else str(c).rjust(w) for i, (c, w) in enumerate(zip(line, widths))]
        return "  ".join(cells).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([fmt(head), rule, *map(fmt, body)])
