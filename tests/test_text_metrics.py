"""GLUE metrics against scikit-learn / scipy on fixed predictions, and the STS-B bins."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

sklearn_metrics = pytest.importorskip("sklearn.metrics")

from gist_ray.text import metrics as M  # noqa: E402

RNG = np.random.default_rng(0)
GOLD2, PRED2 = RNG.integers(0, 2, 200), RNG.integers(0, 2, 200)
GOLD3, PRED3 = RNG.integers(0, 3, 150), RNG.integers(0, 3, 150)


@pytest.mark.parametrize("pred,gold", [(PRED2, GOLD2), (PRED3, GOLD3), (GOLD2, GOLD2), (np.zeros(9, int), GOLD2[:9])])
def test_accuracy_and_mcc_match_sklearn(pred, gold):
    assert M.accuracy(pred, gold) == pytest.approx(sklearn_metrics.accuracy_score(gold, pred))
    assert M.matthews(pred, gold) == pytest.approx(sklearn_metrics.matthews_corrcoef(gold, pred), abs=1e-12)


@pytest.mark.parametrize("pred,gold", [(PRED2, GOLD2), (GOLD2, GOLD2), (np.zeros(8, int), GOLD2[:8]),
                                       (np.zeros(4, int), np.zeros(4, int))])
def test_f1_matches_sklearn(pred, gold):
    want = sklearn_metrics.f1_score(gold, pred, zero_division=0.0)
    assert M.f1_binary(pred, gold) == pytest.approx(want)


def test_correlations_match_scipy():
    x = RNG.normal(size=100)
    y = 0.6 * x + RNG.normal(size=100)
    ties = np.round(y * 2) / 2  # many ties: average ranks matter
    assert M.pearson(x, y) == pytest.approx(stats.pearsonr(x, y)[0])
    assert M.spearman(x, ties) == pytest.approx(stats.spearmanr(x, ties)[0])
    assert M.average_ranks(ties) == pytest.approx(stats.rankdata(ties))
    assert M.pearson(np.ones(5), x[:5]) == 0.0  # constant prediction: 0, as ATTEMPT's evaluation


def test_task_metrics_read_the_argmax_and_the_bin_value():
    gold_scores = np.array([0.0, 1.1, 2.5, 3.9, 5.0])
    bins = M.score_to_bin(gold_scores)
    assert bins.tolist() == [0, 6, 12, 20, 25]  # 1.1 -> 1.2, 2.5 -> 2.4 (ties round to even), 3.9 -> 4.0
    assert M.STSB_CLASSES == 26
    logits = np.eye(26)[bins]  # predict exactly the gold bins
    out = M.task_metrics(("pearson", "spearman"), logits, bins, gold_scores)
    assert out["pearson"] == pytest.approx(stats.pearsonr(M.bin_to_score(bins), gold_scores)[0])
    assert out["spearman"] == pytest.approx(1.0)
    cls = M.task_metrics(("acc", "f1", "mcc"), np.eye(2)[PRED2], GOLD2)
    assert cls == pytest.approx({"acc": sklearn_metrics.accuracy_score(GOLD2, PRED2),
                                 "f1": sklearn_metrics.f1_score(GOLD2, PRED2),
                                 "mcc": sklearn_metrics.matthews_corrcoef(GOLD2, PRED2)})


def test_unlabelled_rows_and_bad_scores_are_refused():
    with pytest.raises(ValueError, match="not public"):
        M.task_metrics(("acc",), np.zeros((2, 2)), np.array([-1, -1]))
    with pytest.raises(ValueError, match=r"\[0, 5.0\]"):
        M.score_to_bin(np.array([5.5]))
