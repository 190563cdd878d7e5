"""GLUE metrics on fixed predictions, and the STS-B score <-> class-bin mapping.

Plain numpy (no scikit-learn at run time); the tests hold each against scikit-learn / scipy. Values are
fractions (accuracy 0.87, not 87); tables multiply by 100.

STS-B is trained as classification over score bins of width 0.2 (0.0, 0.2, ..., 5.0: 26 classes), the
text-to-text formulation of T5 that the paper's Table 3 setup (T5-base, following ATTEMPT) used, so the GIST
objective (softmax CE and the KL interaction) applies unchanged. The predicted score is the value of the
arg-max bin (what greedy decoding of the score string does); Pearson and Spearman are computed against the
*unrounded* gold scores (GLUE's definition).
"""

from __future__ import annotations

import numpy as np

STSB_BIN = 0.2
STSB_MAX = 5.0
STSB_CLASSES = int(round(STSB_MAX / STSB_BIN)) + 1  # 26


def score_to_bin(scores: np.ndarray) -> np.ndarray:
    """Gold similarity scores in [0, 5] -> class indices of the nearest 0.2 bin."""
    s = np.asarray(scores, dtype=np.float64)
    if s.size and (np.nanmin(s) < 0 or np.nanmax(s) > STSB_MAX or np.isnan(s).any()):
        raise ValueError(f"STS-B scores must be in [0, {STSB_MAX}], got [{np.nanmin(s)}, {np.nanmax(s)}]")
    return np.rint(s / STSB_BIN).astype(np.int64)


def bin_to_score(bins: np.ndarray) -> np.ndarray:
    return np.asarray(bins, dtype=np.float64) * STSB_BIN


def accuracy(pred: np.ndarray, gold: np.ndarray) -> float:
    pred, gold = np.asarray(pred), np.asarray(gold)
    return float((pred == gold).mean())


def f1_binary(pred: np.ndarray, gold: np.ndarray) -> float:
    """F1 of the positive class 1 (0 when there is no true or predicted positive, as scikit-learn)."""
    pred, gold = np.asarray(pred) == 1, np.asarray(gold) == 1
    tp = float((pred & gold).sum())
    denom = float(pred.sum() + gold.sum())
    return 0.0 if denom == 0 else 2.0 * tp / denom


def matthews(pred: np.ndarray, gold: np.ndarray) -> float:
    """Matthews correlation coefficient (multi-class form; 0 when undefined, as scikit-learn)."""
    pred, gold = np.asarray(pred), np.asarray(gold)
    classes = np.union1d(pred, gold)
    p = np.searchsorted(classes, pred)
    g = np.searchsorted(classes, gold)
    k = len(classes)
    conf = np.zeros((k, k), dtype=np.float64)
    np.add.at(conf, (g, p), 1.0)
    t, pk = conf.sum(1), conf.sum(0)
    c, s = np.trace(conf), conf.sum()
    cov_ytyp = c * s - t @ pk
    cov_ypyp = s * s - pk @ pk
    cov_ytyt = s * s - t @ t
    denom = np.sqrt(cov_ytyt * cov_ypyp)
    return 0.0 if denom == 0 else float(cov_ytyp / denom)


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation (0 when either side is constant, as ATTEMPT's evaluation does for NaN)."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    xc, yc = x - x.mean(), y - y.mean()
    denom = np.sqrt((xc * xc).sum() * (yc * yc).sum())
    return 0.0 if denom == 0 else float((xc * yc).sum() / denom)


def average_ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n with ties given their average rank (scipy.stats.rankdata's default)."""
    x = np.asarray(x)
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[order] = np.arange(1, len(x) + 1)
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=ranks)
    return sums[inverse] / counts[inverse]


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    return pearson(average_ranks(x), average_ranks(y))


# metric name -> fn(predicted classes, gold classes, predicted scores, gold scores)
METRICS = {
    "acc": lambda p, g, ps, gs: accuracy(p, g),
    "f1": lambda p, g, ps, gs: f1_binary(p, g),
    "mcc": lambda p, g, ps, gs: matthews(p, g),
    "pearson": lambda p, g, ps, gs: pearson(ps, gs),
    "spearman": lambda p, g, ps, gs: spearman(ps, gs),
}


def task_metrics(names: tuple[str, ...], logits: np.ndarray, labels: np.ndarray,
                 scores: np.ndarray | None = None) -> dict[str, float]:
    """Each metric in ``names`` for [CLS] ``logits`` (N x C) against ``labels`` (and gold ``scores`` for the
    correlation metrics, whose prediction is the arg-max bin's value)."""
    labels = np.asarray(labels)
    if (labels < 0).any():
        raise ValueError("cannot score a split without labels (GLUE test labels are not public; evaluate on dev "
                         "or an attempt_* split)")
    pred = np.asarray(logits).argmax(-1)
    needs_scores = {"pearson", "spearman"} & set(names)
    if needs_scores and scores is None:
        raise ValueError(f"metrics {sorted(needs_scores)} need the split's gold scores")
    pred_scores = bin_to_score(pred) if needs_scores else None
    return {n: METRICS[n](pred, labels, pred_scores, scores) for n in names}
