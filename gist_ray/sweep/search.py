"""Turn a :class:`SweepSpec` into Tune's search algorithm (Optuna) and scheduler."""

from __future__ import annotations

import threading
from typing import Any

import optuna
from ray.tune.schedulers import ASHAScheduler, HyperBandScheduler
from ray.tune.search.optuna import OptunaSearch

from gist_ray.sweep.space import Dist, SweepSpec


class NSGAIISampler(optuna.samplers.NSGAIISampler):
    """Optuna's NSGA-II sampler, picklable: optuna 5's genetic samplers hold a ``threading.Lock``, which Ray Tune
    cannot pickle when it saves the searcher's state; the lock is dropped on pickling and made anew after."""

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state.pop("_thread_lock", None)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._thread_lock = threading.Lock()


def optuna_distribution(d: Dist):
    od = optuna.distributions
    if d.kind in ("choice", "fixed"):
        return od.CategoricalDistribution(d.probe_values())
    if d.kind == "uniform":
        return od.FloatDistribution(d.args[0], d.args[1])
    if d.kind == "loguniform":
        return od.FloatDistribution(d.args[0], d.args[1], log=True)
    if d.kind == "quniform":
        return od.FloatDistribution(d.args[0], d.args[1], step=d.args[2])
    if d.kind == "int":
        return od.IntDistribution(d.args[0], d.args[1])
    return od.IntDistribution(d.args[0], d.args[1], log=True)


def objectives(spec: SweepSpec) -> tuple[list[str], list[str]]:
    s = spec.search
    return [s.metric, *s.objectives.keys()], [s.mode, *s.objectives.values()]


def make_sampler(spec: SweepSpec):
    s = spec.search
    if s.sampler == "random":
        return optuna.samplers.RandomSampler(seed=s.seed)
    if s.sampler == "grid":
        return optuna.samplers.GridSampler({k: d.probe_values() for k, d in spec.space.items()}, seed=s.seed)
    if s.sampler == "nsga2":
        return NSGAIISampler(seed=s.seed)
    return optuna.samplers.TPESampler(seed=s.seed, n_startup_trials=min(4, s.num_samples))


class OptunaSearchOnEvaluations(OptunaSearch):
    """Optuna hears a trial's intermediate value only from the epochs that evaluated it (``train.eval_every``);
    Tune's OptunaSearch would fail on the others. Final values come from the last epoch, which always
    evaluates; the driver turns Tune's strict metric check off for the epochs in between."""

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        wanted = self.metric if isinstance(self.metric, list) else [self.metric]
        if all(m in result for m in wanted):
            super().on_trial_result(trial_id, result)


def make_search_alg(spec: SweepSpec, storage: Any = None, study_name: str | None = None):
    """Optuna through Tune; ``storage`` / ``study_name``: an Optuna study to continue (a resumed sweep's, already
    holding its finished trials)."""
    metrics, modes = objectives(spec)
    multi = len(metrics) > 1
    space: Any = spec.define_by_run or {k: optuna_distribution(d) for k, d in spec.space.items()}
    return OptunaSearchOnEvaluations(
        space=space,
        metric=metrics if multi else metrics[0],
        mode=modes if multi else modes[0],
        sampler=make_sampler(spec),
        points_to_evaluate=[dict(p) for p in spec.search.initial_points] or None,
        storage=storage,
        study_name=study_name,
    )


def make_scheduler(spec: SweepSpec, max_t: int):
    s = spec.search
    if s.scheduler == "asha":
        return ASHAScheduler(time_attr="training_iteration", metric=s.metric, mode=s.mode, max_t=max_t,
                             grace_period=min(s.grace_period, max_t), reduction_factor=s.reduction_factor)
    if s.scheduler == "hyperband":
        return HyperBandScheduler(time_attr="training_iteration", metric=s.metric, mode=s.mode, max_t=max_t,
                                  reduction_factor=s.reduction_factor)
    return None
