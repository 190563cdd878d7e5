"""Every text PEFT method on every family it is defined on: what trains, how much, where, and from which init."""

from __future__ import annotations

import math
import re

import pytest
import torch

pytest.importorskip("peft")

from gist_ray.config import ConfigError  # noqa: E402
from gist_ray.text.backbones import load_text_backbone  # noqa: E402
from gist_ray.text.families import FAMILIES  # noqa: E402
from gist_ray.text.methods import TEXT_METHODS, apply_text_method, text_method_config  # noqa: E402
from gist_ray.text.methods.adapters import Bottleneck, HoulsbyConfig, PfeifferConfig  # noqa: E402
from gist_ray.text.model import build_text_model, text_trainable_counts  # noqa: E402
from gist_ray.text.splits import tokenize  # noqa: E402
from gist_ray.text.synthetic import synthetic_split  # noqa: E402

BACKBONE = {"bert": "bert_test_tiny", "t5": "t5_test_tiny"}

# method -> regex every trainable encoder parameter name must match (None: no encoder parameter trains;
# "*": every encoder parameter trains)
TRAINABLE = {
    "full": "*",
    "linear": None,
    "bitfit": r".*bias",
    "adapter_houlsby": r".*\.adapter\.(down|up)\.(weight|bias)",
    "adapter_pfeiffer": r".*\.adapter\.(down|up)\.(weight|bias)",
    "adapter_attempt": r".*(\.adapter\.(down|up)\.(weight|bias)|(layer_norm|LayerNorm)\.(weight|bias))",
    "peft_lora": r".*\.lora_[AB]\.default\.weight",
    "peft_dora": r".*\.(lora_[AB]\.default\.weight|lora_magnitude_vector\.default\.weight)",
    "peft_loha": r".*\.hada_[wt]\d_[ab]\.default",
    "peft_lokr": r".*\.lokr_(w1|w2|w1_[ab]|w2_[ab]|t2)\.default",
    "peft_ia3": r".*\.ia3_l\.default",
}
# peft methods -> the sites their default targets must land on
PEFT_SITES = {"peft_lora": ("q", "v"), "peft_dora": ("q", "v"), "peft_loha": ("q", "v"), "peft_lokr": ("q", "v"),
              "peft_ia3": ("k", "v", "ffn_out")}
CASES = [(m, f) for m in TEXT_METHODS.names() for f in FAMILIES if f in TEXT_METHODS.get(m).families]


def test_every_method_has_a_table_row():
    assert set(TRAINABLE) == set(TEXT_METHODS.names())
    for name in TEXT_METHODS.names():
        spec = TEXT_METHODS.get(name)
        assert spec.paper, name
        if name not in ("full", "linear"):
            assert spec.reference, f"{name}: name the reference implementation"


@pytest.mark.parametrize("method,family", CASES)
def test_trainable_set_and_count(method, family):
    torch.manual_seed(0)
    model, _ = build_text_model(BACKBONE[family], 3, method)
    counts = text_trainable_counts(model)
    fresh = load_text_backbone(BACKBONE[family]).encoder
    spec = TEXT_METHODS.get(method)
    assert counts["method"] == spec.count(fresh, FAMILIES[family], text_method_config(method, {}))
    hidden = FAMILIES[family].hidden_size(fresh)
    assert counts["token"] == hidden
    assert counts["head"] == hidden * hidden + hidden + 3 * hidden + 3
    trainable = [n for n, p in model.named_parameters() if p.requires_grad and n.startswith("backbone.")]
    pattern = TRAINABLE[method]
    if pattern is None:
        assert trainable == []
    elif pattern == "*":
        assert len(trainable) == len(list(model.backbone.parameters()))
    else:
        assert trainable and all(re.fullmatch(pattern, n) for n in trainable), trainable[:5]
    if method in PEFT_SITES:
        fam = FAMILIES[family]
        adapted = {n.rsplit(".", 1)[0] for n in trainable}
        adapted = {re.sub(r"\.(lora_[AB]|lora_magnitude_vector|hada_\w+|lokr_\w+|ia3_l)(\.default)?$", "", n)
                   for n in adapted}
        want = {n for n, _ in fresh.named_modules() if re.fullmatch(fam.target_regex(list(PEFT_SITES[method])), n)}
        assert {f"backbone.{n}" for n in want} == adapted


@pytest.mark.parametrize("method,family", CASES)
def test_one_step_moves_only_what_trains(method, family):
    torch.manual_seed(0)
    model, tok = build_text_model(BACKBONE[family], 4, method)
    split = tokenize(synthetic_split("topic", "train", 8), tok, 32)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    model.train()
    cls_logits, gist_logits = model(**split.inputs(range(8)))
    (torch.nn.functional.cross_entropy(cls_logits, split.labels) + gist_logits.sum() * 0).backward()
    opt.step()
    for n, p in model.named_parameters():
        if not p.requires_grad:
            assert torch.equal(p, before[n]), f"{n} is frozen but changed"
    assert not torch.equal(model.head.out.weight, before["head.out.weight"])


