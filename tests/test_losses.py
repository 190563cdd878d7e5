"""The GIST objective equals its formula on fixed logits, part by part."""

import math

import pytest
import torch
import torch.nn.functional as F

from gist_ray.losses import INTERACTIONS, gist_objective

CLS = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3]])
GIST = torch.tensor([[1.0, 1.0, 0.0], [-0.5, 0.7, 0.1]])
Y = torch.tensor([0, 2])


def softmax(row, T):
    e = [math.exp(v / T) for v in row]
    return [v / sum(e) for v in e]


def kl_by_hand(p_rows, q_rows):
    return sum(sum(p * math.log(p / q) for p, q in zip(pr, qr)) for pr, qr in zip(p_rows, q_rows)) / len(p_rows)


def ce_by_hand(logits, y):
    return sum(-math.log(softmax(row, 1.0)[t]) for row, t in zip(logits.tolist(), y.tolist())) / len(y)


@pytest.mark.parametrize("T", [1.0, 3.0])
@pytest.mark.parametrize("t_squared", [False, True])
def test_bidirectional_kl_objective_matches_formula(T, t_squared):
    mu, lam = 0.5, 0.75
    total, parts = gist_objective(CLS, GIST, Y, mu=mu, lam=lam, temperature=T, interaction="bkl", t_squared=t_squared)
    p = [softmax(r, T) for r in CLS.tolist()]
    q = [softmax(r, T) for r in GIST.tolist()]
    fwd, rev = kl_by_hand(p, q), kl_by_hand(q, p)
    ce_cls, ce_gist = ce_by_hand(CLS, Y), ce_by_hand(GIST, Y)
    inter = (fwd + rev) * (T**2 if t_squared else 1.0)
    assert parts["ce_cls"].item() == pytest.approx(ce_cls, rel=1e-5)
    assert parts["ce_gist"].item() == pytest.approx(ce_gist, rel=1e-5)
    assert parts["kl_cls_gist"].item() == pytest.approx(fwd, rel=1e-5)
    assert parts["kl_gist_cls"].item() == pytest.approx(rev, rel=1e-5)
    assert parts["interaction"].item() == pytest.approx(inter, rel=1e-5)
    assert total.item() == pytest.approx(ce_cls + mu * ce_gist + lam * inter, rel=1e-5)
    assert fwd != pytest.approx(rev)  # the two directions really differ on these logits


def test_temperature_softens():
    _, hot = gist_objective(CLS, GIST, Y, temperature=1.0)
    _, soft = gist_objective(CLS, GIST, Y, temperature=10.0)
    assert soft["interaction"] < hot["interaction"]


def test_gist_off_is_plain_cross_entropy():
    total, parts = gist_objective(CLS, None, Y, mu=0.5, lam=0.75)
    assert total.item() == pytest.approx(F.cross_entropy(CLS, Y).item())
    assert set(parts) == {"ce_cls"}


def test_alternative_interactions_match_definitions():
    T = 2.0
    lc, lg = F.log_softmax(CLS / T, -1), F.log_softmax(GIST / T, -1)
    pc, pg = lc.exp(), lg.exp()
    m = (pc + pg) / 2
    expected = {
        "fkl": (pc * (lc - lg)).sum(-1).mean(),
        "rkl": (pg * (lg - lc)).sum(-1).mean(),
        "mse": ((pc - pg) ** 2).sum(-1).mean(),
        "cosine": (1 - F.cosine_similarity(pc, pg, dim=-1)).mean(),
        "js": 0.5 * ((pc * (lc - m.log())).sum(-1) + (pg * (lg - m.log())).sum(-1)).mean(),
    }
    for name, value in expected.items():
        v, _ = INTERACTIONS.get(name)(CLS, GIST, T)
        assert v.item() == pytest.approx(value.item(), rel=1e-5), name
    assert set(expected) | {"bkl"} == set(INTERACTIONS.names())


def test_identical_distributions_interact_at_zero():
    for name in INTERACTIONS.names():
        v, _ = INTERACTIONS.get(name)(CLS, CLS.clone(), 3.0)
        assert abs(v.item()) < 1e-6, name
