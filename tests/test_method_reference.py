"""Every registered method against its reference implementation: the initial distribution of every tensor it
trains (on a newly built ViT-B/16 and on the tiny ViT and Swin), which input it reads, where its dropout sits.

One row per method in :data:`REFERENCE` (the reference's facts, with the file they come from in the method's
docstring and in docs/methods.md); the checks are shared. A newly registered method fails
``test_every_method_has_a_reference_row`` until it has a row.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Callable, Optional

import pytest
import torch
from torch import nn

from gist_ray.backbones import create_backbone
from gist_ray.blocks import inner_block, unwrap
from gist_ray.config import from_dict
from gist_ray.methods import METHODS, apply_method, method_families

# ----------------------------------------------------------------------------- what the references init


@dataclass(frozen=True)
class Init:
    """A tensor's initial distribution: ``zeros``, ``const`` (value ``a``), ``uniform`` (bound ``a(p, vit)``),
    ``normal`` (mean ``a``, std ``b``), ``trunc`` (N(0, ``b``) cut at +-``c``) or ``backbone`` (an existing
    backbone parameter, unchanged)."""

    kind: str
    a: float | Callable = 0.0
    b: float = 0.0
    c: float = 0.0


ZEROS = Init("zeros")
BACKBONE = Init("backbone")
KAIMING = Init("uniform", lambda p, vit: 1 / math.sqrt(p.shape[-1]))  # nn.Linear's weight init, fan_in = shape[-1]


def const(v: float) -> Init:
    return Init("const", v)


def normal(mean: float, std: float) -> Init:
    return Init("normal", mean, std)


def trunc(std: float, bound: float) -> Init:
    return Init("trunc", 0.0, std, bound)


def xavier_bound(p: torch.Tensor, vit=None) -> float:
    receptive = math.prod(p.shape[2:])
    return math.sqrt(6 / (p.shape[1] * receptive + p.shape[0] * receptive))


XAVIER = Init("uniform", xavier_bound)
TIMM_VIT = trunc(0.02, 2.0)  # timm's init_weights_vit_timm weights (biases: zeros)


def vpt_bound(p: torch.Tensor, vit) -> float:
    ph, pw = vit.patch_embed.patch_size
    return math.sqrt(6 / (3 * ph * pw + vit.embed_dim))


@dataclass(frozen=True)
class Ref:
    """A method's reference facts. ``init``: (name pattern, Init) for every trained tensor, first match wins;
    ``buffers``: the same for frozen buffers it adds; ``dropout``: {module name pattern: p} for every dropout
    with p > 0 it adds; ``reads``: {submodule of the first block: per call, the ops of that block its input
    depends on} (``norm1``, ``attn`` (its output projection), ``norm2``, ``mlp`` (its output projection)), or None for
    methods that only wrap linear layers (each reads its own layer's input)."""

    init: list[tuple[str, Init]]
    buffers: list[tuple[str, Init]] = field(default_factory=list)
    dropout: dict[str, float] = field(default_factory=dict)
    reads: Optional[dict[str, list[set[str]]]] = None


X, MID, MID_NORM, MLP_OUT = set(), {"norm1", "attn"}, {"norm1", "attn", "norm2"}, {"norm1", "attn", "norm2", "mlp"}

REFERENCE: dict[str, Ref] = {
    "linear": Ref([]),
    "full": Ref([(r".", BACKBONE)]),
    "bitfit": Ref([(r"\.bias$", BACKBONE)]),
    # JCruan519/GIST models/vision_transformer.py: built before timm's init_weights
    "gist_adapter": Ref([(r"adapter\.(down|up)\.weight$", TIMM_VIT), (r"adapter\.(down|up)\.bias$", ZEROS)],
                        reads={"adapter": [X, MID]}),
    # google-research/adapter-bert modeling.py feedforward_adapter; optimization.py trains layer_norm too
    "adapter_houlsby": Ref([(r"after_(attn|mlp)\.fn\.(down|up)\.weight$", trunc(1e-3, 2e-3)),
                            (r"after_(attn|mlp)\.fn\.(down|up)\.bias$", ZEROS),
                            (r"norm\d?\.(weight|bias)$", BACKBONE)],
                           reads={"after_attn": [MID], "after_mlp": [MLP_OUT]}),
    # NOAH supernet_vision_transformer_timm.py: init_weights over AdapterSuper; --drop_rate_adapter 0.1
    "adapter_noah": Ref([(r"adapter\.fn\.(down|up)\.weight$", TIMM_VIT), (r"adapter\.fn\.(down|up)\.bias$", ZEROS)],
                        dropout={r"adapter\.fn\.dropout$": 0.1}, reads={"adapter": [MLP_OUT]}),
    # AdaptFormer models/adapter.py init_option="lora", custom_modules.py Block (dropout=0.1)
    "adaptformer": Ref([(r"adapter\.down\.weight$", KAIMING), (r"adapter\.down\.bias$", ZEROS),
                        (r"adapter\.up\.(weight|bias)$", ZEROS)],
                       dropout={r"adapter\.dropout$": 0.1}, reads={"adapter": [MID]}),
    # PETL-ViT binary_adapter/adaptformer.py Adapter (QLinear: nn.Linear's init, no bias)
    "bi_adapter": Ref([(r"adapter\.down\.weight$", KAIMING), (r"adapter\.up\.weight$", trunc(1e-3, 2e-3))],
                      dropout={r"adapter\.dropout$": 0.1}, reads={"adapter": [MID]}),
    # RepAdapter repadapter.py RepAdapter
    "readapter": Ref([(r"adapter\.down\.weight$", XAVIER), (r"adapter\.(down\.bias|up_weight|up_bias)$", ZEROS)],
                     dropout={r"(qkv|fc1)\.adapter\.dropout$": 0.1},
                     reads={"attn.qkv.adapter": [{"norm1"}], "mlp.fc1.adapter": [MID_NORM]}),
    # KMnP/vpt src/models/vit_prompt/vit.py
    "vpt_shallow": Ref([(r"prompts$", Init("uniform", vpt_bound))]),
    "vpt_deep": Ref([(r"prompts$", Init("uniform", vpt_bound))]),
    # microsoft/LoRA loralib/layers.py MergedLinear
    "lora": Ref([(r"qkv\.(q|v)_down$", KAIMING), (r"qkv\.(q|v)_up$", ZEROS)]),
    # NOAH supernet_vision_transformer_timm.py Attention, overwritten by init_weights; --drop_rate_LoRA 0.1
    "lora_noah": Ref([(r"qkv\.(down|up)$", TIMM_VIT)], dropout={r"qkv\.dropout$": 0.1}),
    # dongzelian/SSF models/vision_transformer.py init_ssf_scale_shift
    "ssf": Ref([(r"gamma$", normal(1.0, 0.02)), (r"beta$", normal(0.0, 0.02))]),
    # PETL-ViT FacT/fact_tt.py, fact_tk.py set_FacT
    "fact_tt": Ref([(r"fact_tt\.u$", KAIMING), (r"fact_tt\.v$", ZEROS), (r"fact_tt\.(attn|fc1|fc2)$", KAIMING)],
                   dropout={r"fact_tt\.dropout$": 0.1}),
    "fact_tk": Ref([(r"fact_tk\.u$", KAIMING), (r"fact_tk\.v$", ZEROS), (r"fact_tk\.(c|p)$", XAVIER)],
                   dropout={r"fact_tk\.dropout$": 0.1}),
    # savadikarc/gift gift/gift/modeling_gift.py get_projection
    "gift": Ref([(r"gift\.\w+\.phi_1\.weight$", KAIMING), (r"gift\.\w+\.phi_2\.weight$", ZEROS)]),
    # huggingface/peft tuners/vera model.py _kaiming_init, layer.py reset_vera_parameters
    "vera": Ref([(r"qkv\.d\.(q|v)$", const(0.1)), (r"qkv\.b\.(q|v)$", ZEROS)],
                buffers=[(r"vera_projections\.(A|B)$", Init("uniform", lambda p, vit: math.sqrt(6 / p.shape[-1])))]),
    # huggingface/peft tuners/{lora,loha,lokr,ia3}/layer.py (peft's own code)
    "peft_lora": Ref([(r"lora_A\.default\.weight$", KAIMING), (r"lora_B\.default\.weight$", ZEROS)]),
    "peft_dora": Ref([(r"lora_A\.default\.weight$", KAIMING), (r"lora_B\.default\.weight$", ZEROS),
                      (r"lora_magnitude_vector\.default\.weight$", Init("weight_norm"))]),
    "peft_loha": Ref([(r"hada_w2_b\.default$", ZEROS), (r"hada_w\d_[ab]\.default$", KAIMING)]),
    "peft_lokr": Ref([(r"lokr_w1\.default$", ZEROS), (r"lokr_w2(_[ab])?\.default$", KAIMING)]),
    "peft_ia3": Ref([(r"ia3_l\.default$", const(1.0))]),
}

LINEAR_SITE_ONLY = {"lora", "lora_noah", "vera", "fact_tt", "fact_tk", "gift", "ssf", "bitfit", "full", "linear",
                    "vpt_shallow", "vpt_deep", "peft_lora", "peft_dora", "peft_loha", "peft_lokr", "peft_ia3"}


def reference(name: str, cfg) -> Ref:
    """The method's row; a combination's is the union of its parts' rows."""
    if name != "combo":
        return REFERENCE[name]
    parts = [reference(n, c) for n, c in cfg.parts()]
    return Ref([r for p in parts for r in p.init], [b for p in parts for b in p.buffers],
               {k: v for p in parts for k, v in p.dropout.items()})


# ----------------------------------------------------------------------------- models

TINY = {"vit": "vit_test_tiny", "swin": "swin_test_tiny"}
OPTIONS = {("swin", "combo"): {"methods": [{"name": "gist_adapter"}, {"name": "ssf"}]}}
NAMES = METHODS.names()


def typed(name: str, options: dict):
    return from_dict(METHODS.get(name).config_cls, options, "method")


def cases(families: tuple[str, ...]) -> list[tuple[str, str]]:
    out = []
    for fam in families:
        for name in NAMES:
            if fam in method_families(name, typed(name, OPTIONS.get((fam, name), {}))):
                out.append((fam, name))
    return out


def vit_b16() -> nn.Module:
    """A newly built ViT-B/16 (timm ``vit_base_patch16_224``): built on the meta device, then given cheap random
    weights (timm's init is seconds of trunc_normal draws the method tensors do not depend on)."""
    with torch.device("meta"):
        vit = create_backbone("vit_base_patch16_224", 100, weights="none")
    vit = vit.to_empty(device="cpu")
    with torch.no_grad():
        for n, p in vit.named_parameters():
            if n.endswith("bias"):
                p.zero_()
            elif p.dim() == 1:
                p.fill_(1.0)
            else:
                p.normal_(0.0, 0.02)
    return vit


def build(backbone: str, name: str, options: dict, seed: int = 0) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    """(backbone with the method applied, the backbone's tensors before it was applied by plain name; their
    values only where the reference row needs them)."""
    torch.manual_seed(seed)
    vit = vit_b16() if backbone == "vit_b16" else create_backbone(backbone, 5, weights="none")
    ref = reference(name, typed(name, options))
    keep = any(init.kind in ("backbone", "weight_norm") for _, init in ref.init)
    before = {n: (p.detach().clone() if keep else None) for n, p in vit.named_parameters()}
    apply_method(vit, name, options)
    return vit, before


def plain(name: str) -> str:
    """A tensor's name without method wrappers (``.inner``) and peft's ``.base_layer``."""
    return re.sub(r"\.(inner|base_layer)(?=\.)", "", name)


# ----------------------------------------------------------------------------- distribution checks


def expected_moments(init: Init, p: torch.Tensor, vit) -> tuple[float, float, float]:
    """(mean, std, bound or inf) of ``init`` for tensor ``p``."""
    if init.kind == "uniform":
        bound = init.a(p, vit)
        return 0.0, bound / math.sqrt(3), bound
    if init.kind == "normal":
        return init.a, init.b, math.inf
    a = init.c / init.b  # truncation point in units of std
    pdf = math.exp(-a * a / 2) / math.sqrt(2 * math.pi)
    mass = math.erf(a / math.sqrt(2))
    return 0.0, init.b * math.sqrt(1 - 2 * a * pdf / mass), init.c


def check_distribution(init: Init, tensors: list[tuple[str, torch.Tensor]], vit, before: dict) -> None:
    where = [n for n, _ in tensors]
    if init.kind == "backbone":
        for n, t in tensors:
            assert plain(n) in before, f"{n}: trains a tensor that is not a backbone parameter"
            torch.testing.assert_close(t.detach(), before[plain(n)], rtol=0, atol=0, msg=f"{n} was re-initialised")
        return
    if init.kind in ("zeros", "const"):
        for n, t in tensors:
            assert torch.all(t == (0.0 if init.kind == "zeros" else init.a)), f"{n}: not {init}"
        return
    if init.kind == "weight_norm":  # DoRA's magnitude: the row norms of the frozen weight
        for n, t in tensors:
            base = before[plain(n).replace("lora_magnitude_vector.default.weight", "weight")]
            torch.testing.assert_close(t.detach(), base.norm(dim=1), msg=n)
        return
    z = []
    for n, t in tensors:
        assert plain(n) not in before, f"{n}: a backbone parameter, expected a new tensor with {init}"
        mean, std, bound = expected_moments(init, t, vit)
        t = t.detach().double().flatten()
        assert (t - mean).abs().max() <= bound * (1 + 1e-6), f"{n}: values beyond +-{bound}"
        z.append((t - mean) / std)
    z = torch.cat(z)
    k = z.numel()
    assert abs(z.mean().item()) < 6 / math.sqrt(k) + 1e-3, f"{where}: mean {z.mean().item():.3g} std-units off"
    assert abs(z.std().item() - 1) < 6 / math.sqrt(2 * k) + 0.01, f"{where}: std {z.std().item():.3f}x the reference"


def check_init(vit, before: dict, ref: Ref) -> None:
    trained = [(n, p) for n, p in vit.named_parameters() if p.requires_grad and not n.startswith("head.")]
    groups: dict[int, list] = {i: [] for i in range(len(ref.init))}
    for n, p in trained:
        hits = [i for i, (pattern, _) in enumerate(ref.init) if re.search(pattern, n)]
        assert hits, f"{n}: a trained tensor the reference row does not describe"
        groups[hits[0]].append((n, p))
    for i, (pattern, init) in enumerate(ref.init):
        assert groups[i], f"{pattern}: matches no trained tensor"
        check_distribution(init, groups[i], vit, before)
        if init.kind == "backbone":  # every backbone tensor of that kind trains, not just some
            wanted = {n for n in before if re.search(pattern, n) and not n.startswith("head.")}
            assert wanted == {plain(n) for n, _ in groups[i]}, f"{pattern}: not every such backbone tensor trains"
    buffers = dict(vit.named_buffers())
    for pattern, init in ref.buffers:
        found = [(n, b) for n, b in buffers.items() if re.search(pattern, n)]
        assert found, f"{pattern}: no such buffer"
        check_distribution(init, found, vit, before)


# ----------------------------------------------------------------------------- tests


def test_every_method_has_a_reference_row() -> None:
    missing = [n for n in NAMES if n not in REFERENCE and n != "combo"]
    assert not missing, f"add a row to REFERENCE for {missing} (init, dropout, reads), from the reference code"
    unclassified = [n for n, r in REFERENCE.items() if r.reads is None and n not in LINEAR_SITE_ONLY]
    assert not unclassified, f"{unclassified}: give `reads` or list the method in LINEAR_SITE_ONLY"


VIT_B_CASES = [name for fam, name in cases(("vit",))]


@pytest.mark.slow  # one ViT-B/16 per method: ~1-7 s each on 2 cores
@pytest.mark.parametrize("name", VIT_B_CASES)
def test_initial_tensors_on_vit_b16(name: str) -> None:
    vit, before = build("vit_b16", name, {})
    check_init(vit, before, reference(name, typed(name, {})))


TINY_CASES = cases(("vit", "swin"))


@pytest.mark.parametrize("fam,name", TINY_CASES, ids=[f"{f}-{n}" for f, n in TINY_CASES])
def test_initial_tensors_on_tiny_models(fam: str, name: str) -> None:
    options = OPTIONS.get((fam, name), {})
    vit, before = build(TINY[fam], name, options)
    check_init(vit, before, reference(name, typed(name, options)))


def perturb(vit: nn.Module, seed: int = 3) -> None:
    """Move trainable tensors off their init (zero-initialised branches would hide what they read)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in vit.parameters():
            if p.requires_grad:
                p.add_(0.1 * torch.randn(p.shape, generator=g))


def images() -> torch.Tensor:
    return torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("fam,name", TINY_CASES, ids=[f"{f}-{n}" for f, n in TINY_CASES])
def test_dropout_sits_where_the_reference_has_it(fam: str, name: str) -> None:
    options = OPTIONS.get((fam, name), {})
    vit, before = build(TINY[fam], name, options)
    ref = reference(name, typed(name, options))
    plain_dropouts = {n for n, m in create_backbone(TINY[fam], 5, weights="none").named_modules()
                      if isinstance(m, nn.Dropout)}
    added = {n: m.p for n, m in vit.named_modules()
             if isinstance(m, nn.Dropout) and m.p > 0 and plain(n) not in plain_dropouts}
    for n, p in added.items():
        hits = [q for pattern, q in ref.dropout.items() if re.search(pattern, n)]
        assert hits == [p], f"{n}: dropout {p}, the reference has {hits or 'none'} there"
    for pattern in ref.dropout:
        assert any(re.search(pattern, n) for n in added), f"{pattern}: the reference's dropout is missing"
    perturb(vit)
    x = images()
    vit.train()
    torch.manual_seed(0)
    a = vit(x)
    torch.manual_seed(1)
    b = vit(x)
    assert torch.equal(a, b) == (not ref.dropout), "train-mode outputs should differ exactly when there is dropout"
    vit.eval()
    torch.testing.assert_close(vit(x), vit(x), rtol=0, atol=0)


READS = [(fam, name) for fam, name in TINY_CASES if REFERENCE.get(name, Ref([])).reads]
OPS = {"norm1": ("norm1", "weight"), "attn": ("attn.proj", "weight"), "norm2": ("norm2", "weight"),
       "mlp": ("mlp.fc2", "weight")}


def captured_inputs(vit: nn.Module, paths: list[str], x: torch.Tensor) -> dict[str, list[torch.Tensor]]:
    seen: dict[str, list[torch.Tensor]] = {p: [] for p in paths}
    hooks = [vit.get_submodule(p).register_forward_pre_hook(lambda m, args, p=p: seen[p].append(args[0].clone()))
             for p in paths]
    with torch.no_grad():
        vit(x)
    for h in hooks:
        h.remove()
    return seen


@pytest.mark.parametrize("fam,name", READS, ids=[f"{f}-{n}" for f, n in READS])
def test_method_reads_the_reference_input(fam: str, name: str) -> None:
    """Change one op of block 0 (``norm1``'s or ``norm2``'s weight, the attention's or the MLP's output
    projection): exactly the inputs that depend on it move."""
    vit, _ = build(TINY[fam], name, {})
    perturb(vit)
    vit.eval()
    first = "blocks.0" if fam == "vit" else "layers.0.blocks.0"
    reads = {f"{first}.{path}": calls for path, calls in REFERENCE[name].reads.items()}
    x = images()
    base = captured_inputs(vit, list(reads), x)
    block = inner_block(vit.get_submodule(first))
    for op, (path, attr) in OPS.items():
        t = getattr(unwrap(block.get_submodule(path)), attr)
        saved = t.detach().clone()
        with torch.no_grad():
            t.mul_(1.5).add_(0.1)
        moved = captured_inputs(vit, list(reads), x)
        with torch.no_grad():
            t.copy_(saved)
        for path_m, calls in reads.items():
            assert len(moved[path_m]) == len(calls), f"{path_m}: called {len(moved[path_m])} times per forward"
            for i, deps in enumerate(calls):
                changed = not torch.equal(moved[path_m][i], base[path_m][i])
                assert changed == (op in deps), f"{path_m} call {i}: {'moves' if changed else 'stays'} with {op}"