@pytest.mark.parametrize("method", ["adapter_houlsby", "adapter_pfeiffer", "adapter_attempt"])
@pytest.mark.parametrize("family", ["bert", "t5"])
def test_adapter_with_zero_up_projection_is_the_identity(method, family):
    """Placement keeps the original computation around the adapter (LayerNorm, residuals) intact."""
    torch.manual_seed(0)
    loaded = load_text_backbone(BACKBONE[family])
    plain = load_text_backbone(BACKBONE[family]).encoder
    plain.load_state_dict(loaded.encoder.state_dict())
    apply_text_method(loaded.encoder, loaded.family, method)
    for name, p in loaded.encoder.named_parameters():
        if ".adapter.up." in name:
            torch.nn.init.zeros_(p)
    inputs = tokenize(synthetic_split("match", "train", 4), loaded.tokenizer, 32).inputs(range(4))
    loaded.encoder.eval(), plain.eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded.encoder(**inputs).last_hidden_state, plain(**inputs).last_hidden_state)


def _adapter_inputs(encoder) -> list[torch.Tensor]:
    seen: list[torch.Tensor] = []
    for name, m in encoder.named_modules():
        if name.endswith("adapter.down"):
            m.register_forward_hook(lambda mod, a, out: seen.append(a[0]) and None)
    return seen


def _keep_output(store: dict, key: str):
    def hook(module, args, out):
        store.setdefault(key, out)

    return hook


def _keep_arg(store: dict, key: str, i: int):
    def hook(module, args):
        store.setdefault(key, args[i])

    return hook


def test_adapter_placement_on_bert_matches_adapterhub():
    """Houlsby reads the sublayer output h; Pfeiffer reads LN(h + x) with the sublayer's own LayerNorm."""
    for method, expect_ln in (("adapter_houlsby", False), ("adapter_pfeiffer", True)):
        torch.manual_seed(0)
        loaded = load_text_backbone("bert_test_tiny")
        apply_text_method(loaded.encoder, loaded.family, method)
        out = loaded.encoder.encoder.layer[0].output  # the wrapped feed-forward output
        seen_adapter = _adapter_inputs(out)
        grabbed = {}
        out.inner.dropout.register_forward_hook(_keep_output(grabbed, "h"))
        out.register_forward_pre_hook(_keep_arg(grabbed, "x", 1))
        loaded.encoder.eval()
        with torch.no_grad():
            loaded.encoder(**tokenize(synthetic_split("topic", "train", 2), loaded.tokenizer, 32).inputs([0, 1]))
            want = out.inner.LayerNorm(grabbed["h"] + grabbed["x"]) if expect_ln else grabbed["h"]
        torch.testing.assert_close(seen_adapter[0], want)
        n_wrapped = sum(type(m).__name__ == "AdaptedBertOutput" for m in loaded.encoder.modules())
        assert n_wrapped == (4 if method == "adapter_houlsby" else 2)  # 2 layers x (attention?, feed-forward)


def test_adapter_placement_on_t5_matches_adapterhub():
    for method, n_adapters in (("adapter_houlsby", 4), ("adapter_pfeiffer", 2)):
        loaded = load_text_backbone("t5_test_tiny")
        apply_text_method(loaded.encoder, loaded.family, method)
        ff = loaded.encoder.encoder.block[0].layer[1]
        assert type(ff).__name__ == "AdaptedT5FF"
        attn_drop = loaded.encoder.encoder.block[0].layer[0].dropout
        assert (type(attn_drop).__name__ == "DropoutThenAdapter") == (method == "adapter_houlsby")
        assert sum(isinstance(m, Bottleneck) for m in loaded.encoder.modules()) == n_adapters
        seen = _adapter_inputs(ff)
        grabbed = {}
        ff.inner.dropout.register_forward_hook(_keep_output(grabbed, "h"))
        ff.register_forward_pre_hook(_keep_arg(grabbed, "x", 0))
        loaded.encoder.eval()
        with torch.no_grad():
            loaded.encoder(**tokenize(synthetic_split("topic", "train", 2), loaded.tokenizer, 32).inputs([0, 1]))
        want = grabbed["h"] + grabbed["x"] if method == "adapter_pfeiffer" else grabbed["h"]  # no LN: pre-LN T5
        torch.testing.assert_close(seen[0], want)


