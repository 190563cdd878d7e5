"""Scaling studies, analysis half: intervals, GIST gains and paired tests, scaling-law fits and plots.

Everything here works on numpy arrays or tidy records (``list[dict]``) and never needs Ray or torch.
"""

from gist_ray.scaling.fit import (
    POWER,
    SATURATING,
    Law,
    PowerLawFit,
    ScalingFit,
    choose_law,
    fit_power_law,
    fit_scaling_law,
    power_law,
)
from gist_ray.scaling.gains import PairedGain, PairedTest, paired_differences, paired_gain, paired_test
from gist_ray.scaling.intervals import (
    LEVEL,
    MIN_DF,
    Interval,
    mean_interval,
    stratified_interval,
    stratified_t_test,
    t_interval,
)

__all__ = [
    "LEVEL",
    "MIN_DF",
    "POWER",
    "SATURATING",
    "Interval",
    "Law",
    "PairedGain",
    "PairedTest",
    "PowerLawFit",
    "ScalingFit",
    "choose_law",
    "fit_power_law",
    "fit_scaling_law",
    "mean_interval",
    "paired_differences",
    "paired_gain",
    "paired_test",
    "power_law",
    "stratified_interval",
    "stratified_t_test",
    "t_interval",
]
