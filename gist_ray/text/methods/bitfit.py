"""BitFit (Ben Zaken, Goldberg & Ravfogel, "BitFit: Simple Parameter-efficient Fine-tuning for Transformer-based
Masked Language-models", ACL 2022, arXiv 2106.10199).

Reference: github.com/benzakenelad/BitFit, ``glue_evaluator.py`` (``BIAS_TERMS_DICT['all'] = 'bias'``,
``_deactivate_relevant_gradients``): with the default ``--bias-terms all`` every parameter whose name contains
``bias`` trains, embeddings' LayerNorm included; no parameter is added. Defined on the BERT family only: T5's
linears and norms have no biases, so BitFit would train nothing there.
"""

from dataclasses import dataclass

from gist_ray.text.methods.base import register_text_method


@dataclass
class BitFitConfig:
    """No knobs."""


def _biases(encoder) -> list:
    return [p for n, p in encoder.named_parameters() if "bias" in n]


@register_text_method("bitfit", BitFitConfig, count=lambda enc, fam, cfg: sum(p.numel() for p in _biases(enc)),
                      families=("bert",), paper="BitFit, arXiv 2106.10199",
                      reference="benzakenelad/BitFit glue_evaluator.py")
def apply(encoder, family, cfg: BitFitConfig) -> None:
    for b in _biases(encoder):
        b.requires_grad_(True)