def test_adapter_init_and_defaults_follow_adapterhub():
    h, p = HoulsbyConfig(), PfeifferConfig()
    assert (h.reduction_factor, h.non_linearity, h.init_weights, h.dropout, h.scaling) == (16.0, "swish", "bert", 0.0, 1.0)
    assert (p.reduction_factor, p.non_linearity) == (16.0, "relu")
    torch.manual_seed(0)
    torch.set_grad_enabled(False)
    a = Bottleneck(768, h)
    assert a.down.out_features == 48 and a.up.in_features == 48
    assert isinstance(a.act, torch.nn.SiLU) and isinstance(Bottleneck(768, p).act, torch.nn.ReLU)
    for lin in (a.down, a.up):
        assert abs(float(lin.weight.std()) - 0.02) < 0.002 and float(lin.bias.abs().max()) == 0.0
    b = Bottleneck(768, HoulsbyConfig(init_weights="houlsby"))
    assert float(b.up.weight.abs().max()) <= 0.02 and abs(float(b.up.weight.std()) - 0.0088) < 0.002
    torch.set_grad_enabled(True)


@pytest.mark.parametrize("family", ["bert", "t5"])
def test_peft_lora_init_starts_at_the_pretrained_function(family):
    torch.manual_seed(0)
    loaded = load_text_backbone(BACKBONE[family])
    plain = load_text_backbone(BACKBONE[family]).encoder
    plain.load_state_dict(loaded.encoder.state_dict())
    apply_text_method(loaded.encoder, loaded.family, "peft_lora")
    named = dict(loaded.encoder.named_parameters())
    a = [p for n, p in named.items() if "lora_A" in n]
    b = [p for n, p in named.items() if "lora_B" in n]
    assert a and all(float(p.detach().abs().max()) <= 1 / math.sqrt(p.shape[1]) + 1e-6 for p in a)  # Kaiming(a=sqrt5)
    assert all(float(p.detach().abs().max()) == 0.0 for p in b)
    inputs = tokenize(synthetic_split("match", "train", 3), loaded.tokenizer, 32).inputs(range(3))
    loaded.encoder.eval(), plain.eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded.encoder(**inputs).last_hidden_state, plain(**inputs).last_hidden_state)


def test_ia3_scales_the_feed_forward_input():
    loaded = load_text_backbone("bert_test_tiny")
    apply_text_method(loaded.encoder, loaded.family, "peft_ia3")
    shapes = {n: tuple(p.shape) for n, p in loaded.encoder.named_parameters() if "ia3_l" in n}
    assert shapes["encoder.layer.0.output.dense.ia3_l.default"] == (1, 64)  # input side: intermediate size
    assert shapes["encoder.layer.0.attention.self.key.ia3_l.default"] == (32, 1)  # output side


@pytest.mark.parametrize("options,field", [
    ({"rank": 0}, "method.rank"),
    ({"targets": ["query"]}, "method.targets"),
    ({"targets": []}, "method.targets"),
    ({"bogus": 1}, "method.bogus"),
])
def test_bad_knobs_name_the_field(options, field):
    with pytest.raises(ConfigError, match=re.escape(field)):
        text_method_config("peft_lora", options)


def test_method_on_a_family_it_is_not_defined_on_is_refused():
    with pytest.raises(ConfigError, match=r"method\.name: bitfit is defined on bert"):
        text_method_config("bitfit", {}, family="t5")
    with pytest.raises(ConfigError, match=r"method\.name: unknown text PEFT method"):
        text_method_config("nope", {})
    with pytest.raises(ConfigError, match=r"method\.reduction_factor"):
        text_method_config("adapter_houlsby", {"reduction_factor": 0})


@pytest.mark.parametrize("family", ["bert", "t5"])
def test_attempt_adapter_reads_the_sublayer_output_before_its_dropout(family):
    torch.manual_seed(0)
    loaded = load_text_backbone(BACKBONE[family])
    apply_text_method(loaded.encoder, loaded.family, "adapter_attempt")
    layer = loaded.family.layers(loaded.encoder)[0]
    ff = layer.layer[1] if family == "t5" else layer.output
    assert type(ff.dropout).__name__ == "AdapterThenDropout"
    grabbed: dict = {}
    (ff.DenseReluDense if family == "t5" else ff.dense).register_forward_hook(_keep_output(grabbed, "y"))
    seen = _adapter_inputs(ff)
    loaded.encoder.eval()
    with torch.no_grad():
        loaded.encoder(**tokenize(synthetic_split("topic", "train", 2), loaded.tokenizer, 32).inputs([0, 1]))
    torch.testing.assert_close(seen[0], grabbed["y"])
    # 2 per layer; PyTorch's default Linear init (so not the identity at the start), gelu_new, d // 32
    adapters = [m for m in loaded.encoder.modules() if type(m).__name__ == "AttemptAdapter"]
    assert len(adapters) == 4 and adapters[0].down.out_features == 1  # hidden 32 // 32
    up = adapters[0].up
    assert float(up.weight.detach().abs().max()) <= 1.0 + 1e-6 and float(up.weight.detach().abs().max()) > 0  # U(+-1/sqrt(fan_in=1))
    assert type(adapters[0].act).__name__ == "NewGELUActivation"
    norms = [n for n, p in loaded.encoder.named_parameters() if p.requires_grad and "orm" in n]
    assert norms and all(".adapter." not in n for n in norms)
