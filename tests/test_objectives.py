"""Objectives: one table row each, run through shared checks (what they report, which hooks exist, which
parameters train, counts), plus each loss against a hand computation and the behaviour their references fix."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from conftest import TINY_OVERRIDES
from gist_ray.config import GistConfig, Variants, build_config
from gist_ray.errors import ConfigError
from gist_ray.losses import gist_objective
from gist_ray.model import build_model, trainable_counts, unwrap
from gist_ray.objectives import OBJECTIVES, Outputs
from gist_ray.objectives.taps import head_linear
from gist_ray.objectives.uskd import uskd_terms
from gist_ray.objectives_table import objectives_table
from gist_ray.train.loop import GistRun, LocalReporter

D, C = 64, 5  # vit_synth_s: width 64, 4 blocks


def byot_extra(d: int, c: int, shallow: int) -> int:
    """LayerNorm + classifier per shallow classifier, an adaptation layer for all but the deepest shallow one."""
    return shallow * (2 * d + d * c + c) + (shallow - 1) * (d * d + d)


# name -> parts the objective reports, (token, pairs, hooked 0-based blocks, head hook) on vit_synth_s,
# its own trainable parameters on vit_synth_s with C classes
ROWS = {
    "gist": ({"ce_cls", "ce_gist", "interaction", "kl_cls_gist", "kl_gist_cls", "agreement"},
             (True, False, (), False), 0),
    "ce": ({"ce_cls"}, (False, False, (), False), 0),
    "byot": ({"ce_cls", *(f"{k}_block{b}" for b in (1, 2, 3) for k in ("ce", "kd", "acc")), "feature_block1",
              "feature_block2"}, (False, False, (0, 1, 2), True), byot_extra(D, C, 3)),
    "cs_kd": ({"ce_cls", "cls_kd"}, (False, True, (), False), 0),
    "uskd": ({"ce_cls", "uskd", "uskd_target", "uskd_non_target", "uskd_weak"}, (False, False, (1,), False),
             D * C + C),
}


def test_every_registered_objective_has_a_row():
    assert set(OBJECTIVES.names()) == set(ROWS)


def make(objective: str, method: str = "ssf", backbone: str = "vit_synth_s", options: dict | None = None, seed=0,
         classes: int = C):
    torch.manual_seed(seed)
    return build_model(backbone, classes, method, {}, GistConfig(enabled=True), weights="none", objective=objective,
                       objective_options=options)


def hooked(model) -> tuple[tuple[int, ...], bool]:
    vit = model.backbone
    from gist_ray.blocks import blocks

    return (tuple(i for i, b in enumerate(blocks(vit)) if b._forward_hooks),
            bool(head_linear(vit)._forward_pre_hooks))


def forward_of(model):
    return lambda x: model(x)


@pytest.mark.parametrize("name", sorted(ROWS))
def test_step_reports_its_parts_hooks_only_what_it_declares_and_everything_trains(name):
    parts, (token, pairs, blocks, head), _ = ROWS[name]
    model = make(name)
    obj = model.objective
    assert (obj.needs.gist_token, obj.needs.pairs) == (token, pairs)
    assert (model.gist is not None) == token
    assert hooked(model) == (blocks, head)  # plain runs carry no hooks at all
    model.train()
    x, y = torch.randn(8, 3, 32, 32), torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    step = obj.step(forward_of(model), x, y)
    assert set(step.parts) == parts and math.isfinite(step.loss.item())
    assert all(not v.requires_grad for v in step.parts.values())
    assert len(step.target) == (4 if pairs else 8) and len(step.logits) == len(step.target)
    step.loss.backward()
    for n, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and p.grad.abs().sum() > 0, f"{name}: {n} got no gradient"
        else:
            assert p.grad is None, f"{name}: frozen {n} got a gradient"


@pytest.mark.parametrize("name", sorted(ROWS))
def test_objective_parameters_are_counted_apart_and_on_the_meta_device_alike(name):
    counts = trainable_counts(make(name))
    base = trainable_counts(make("ce"))
    assert counts["objective"] == ROWS[name][2]
    assert counts["total"] == base["total"] + counts["objective"] + counts["token"]
    assert counts["method"] == base["method"] and counts["head"] == base["head"]
    (row,) = [r for r in objectives_table("vit_synth_s", C, "ssf") if r["name"] == name]
    assert {k: row[k] for k in ("method", "token", "head", "objective", "total")} == {
        k: counts[k] for k in ("method", "token", "head", "objective", "total")}


def test_taps_record_nothing_in_evaluation():
    model = make("byot")
    model.eval()
    with torch.no_grad():
        model(torch.randn(2, 3, 32, 32))
    assert model.objective.taps._blocks == {} and model.objective.taps._head is None


# ----------------------------------------------------------------------------- hand computations

Z = torch.tensor([[2.0, 0.5, -1.0, 0.3], [0.1, 0.2, 0.3, -0.4]])
W = torch.tensor([[0.4, -0.2, 0.9, 0.0], [1.5, 0.1, -0.3, 0.2]])
Y = torch.tensor([0, 2])


def softmax(row, T=1.0):
    e = [math.exp(v / T) for v in row]
    return [v / sum(e) for v in e]


def ce_by_hand(rows, ys):
    return sum(-math.log(softmax(r)[t]) for r, t in zip(rows, ys)) / len(ys)


def test_ce_is_cross_entropy_by_hand():
    out = Outputs(Z.clone())
    total, parts = make("ce").objective.loss(out, Y)
    assert total.item() == pytest.approx(ce_by_hand(Z.tolist(), Y.tolist()), rel=1e-6)


def test_gist_is_the_gist_loss_plus_agreement():
    obj = make("gist").objective
    total, parts = obj.loss(Outputs(Z, W), Y)
    ref, _ = gist_objective(Z, W, Y, mu=0.5, lam=0.75, temperature=3.0)
    assert total.item() == pytest.approx(ref.item())
    assert parts["agreement"].item() == 0.0  # argmax [0, 2] against [2, 0]
    assert obj.loss(Outputs(Z, W.flip(0)), Y)[1]["agreement"].item() == 1.0  # [0, 2] against [0, 2]


def test_cs_kd_by_hand_anchors_with_gradient_partners_without():
    T, lam = 4.0, 1.0
    table = torch.cat([Z, W]).requires_grad_(False)
    grad_modes = []

    def forward(x):
        grad_modes.append(torch.is_grad_enabled())
        return table[x[:, 0, 0, 0].long()].clone().requires_grad_(torch.is_grad_enabled()), None

    x = torch.arange(4).float().view(4, 1, 1, 1).expand(4, 3, 1, 1)  # rows 0, 1 anchors; 2, 3 partners
    y = torch.tensor([0, 2, 0, 2])
    step = make("cs_kd").objective.step(forward, x, y)
    assert grad_modes == [True, False]  # the reference: anchors forward with gradient, partners under no_grad
    kl = 0.0
    for a, p in zip(Z.tolist(), W.tolist()):
        q, pa = softmax(p, T), softmax(a, T)
        kl += sum(qi * math.log(qi / pi) for qi, pi in zip(q, pa))
    kd = kl * T**2 / 2
    assert step.parts["cls_kd"].item() == pytest.approx(kd, rel=1e-5)
    assert step.loss.item() == pytest.approx(ce_by_hand(Z.tolist(), [0, 2]) + lam * kd, rel=1e-5)
    assert step.target.tolist() == [0, 2] and torch.equal(step.logits.detach(), Z)


def test_byot_by_hand():
    T, alpha, beta = 3.0, 0.3, 0.03
    obj = make("byot", options={"blocks": [1, 2, 3]}, classes=Z.shape[1]).objective
    torch.manual_seed(1)
    pooled = [torch.randn(2, D) for _ in range(3)]
    head_in = torch.randn(2, D)
    total, parts = obj.loss(Outputs(Z.clone(), None, pooled, head_in), Y)
    teacher = torch.exp(Z / T) / torch.exp(Z / T).sum(1, keepdim=True)
    expect = -torch.log(torch.exp(Z) / torch.exp(Z).sum(1, keepdim=True))[torch.arange(2), Y].mean()
    for k, b in enumerate((1, 2, 3)):
        ln, fc = obj.norms[k], obj.classifiers[k]
        f = pooled[k]
        h = (f - f.mean(1, keepdim=True)) / torch.sqrt(f.var(1, unbiased=False, keepdim=True) + 1e-6) * ln.weight + ln.bias
        z = h @ fc.weight.T + fc.bias
        log_soft = z / T - torch.log(torch.exp(z / T).sum(1, keepdim=True))
        kd = -(log_soft * teacher).sum(1).mean()
        ce = -(z - torch.log(torch.exp(z).sum(1, keepdim=True)))[torch.arange(2), Y].mean()
        expect = expect + alpha * kd + (1 - alpha) * ce
        assert parts[f"kd_block{b}"].item() == pytest.approx(kd.item(), rel=1e-5)
        if b < 3:  # the deepest shallow classifier (block 3) has no feature term, as in the reference loop
            a = obj.adapters[str(b)]
            feat = torch.sqrt(((h @ a.weight.T + a.bias - head_in) ** 2).sum())
            expect = expect + beta * feat
            assert parts[f"feature_block{b}"].item() == pytest.approx(feat.item(), rel=1e-5)
    assert "3" not in obj.adapters
    assert total.item() == pytest.approx(expect.item(), rel=1e-5)


def test_uskd_terms_by_hand():
    c = Z.shape[1]
    zipf = 1.0 / torch.arange(1, c + 1, dtype=torch.float32)
    got = uskd_terms(Z, W, Y, zipf)
    ys = Y.tolist()
    s = [softmax(r) for r in Z.tolist()]
    w = [softmax(r) for r in W.tolist()]
    st2 = [s[i][ys[i]] ** 2 for i in range(2)]
    p_t = [v + 1 - sum(st2) / 2 for v in st2]
    target = sum(-p_t[i] * math.log(s[i][ys[i]]) for i in range(2)) / 2
    weak = sum(-sum((0.9 * (j == ys[i]) + 0.1 / c) * math.log(w[i][j]) for j in range(c)) for i in range(2)) / 2
    non = 0.0
    for i in range(2):
        t = ys[i]
        log_s = [math.log(v) for v in s[i]]
        score = [w[i][j] / (1 - w[i][t] + 1e-6) + log_s[j] / (1 - log_s[t] + 1e-6) for j in range(c)]
        ranked = sorted(range(c), key=lambda j: -score[j])
        zipf_of = {j: 1.0 / (ranked.index(j) + 1) for j in range(c)}
        others = [j for j in range(c) if j != t]
        norm = sum(zipf_of[j] for j in others)
        log_ns = [Z[i, j].item() - math.log(sum(math.exp(Z[i, k].item()) for k in others)) for j in others]
        non += -sum(zipf_of[j] / norm * lj for j, lj in zip(others, log_ns))
    non /= 2
    assert got["target"].item() == pytest.approx(target, rel=1e-5)
    assert got["weak"].item() == pytest.approx(weak, rel=1e-5)
    assert got["non_target"].item() == pytest.approx(non, rel=1e-5)


def test_uskd_total_weights_its_terms_with_the_reference_defaults():
    obj = make("uskd", classes=Z.shape[1]).objective
    assert (obj.alpha, obj.beta, obj.mu) == (1.0, 0.1, 0.005)
    f = torch.randn(2, D)
    total, parts = obj.loss(Outputs(Z.clone(), None, [f]), Y)
    weak_logits = f @ obj.fc.weight.T + obj.fc.bias
    terms = uskd_terms(Z, weak_logits, Y, obj.zipf)
    expect = F.cross_entropy(Z, Y) + terms["target"] + 0.1 * terms["non_target"] + 0.005 * terms["weak"]
    assert total.item() == pytest.approx(expect.item(), rel=1e-5)


# ----------------------------------------------------------------------------- what the references fix


def test_byot_shallow_classifiers_learn_and_the_teacher_gets_no_gradient_from_distillation():
    """ArchipLab-LinfengZhang/pytorch-self-distillation-final detaches the deepest classifier's output and features:
    its head gets exactly the gradient of its own CE; the shallow classifiers and the early blocks' method learn."""
    model = make("byot", method="ssf")
    model.train()
    x, y = torch.randn(6, 3, 32, 32), torch.tensor([0, 1, 2, 3, 4, 0])
    obj = model.objective
    obj.step(forward_of(model), x, y).loss.backward()
    head = head_linear(model.backbone)
    full = head.weight.grad.clone()
    for m in (*obj.norms, *obj.classifiers, *obj.adapters.values()):
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in m.parameters())
    block0 = [p for p in model.backbone.blocks[0].parameters() if p.requires_grad]  # SSF's scales and shifts
    assert block0 and all(p.grad.abs().sum() > 0 for p in block0)
    model.zero_grad(set_to_none=True)
    F.cross_entropy(obj.outputs(forward_of(model), x).logits, y).backward()
    torch.testing.assert_close(full, head.weight.grad)


