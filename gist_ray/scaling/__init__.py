"""Scaling studies, analysis half: power-law fits, GIST gains with bootstrap CIs, paired tests and plots.

Everything here works on numpy arrays or tidy records (``list[dict]``) and never needs Ray or torch.
"""

from gist_ray.scaling.fit import (
    BootstrapFit,
    GistGain,
    PairedTest,
    PowerLawFit,
    bootstrap_fit,
    fit_power_law,
    gist_gain,
    paired_test,
    power_law,
)

__all__ = [
    "BootstrapFit",
    "GistGain",
    "PairedTest",
    "PowerLawFit",
    "bootstrap_fit",
    "fit_power_law",
    "gist_gain",
    "paired_test",
    "power_law",
]
