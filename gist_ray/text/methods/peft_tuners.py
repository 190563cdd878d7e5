"""peft's tuners injected into a text encoder's linear layers with ``peft.inject_adapter_in_model``
(Mangrulkar et al., "PEFT", github.com/huggingface/peft; reference files ``src/peft/tuners/<tuner>/layer.py``
for placement and init, ``src/peft/utils/constants.py`` for the default targets per architecture).

- ``peft_lora``: LoRA (Hu et al., arXiv 2106.09685) on the query and value projections, rank 8, alpha 8 (the
  LoRA paper's RoBERTa-base GLUE setting, Table 9; peft's default targets for BERT/RoBERTa/T5 are q and v too);
  A Kaiming-uniform, B zero (peft ``LoraLayer.reset_lora_parameters``), no LoRA dropout (peft's default).
- ``peft_dora``: DoRA (Liu et al., arXiv 2402.09353): LoRA plus a learned magnitude per output feature.
- ``peft_loha``, ``peft_lokr``: LoHa (arXiv 2108.06098) and LoKr (arXiv 2309.14859), same targets.
- ``peft_ia3``: (IA)^3 (Liu et al., arXiv 2205.05638) with peft's default text targets: scales on the outputs of
  the key and value projections and on the input of the feed-forward output layer (``k``, ``v``, ``ffn_out``
  with ``ffn_out`` feed-forward: peft's ``TRANSFORMERS_MODELS_TO_IA3_TARGET_MODULES_MAPPING`` for bert and t5).

Sites are family-independent names (``q``, ``k``, ``v``, ``attn_out``, ``ffn_in``, ``ffn_out``) mapped to each
family's module names. peft freezes everything but its own parameters on injection; the previous trainable set
(any method applied before) is restored, and nothing else is unfrozen.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from torch import nn

from gist_ray.errors import ConfigError
from gist_ray.methods.peft_tuners import lokr_params
from gist_ray.text.families import TextFamily
from gist_ray.text.methods.base import check_sites, register_text_method, site_linears


@dataclass
class TextLowRankConfig:
    """Knobs of the low-rank tuners (LoRA, DoRA, LoHa, LoKr)."""

    rank: int = 8
    alpha: float = 8.0
    dropout: float = 0.0
    targets: list[str] = field(default_factory=lambda: ["q", "v"])

    def check(self, where: str) -> None:
        if self.rank < 1:
            raise ConfigError(f"{where}.rank: must be >= 1, got {self.rank}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"{where}.dropout: must be in [0, 1), got {self.dropout}")
        check_sites(self.targets, where)


@dataclass
class TextIA3Config:
    """(IA)^3: learned scales on the outputs of ``targets``, on the inputs of those also in ``feedforward``."""

    targets: list[str] = field(default_factory=lambda: ["k", "v", "ffn_out"])
    feedforward: list[str] = field(default_factory=lambda: ["ffn_out"])

    def check(self, where: str) -> None:
        check_sites(self.targets, where)
        if not set(self.feedforward) <= set(self.targets):
            raise ConfigError(f"{where}.feedforward: must be a subset of targets {self.targets}, "
                              f"got {self.feedforward}")


def _lowrank(peft_cls: str, **extra) -> Callable[[TextFamily, TextLowRankConfig], Any]:
    def make(family: TextFamily, c: TextLowRankConfig):
        import peft

        cls = getattr(peft, peft_cls)
        if peft_cls == "LoraConfig":
            knobs = {"lora_alpha": c.alpha, "lora_dropout": c.dropout}
        else:
            knobs = {"alpha": c.alpha, "rank_dropout": c.dropout}
        return cls(r=c.rank, target_modules=family.target_regex(c.targets), **knobs, **extra)

    return make


def _ia3(family: TextFamily, c: TextIA3Config):
    import peft

    ff = family.target_regex(c.feedforward) if c.feedforward else []
    return peft.IA3Config(target_modules=family.target_regex(c.targets), feedforward_modules=ff)


@dataclass(frozen=True)
class Tuner:
    config_cls: type
    make: Callable[[TextFamily, Any], Any]  # (family, our config) -> peft config
    per_layer: Callable[[int, int, str, Any], int]  # (in, out, site, cfg) -> trainable parameters
    paper: str


LowRank = TextLowRankConfig
TUNERS: dict[str, Tuner] = {
    "peft_lora": Tuner(LowRank, _lowrank("LoraConfig"), lambda i, o, s, c: c.rank * (i + o), "LoRA, arXiv 2106.09685"),
    "peft_dora": Tuner(LowRank, _lowrank("LoraConfig", use_dora=True), lambda i, o, s, c: c.rank * (i + o) + o,
                       "DoRA, arXiv 2402.09353"),
    "peft_loha": Tuner(LowRank, _lowrank("LoHaConfig"), lambda i, o, s, c: 2 * c.rank * (i + o), "LoHa, arXiv 2108.06098"),
    "peft_lokr": Tuner(LowRank, _lowrank("LoKrConfig"), lambda i, o, s, c: lokr_params(i, o, c.rank),
                       "LoKr, arXiv 2309.14859"),
    "peft_ia3": Tuner(TextIA3Config, _ia3, lambda i, o, s, c: i if s in c.feedforward else o, "(IA)^3, arXiv 2205.05638"),
}


def inject(encoder: nn.Module, peft_config: Any) -> None:
    """``peft.inject_adapter_in_model`` keeping the trainable set: old parameters get back their flag."""
    import peft

    before = {id(p): p.requires_grad for p in encoder.parameters()}
    peft.inject_adapter_in_model(peft_config, encoder)
    for p in encoder.parameters():
        if id(p) in before:
            p.requires_grad_(before[id(p)])


def _register(name: str, tuner: Tuner) -> None:
    def count(encoder: nn.Module, family: TextFamily, cfg: Any) -> int:
        return sum(tuner.per_layer(lin.in_features, lin.out_features, site, cfg)
                   for site, _, lin in site_linears(encoder, family, cfg.targets))

    def apply(encoder: nn.Module, family: TextFamily, cfg: Any) -> None:
        inject(encoder, tuner.make(family, cfg))

    register_text_method(name, tuner.config_cls, count=count, paper=f"{tuner.paper} via peft",
                         reference="huggingface/peft src/peft/tuners (inject_adapter_in_model)")(apply)


for _name, _tuner in TUNERS.items():
    _register(_name, _tuner)
