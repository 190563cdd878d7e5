"""peft's tuners injected into timm's linear layers with ``peft.inject_adapter_in_model`` (Mangrulkar et al.,
"PEFT: state-of-the-art parameter-efficient fine-tuning methods", github.com/huggingface/peft).

Reference: huggingface/peft itself, ``src/peft/tuners/{lora,loha,lokr,ia3}/``: the layers, their init and their
defaults are peft's own (LoRA / DoRA: rank 8, alpha 8, ``A`` kaiming_uniform(a=sqrt(5)), ``B`` zeros, no dropout);
gist-ray only chooses the target linears.

One table row per tuner: LoRA (Hu et al., arXiv 2106.09685), DoRA (Liu et al., arXiv 2402.09353), LoHa (Hyeon-Woo
et al., arXiv 2108.06098), LoKr (Yeh et al., arXiv 2309.14859) and (IA)^3 (Liu et al., arXiv 2205.05638), on the
chosen block linears (``qkv``, ``proj``, ``fc1``, ``fc2``; timm's ``qkv`` is fused, so q, k and v are adapted
together). peft freezes everything but its own parameters on injection; the previous trainable set (the head and
any method applied before) is restored, and nothing else is unfrozen.

Not here: VeRA (and VB-LoRA, etc.). Their random projections are shared state stored on the tuner object, which
``inject_adapter_in_model`` refuses ("uses shared state stored on the tuner"); only ``get_peft_model`` supports
them, and that wraps the model in a PeftModel meant for transformers models. VeRA is written in ``vera.py``.

peft is optional: without it these methods are not registered. It is imported on first use only (it pulls in
transformers: seconds of import time in every process, e.g. every sweep trial, that uses no peft tuner).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from typing import Any, Callable

from torch import nn

from gist_ray.errors import ConfigError
from gist_ray.methods.base import blocks, check_sites, register_method, site_linear
from gist_ray.typed_config import setting

HAVE_PEFT = importlib.util.find_spec("peft") is not None  # optional dependency


def _peft():
    import peft

    return peft

SITE_PATTERNS = {"qkv": r"attn\.qkv", "proj": r"attn\.proj", "fc1": r"mlp\.fc1", "fc2": r"mlp\.fc2"}


@dataclass
class PeftLowRankConfig:
    """Knobs of the low-rank tuners (LoRA, DoRA, LoHa, LoKr)."""

    rank: int = setting(8, ge=1)
    alpha: float = 8.0
    targets: list[str] = field(default_factory=lambda: ["qkv"])

    def check(self, where: str) -> None:
        check_sites(self.targets, where)


@dataclass
class PeftIA3Config:
    """(IA)^3: learned scales on the outputs of ``targets``, on the inputs of those also in ``feedforward``."""

    targets: list[str] = field(default_factory=lambda: ["qkv", "fc2"])
    feedforward: list[str] = field(default_factory=lambda: ["fc2"])

    def check(self, where: str) -> None:
        check_sites(self.targets, where)
        if not set(self.feedforward) <= set(self.targets):
            raise ConfigError(f"{where}.feedforward: must be a subset of targets {self.targets}, "
                              f"got {self.feedforward}")


def target_regex(sites: list[str]) -> str:
    """A full-match pattern for the chosen linears of every block (``blocks.3.`` on a ViT, ``layers.1.blocks.0.``
    on a Swin), under any block wrappers."""
    alts = "|".join(SITE_PATTERNS[s] for s in sites)
    return rf"(?:layers\.\d+\.)?blocks\.\d+\.(?:.*\.)?(?:{alts})"


def factorization(n: int) -> tuple[int, int]:
    """(m, n // m) with m the largest divisor of n not above sqrt(n) (LoKr's default split)."""
    m = max(k for k in range(1, int(n**0.5) + 1) if n % k == 0)
    return m, n // m


def lokr_params(i: int, o: int, r: int) -> int:
    """LoKr with ``decompose_both=False``: a full ``w1`` kron a ``w2`` that is low-rank when r is small."""
    (ol, ok), (im, inn) = factorization(o), factorization(i)
    w2 = r * (ok + inn) if r < max(ok, inn) / 2 else ok * inn
    return ol * im + w2


@dataclass(frozen=True)
class Tuner:
    config_cls: type
    make: Callable[[Any], Any]  # our config -> peft config
    per_layer: Callable[[int, int, str, Any], int]  # (in, out, site, cfg) -> trainable parameters
    paper: str


def _lowrank(peft_cls: str, **extra) -> Callable[[PeftLowRankConfig], Any]:
    def make(c: PeftLowRankConfig):
        cls = getattr(_peft(), peft_cls)
        alpha = {"lora_alpha": c.alpha} if peft_cls == "LoraConfig" else {"alpha": c.alpha}
        return cls(r=c.rank, target_modules=target_regex(c.targets), **alpha, **extra)

    return make


def _ia3(c: PeftIA3Config):
    ff = target_regex(c.feedforward) if c.feedforward else []
    return _peft().IA3Config(target_modules=target_regex(c.targets), feedforward_modules=ff)


LowRank = PeftLowRankConfig
TUNERS: dict[str, Tuner] = {
    # name: Tuner(our config, -> peft config, per-layer count (in, out, site, cfg), paper)
    "peft_lora": Tuner(LowRank, _lowrank("LoraConfig"), lambda i, o, s, c: c.rank * (i + o), "LoRA, arXiv 2106.09685"),
    "peft_dora": Tuner(
        LowRank, _lowrank("LoraConfig", use_dora=True), lambda i, o, s, c: c.rank * (i + o) + o, "DoRA, arXiv 2402.09353"
    ),
    "peft_loha": Tuner(LowRank, _lowrank("LoHaConfig"), lambda i, o, s, c: 2 * c.rank * (i + o), "LoHa, arXiv 2108.06098"),
    "peft_lokr": Tuner(LowRank, _lowrank("LoKrConfig"), lambda i, o, s, c: lokr_params(i, o, c.rank), "LoKr, arXiv 2309.14859"),
    "peft_ia3": Tuner(PeftIA3Config, _ia3, lambda i, o, s, c: i if s in c.feedforward else o, "(IA)^3, arXiv 2205.05638"),
}


def inject(vit: nn.Module, peft_config: Any) -> None:
    """``peft.inject_adapter_in_model`` keeping the trainable set: old parameters get back their flag."""
    before = {id(p): p.requires_grad for p in vit.parameters()}
    _peft().inject_adapter_in_model(peft_config, vit)
    for p in vit.parameters():
        if id(p) in before:
            p.requires_grad_(before[id(p)])


def merge(vit: nn.Module) -> None:
    """Fold every peft layer into its base layer and put the base layer back in its place."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    found = [(n, m) for n, m in vit.named_modules() if isinstance(m, BaseTunerLayer)]
    for name, layer in reversed(found):
        layer.merge()
        parent, _, attr = name.rpartition(".")
        setattr(vit.get_submodule(parent), attr, layer.get_base_layer())


def _register(name: str, tuner: Tuner) -> None:
    def count(vit: nn.Module, cfg: Any) -> int:
        sites = [(s, site_linear(b, s)) for b in blocks(vit) for s in cfg.targets]
        return sum(tuner.per_layer(lin.in_features, lin.out_features, s, cfg) for s, lin in sites)

    def apply(vit: nn.Module, cfg: Any) -> None:
        inject(vit, tuner.make(cfg))

    register_method(name, tuner.config_cls, count=count, merge=merge, paper=f"{tuner.paper} via peft",
                    families=("vit", "swin"))(apply)


if HAVE_PEFT:
    for _name, _tuner in TUNERS.items():
        _register(_name, _tuner)
