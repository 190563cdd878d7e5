"""Several methods at once, applied in order, e.g. GIST's "Adapter + VPT" rows (Table 1 (c)/(d) of
arXiv 2312.07255: the official adapter with bottleneck 4 plus 20 shallow prompts, the default here).

``methods`` is a list of mappings ``{name: <method>, <its knobs>...}``. The count is the sum of the parts'
counts (parts must train disjoint parameters, e.g. not ``full`` with anything). No merge is offered: merge the
parts' wrappers yourself, innermost (first applied) first.
"""

from dataclasses import dataclass, field

from gist_ray.errors import ConfigError
from gist_ray.methods.base import METHODS, register_method
from gist_ray.typed_config import from_dict


def _default() -> list[dict]:
    return [{"name": "gist_adapter", "bottleneck": 4}, {"name": "vpt_shallow", "length": 20}]


@dataclass
class ComboConfig:
    methods: list[dict] = field(default_factory=_default)

    def check(self, where: str) -> None:
        self.parts(where)

    def parts(self, where: str = "method") -> list[tuple[str, object]]:
        """[(name, typed config)] of the parts, validated; errors name ``where.methods[i]``."""
        if not self.methods:
            raise ConfigError(f"{where}.methods: expected a non-empty list of {{name: ..., <knobs>}}")
        out = []
        for i, entry in enumerate(self.methods):
            at = f"{where}.methods[{i}]"
            opts = dict(entry)
            name = opts.pop("name", None)
            if not isinstance(name, str) or name == "combo" or name not in METHODS:
                raise ConfigError(f"{at}.name: expected a registered method other than combo, got {name!r}")
            out.append((name, from_dict(METHODS.get(name).config_cls, opts, at)))
        return out


def _count(vit, cfg: ComboConfig) -> int:
    return sum(METHODS.get(name).count(vit, part) for name, part in cfg.parts())


@register_method("combo", ComboConfig, count=_count, paper="GIST Table 1 (Adapter + VPT), arXiv 2312.07255",
                 families=("vit", "swin"))
def apply(vit, cfg: ComboConfig) -> None:
    for name, part in cfg.parts():  # apply_method has checked every part against the backbone family
        METHODS.get(name).apply(vit, part)