def test_byot_defaults_follow_the_reference_and_sit_at_the_quarters():
    obj = make("byot", backbone="vit_synth_m").objective  # 6 blocks
    assert (obj.temperature, obj.alpha, obj.beta) == (3.0, 0.3, 0.03)
    assert obj.numbers == [1, 3, 4]
    from gist_ray.objectives.taps import quarter_blocks, middle_block

    with torch.device("meta"):
        vit_b = build_model("vit_b", 10, "linear", weights="none", objective="ce").backbone
        swin_b = build_model("swin_b", 10, "linear", weights="none", objective="ce").backbone
    assert quarter_blocks(vit_b) == [3, 6, 9] and middle_block(vit_b) == 6
    assert quarter_blocks(swin_b) == [2, 4, 22] and middle_block(swin_b) == 22


def test_cs_kd_defaults_follow_the_reference():
    obj = make("cs_kd").objective
    assert (obj.temperature, obj.lam) == (4.0, 1.0)


# ----------------------------------------------------------------------------- pairs


def test_class_pairs_draw_same_class_partners_uniformly():
    from gist_ray.data.pairs import ClassPairs

    labels = torch.tensor([0, 1, 0, 2, 1, 0, 3])
    pairs = ClassPairs(labels)
    gen = torch.Generator().manual_seed(0)
    anchors = torch.tensor([0] * 300 + [3, 6])
    partners = pairs.partners(anchors, gen)
    assert torch.equal(labels[partners], labels[anchors])
    assert set(partners[:300].tolist()) == {0, 2, 5}  # every image of the class, the anchor itself included
    assert partners[-2:].tolist() == [3, 6]  # a class of one: its only image


