"""A sweep's ledger: MLflow's record of its trials, read back so that a resumed sweep redoes nothing.

A trial run whose status is FINISHED or FAILED is *done*: its sampled config (tag ``gist_ray.config``) and final
metrics are given to the new searcher as an evaluated trial and it is never scheduled again. Any other trial run
(RUNNING after a SIGKILL, KILLED after an interrupt) is *unfinished*: its config is scheduled first, its run is
reused and it continues from the checkpoints in the Tune trial directories that trained it (tag
``gist_ray.trial_dirs``). The rest of ``num_samples`` is sampled anew.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from dataclasses import dataclass, field
from typing import Any

import optuna
import yaml

from gist_ray import tracking
from gist_ray.sweep.search import make_sampler, objectives, optuna_distribution
from gist_ray.sweep.space import SweepSpec
from gist_ray.sweep.trial import config_key


@dataclass
class LedgerTrial:
    """One trial run of the sweep as MLflow holds it."""

    run_id: str
    trial_id: str
    status: str  # MLflow: FINISHED, FAILED (done); RUNNING, KILLED (unfinished)
    config: dict[str, Any]
    metrics: dict[str, float]
    error: str = ""
    trial_dirs: list[str] = field(default_factory=list)

    @property
    def epochs(self) -> int:
        """The last epoch logged (0: none)."""
        return int(self.metrics.get("epoch", 0))

    @property
    def done(self) -> bool:
        return self.status in tracking.DONE


@dataclass
class Ledger:
    parent_id: str | None
    trials: list[LedgerTrial]  # oldest first

    def done(self) -> list[LedgerTrial]:
        return [t for t in self.trials if t.done]

    def unfinished(self) -> list[LedgerTrial]:
        return [t for t in self.trials if not t.done]


@dataclass
class ResumePlan:
    evaluated: list[LedgerTrial]  # done: told to the searcher, never scheduled
    continued: list[LedgerTrial]  # unfinished: scheduled first, same config, same run, from their checkpoints
    retired: list[LedgerTrial]  # unfinished duplicates of a continued config beyond the budget: soft-deleted
    initial_points: list[dict]  # continued configs, then the spec's initial points no trial has used yet
    to_run: int  # trials this invocation schedules: continued + new
    seen: int = 0  # trial runs the ledger held: shifts the sampler's seed (see resumed_search_spec)

    def resume_map(self) -> dict[str, dict]:
        """What ``run_trial`` needs to continue each continued trial (see ``gist_ray.sweep.trial``)."""
        return {config_key(t.config): {"trial_id": t.trial_id, "trial_dirs": t.trial_dirs, "max_epoch": t.epochs}
                for t in self.continued}


def read_ledger(c, exp_id: str, sweep: str) -> Ledger:
    parent = tracking.find_run(c, exp_id, {tracking.SWEEP_TAG: sweep, tracking.KIND_TAG: "sweep"})
    runs = tracking.search_all(c, exp_id, tracking.tag_filter({tracking.SWEEP_TAG: sweep, tracking.KIND_TAG: "trial"}))
    return Ledger(parent.info.run_id if parent else None, [_entry(r) for r in runs])


def _entry(run) -> LedgerTrial:
    tags = run.data.tags
    config = tracking.read_json_tag(tags, tracking.CONFIG_TAG)
    if config is None:  # a run logged before the config tag existed: its sampled.* params, parsed back
        config = {k[len("sampled."):]: yaml.safe_load(v) for k, v in run.data.params.items() if k.startswith("sampled.")}
    return LedgerTrial(run.info.run_id, tags.get(tracking.TRIAL_TAG, ""), run.info.status, config,
                       dict(run.data.metrics), tags.get("error", ""),
                       tracking.read_json_tag(tags, tracking.TRIAL_DIRS_TAG, []))


def plan_resume(spec: SweepSpec, ledger: Ledger) -> ResumePlan:
    """Done trials count against ``num_samples``; unfinished ones continue (one per config); the rest is new."""
    evaluated = ledger.done()
    budget = max(spec.search.num_samples - len(evaluated), 0)
    continued, retired, keys = [], [], set()
    for t in ledger.unfinished():
        key = config_key(t.config)
        if key in keys or len(continued) >= budget:
            retired.append(t)  # its trial process could not tell which of two equal configs it continues
        else:
            keys.add(key)
            continued.append(t)
    remaining = [dict(p) for p in spec.search.initial_points]
    for t in evaluated + continued:
        for i, p in enumerate(remaining):
            if config_key(p) == config_key(t.config):
                del remaining[i]
                break
    if spec.search.sampler == "grid" and ledger.trials:
        # Optuna's GridSampler knows the points it chose itself, not those of a study rebuilt from the ledger
        used = {config_key(t.config) for t in evaluated + continued} | {config_key(p) for p in remaining}
        remaining += [p for p in grid_points(spec) if config_key(p) not in used]
    return ResumePlan(evaluated, continued, retired, [t.config for t in continued] + remaining, budget,
                      len(ledger.trials))


def grid_points(spec: SweepSpec) -> list[dict]:
    """Every point of a grid sweep's space (choice / fixed dimensions), in product order."""
    keys = sorted(spec.space)
    return [dict(zip(keys, values)) for values in itertools.product(*(spec.space[k].probe_values() for k in keys))]


def resumed_search_spec(spec: SweepSpec, plan: ResumePlan) -> SweepSpec:
    """The spec the new searcher is built from: the plan's initial points, and the seed shifted by the number of
    trials already run, else a fresh sampler would draw the configurations the killed driver drew first again."""
    search = dataclasses.replace(spec.search, initial_points=plan.initial_points, seed=spec.search.seed + plan.seen)
    return dataclasses.replace(spec, search=search)


def optuna_storage(spec: SweepSpec, evaluated: list[LedgerTrial]) -> tuple[Any, str] | tuple[None, None]:
    """An in-memory Optuna study holding the done trials (COMPLETE with their final values, FAIL for errors,
    PRUNED without the metric), for the resumed sweep's searcher to continue; ``(None, None)`` when none is done.

    Each trial is replayed through ``enqueue_trial`` + ``ask`` (+ the define-by-run function), so the sampler
    sees it as it would have (grid points used, NSGA-II generations) and every distribution is the space's."""
    if not evaluated:
        return None, None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    metrics, modes = objectives(spec)
    storage = optuna.storages.InMemoryStorage()
    study = optuna.create_study(storage=storage, study_name=spec.name, sampler=make_sampler(spec),
                                directions=["maximize" if m == "max" else "minimize" for m in modes])
    dists = {k: optuna_distribution(d) for k, d in spec.space.items()}
    for t in evaluated:
        study.enqueue_trial(t.config, skip_if_exists=False)
        if spec.define_by_run is not None:
            trial = study.ask()
            spec.define_by_run(trial)
        else:
            trial = study.ask(fixed_distributions={k: v for k, v in dists.items() if k in t.config})
        values = [t.metrics.get(m) for m in metrics]
        if t.status == "FAILED":
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        elif any(v is None or not math.isfinite(v) for v in values):
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        else:
            study.tell(trial, values if len(values) > 1 else values[0])
    return storage, spec.name