def test_cs_kd_batches_really_pair_same_class_images(tmp_path):
    cfg = build_config({}, TINY_OVERRIDES + ["objective.name=cs_kd", "train.batch_size=10"])
    run = GistRun(cfg, LocalReporter(tmp_path))
    anchors = []
    for idx in run.batches(0):
        b = len(idx) // 2
        assert len(idx) == 2 * b
        assert torch.equal(run.labels[idx[:b]], run.labels[idx[b:]])
        anchors += idx[:b].tolist()
    assert sorted(anchors) == list(range(len(run.labels)))  # every image is an anchor once an epoch
    plain = GistRun(build_config({}, TINY_OVERRIDES + ["objective.name=ce", "train.batch_size=10"]),
                    LocalReporter(tmp_path / "plain"))
    assert [i.tolist() for i in plain.batches(0)] == [a.tolist()[: len(a) // 2] for a in run.batches(0)]


# ----------------------------------------------------------------------------- config


@pytest.mark.parametrize("overrides, message", [
    (["objective.name=nosuch"], "objective.name: unknown objective 'nosuch'"),
    (["objective.name=byot", "objective.temperature=0"], "objective.temperature: must be > 0"),
    (["objective.name=byot", "objective.alpha=1.5"], "objective.alpha: must be in [0, 1]"),
    (["objective.name=cs_kd", "objective.nosuch=1"], "objective.nosuch: unknown field"),
    (["objective.name=ce", "objective.temperature=3"], "objective.temperature: unknown field"),
    (["objective.name=byot", "objective.blocks=[2]"], "objective.blocks: blocks are numbered 1..1"),
    (["objective.name=byot", "objective.blocks=[1, 1]"], "objective.blocks"),
    (["objective.name=uskd", "objective.block=2"], "objective.block: blocks are numbered 1..1"),
    (["objective.name=byot", "objective.blocks=[5]", "model.backbone=swin_test_tiny"], "objective.blocks"),
])
def test_bad_objective_settings_name_the_field(overrides, message):
    with pytest.raises(ConfigError) as exc:
        build_config({}, TINY_OVERRIDES + overrides)
    assert message in str(exc.value), str(exc.value)


def test_only_the_gist_objective_has_a_token_and_the_config_says_so():
    cfg = build_config({"gist": {"enabled": True}}, ["objective.name=uskd"])
    assert cfg.gist.enabled is False
    back = cfg.with_overrides({"objective.name": "gist"})
    assert back.gist.enabled is True  # the false was forced by uskd, not chosen
    assert cfg.with_overrides({"objective.name": "gist", "gist.enabled": False}).gist.enabled is False
    assert Variants(cfg).get({"objective.name": "gist"}).gist.enabled is True  # how sweeps derive their trials
    assert build_config({"objective": {"name": "ce"}}, ["objective.name=gist"]).gist.enabled is True
    assert build_config({"gist": {"enabled": False}}).gist.enabled is False  # gist.* works as before
    assert build_config({}).objective.name == "gist" and build_config({}).gist.enabled
    with torch.device("meta"):
        model = build_model("vit_test_tiny", 3, "linear", gist=GistConfig(enabled=True), objective="byot")
    assert model.gist is None


def test_objective_knobs_are_searchable_like_method_knobs():
    base = build_config({}, TINY_OVERRIDES + ["objective.name=byot"])
    v = Variants(base)
    assert v.get({"objective.name": "cs_kd", "objective.temperature": 2.0}).objective.typed().temperature == 2.0
    assert v.get({"objective.name": "uskd", "objective.temperature": 2.0}).objective.options == {}  # dropped
    assert v.get({"objective.temperature": 5.0}).objective.typed().temperature == 5.0
    switched = build_config({"objective": {"name": "byot", "alpha": 0.5}}, ["objective.name=uskd"])
    assert switched.objective.options == {"alpha": 0.5}  # a knob both have stays
    switched = build_config({"objective": {"name": "byot", "blocks": [1]}}, ["objective.name=cs_kd"])
    assert switched.objective.options == {}  # byot's own knob goes


# ----------------------------------------------------------------------------- the loop


@pytest.mark.parametrize("name", ["byot", "cs_kd", "uskd"])
def test_resumed_run_equals_uninterrupted_run(tmp_path, name):
    """The objective's own parameters are checkpointed and CS-KD's partners are drawn again identically."""
    import shutil

    base = TINY_OVERRIDES + ["train.epochs=2", "train.checkpoint_every=1", f"objective.name={name}", "data.n_test=8"]
    full = GistRun(build_config({}, base), LocalReporter(tmp_path / "a")).fit()
    GistRun(build_config({}, base), LocalReporter(tmp_path / "b")).fit()
    shutil.rmtree(tmp_path / "b" / "checkpoint_000002")
    again = LocalReporter(tmp_path / "b")
    resumed = GistRun(build_config({}, base), again).fit()
    assert again.history[0]["epoch"] == 2
    assert resumed["train/loss"] == pytest.approx(full["train/loss"], rel=1e-5)
    assert resumed["val/acc"] == pytest.approx(full["val/acc"])
    assert (full["params/objective"] > 0) == (name != "cs_kd")


@pytest.mark.parametrize("name", sorted(ROWS))
def test_every_objective_trains_on_swin(tmp_path, name):
    cfg = build_config({}, TINY_OVERRIDES + ["model.backbone=swin_test_tiny", "train.epochs=1", f"objective.name={name}",
                                             "method.name=gist_adapter"])
    run = GistRun(cfg, LocalReporter(tmp_path))
    final = run.fit()
    assert math.isfinite(final["train/loss"]) and 0.0 <= final["test/acc"] <= 1.0
    assert (unwrap(run.model).gist is not None) == (name == "gist")
    assert {f"train/{p}" for p in ROWS[name][0] if "block" not in p} <= set(final)


def test_every_method_trains_with_every_objective_on_vit_and_swin():
    """Every registered PEFT method x every objective: one training step on each backbone family the method is
    defined on; the objective's hooks see the method's (wrapped) blocks and every trainable tensor learns."""
    from gist_ray.methods import METHODS, method_families
    from gist_ray.typed_config import from_dict

    failures = []
    for method in METHODS.names():
        families = method_families(method, from_dict(METHODS.get(method).config_cls, {}, "method"))
        for backbone in [b for b, fam in (("vit_test_tiny", "vit"), ("swin_test_tiny", "swin")) if fam in families]:
            for name in OBJECTIVES.names():
                model = make(name, method=method, backbone=backbone)
                model.train()
                step = model.objective.step(forward_of(model), torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 0, 1]))
                step.loss.backward()
                if not math.isfinite(step.loss.item()):
                    failures.append(f"{method} {backbone} {name}: loss {step.loss.item()}")
                got = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
                if got:
                    failures.append(f"{method} {backbone} {name}: no gradient for {got[:3]}")
    assert not failures, "\n".join(failures)
