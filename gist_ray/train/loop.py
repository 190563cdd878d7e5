"""The GIST training run in plain PyTorch: no Ray imports.

A :class:`Reporter` connects it to whatever runs it (Ray Train workers, a Tune trial, a local process): it
receives one report per epoch (metrics and, every ``checkpoint_every`` epochs, a checkpoint directory) and
hands back the latest checkpoint on resume. Image data stay decoded uint8 tensors on the training device;
batches are resized and normalised there. Text splits stay on the CPU: ``split.inputs(idx)`` pads each
batch's token ids. Loss parts are summed on the device and read once per epoch (no per-step
host syncs).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol, Sequence

import torch
import torch.distributed as dist
from torch import nn

from gist_ray.config import Config
from gist_ray.data.pairs import ClassPairs
from gist_ray.model import (
    apply_trainable,
    build_from_config,
    save_trainable,
    trainable_counts,
    trainable_state,
    unwrap,
)
from gist_ray.run_data import run_splits, split_metrics
from gist_ray.timing import phase, record
from gist_ray.train.checkpoint import (
    STATE_FILE,
    WEIGHTS_FILE,
    CheckpointError,
    atomic_torch_save,
    read_checkpoint,
    write_checksums,
)
from gist_ray.train.evaluate import BatchPrep, allreduce, evaluate, evaluate_text, take_rows, to_device
from gist_ray.train.optim import make_optimizer

__all__ = ["GistRun", "LocalReporter", "Reporter", "run_training", "autocast_dtype", "BatchPrep", "evaluate",
           "take_rows"]

log = logging.getLogger(__name__)


class Reporter(Protocol):
    rank: int
    world_size: int

    def report(self, metrics: dict[str, Any], checkpoint_dir: str | None) -> None: ...

    # every retained checkpoint, newest first (resume falls back to an older one when the newest is unreadable);
    # each directory is materialised lazily, while the context is open
    def checkpoints(self) -> contextlib.AbstractContextManager[Iterator[str]]: ...

    def prepare_model(self, model: nn.Module) -> nn.Module: ...

    def device(self) -> torch.device: ...


class LocalReporter:
    """Runs in this process: checkpoints under ``directory/checkpoint_NNNNNN`` (the newest ``keep``; None: all),
    metrics kept in a list and handed to each ``on_report`` listener (e.g. MLflow logging, a console line)
    before the checkpoint is written, so a kill between the two never loses an epoch's record."""

    rank, world_size = 0, 1

    def __init__(self, directory: str | os.PathLike, device: torch.device | None = None,
                 on_report: Sequence[Callable[[dict[str, Any]], None]] = (), keep: int | None = None) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.history: list[dict[str, Any]] = []
        self._device = device
        self.on_report = list(on_report)
        self.keep = keep

    def report(self, metrics: dict[str, Any], checkpoint_dir: str | None) -> None:
        self.history.append(dict(metrics))
        for listener in self.on_report:
            listener(metrics)
        if checkpoint_dir:
            target = self.dir / f"checkpoint_{int(metrics['epoch']):06d}"
            tmp = self.dir / f".tmp_{target.name}"
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.copytree(checkpoint_dir, tmp)
            shutil.rmtree(target, ignore_errors=True)
            tmp.replace(target)  # atomic: a checkpoint directory is complete or absent
            if self.keep:
                for old in sorted(self.dir.glob("checkpoint_*"))[: -self.keep]:
                    shutil.rmtree(old, ignore_errors=True)

    @contextlib.contextmanager
    def checkpoints(self) -> Iterator[Iterator[str]]:
        yield iter([str(p) for p in sorted(self.dir.glob("checkpoint_*"), reverse=True) if p.is_dir()])

    def prepare_model(self, model: nn.Module) -> nn.Module:
        return model

    def device(self) -> torch.device:
        return self._device or torch.device("cuda" if torch.cuda.is_available() else "cpu")


# ----------------------------------------------------------------------------- pieces


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """bf16 on GPU by default, fp32 on CPU; explicit choices are honoured."""
    if precision == "auto":
        return torch.bfloat16 if device.type == "cuda" else None
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


# ----------------------------------------------------------------------------- the run


class GistRun:
    """One training run: setup, epochs, checkpoints, final test. ``fit()`` returns the final metrics."""

    def __init__(self, cfg: Config, reporter: Reporter) -> None:
        self.cfg = cfg
        self.rep = reporter
        self.device = reporter.device()
        torch.manual_seed(cfg.train.seed)
        d = cfg.data
        self.text = cfg.modality == "text"
        self.metric_names = split_metrics(cfg)
        with phase("run/data"):
            splits = run_splits(cfg, [s for s in (d.train_split, d.eval_split) if s])
        self.train_split, self.eval_split = splits[d.train_split], splits.get(d.eval_split or "")
        self.num_classes = self.train_split.num_classes
        with phase("run/model"):
            model = build_from_config(cfg, self.num_classes).to(self.device)
        self.counts = trainable_counts(model)
        with phase("run/prepare_model"):
            self.model = reporter.prepare_model(model)
        if cfg.train.compile:  # after DDP wrapping, as PyTorch recommends; unwrap() sees through both
            self.model = torch.compile(self.model)
        self.prep = None if self.text else BatchPrep(self.model, self.device)
        self.amp = autocast_dtype(cfg.train.precision, self.device)
        t = cfg.train
        per_worker = math.ceil(len(self.train_split) / reporter.world_size)
        self.steps_per_epoch = max(1, per_worker // t.batch_size if t.drop_last else math.ceil(per_worker / t.batch_size))
        self.opt, self.sched = make_optimizer(unwrap(self.model), t, self.steps_per_epoch)
        self.scaler = torch.amp.GradScaler(enabled=self.amp == torch.float16)
        # image rows live on the training device (resized there); text rows stay on the CPU (gathered, padded)
        self.images = None if self.text else self.train_split.images.to(self.device)
        self.labels = self.train_split.labels.to(self.device)
        # the objective (gist_ray.objectives) computes each step's loss; the data side supplies what it declares
        self.objective = unwrap(self.model).objective
        self.pairs = ClassPairs(self.train_split.labels) if self.objective.needs.pairs else None
        self.start_epoch = 0
        self.last_metrics: dict[str, Any] = {}
        # the eval split's metrics are named by its role: "test" when it is the test split (the paper-comparable
        # protocol evaluates test every epoch and reports the best epoch), else "val"
        self.eval_role = "test" if d.eval_split == "test" else "val"
        self.best_eval = -math.inf
        # train.test_at=best_val: the trained parameters of the best eval epoch so far (kept in checkpoints)
        self.best_state: dict[str, torch.Tensor] | None = None
        self.best_epoch = 0

    # -- checkpoints
    def save(self, directory: str, epoch: int, metrics: dict[str, Any] | None = None) -> None:
        save_trainable(self.model, Path(directory) / WEIGHTS_FILE)
        plain = {k: v for k, v in (metrics or {}).items() if isinstance(v, (int, float, str, bool))}
        state = {"epoch": epoch, "metrics": plain, "optimizer": self.opt.state_dict(), "scheduler": self.sched.state_dict(),
                 "scaler": self.scaler.state_dict()}
        if self.best_state is not None:
            state["best"] = {"epoch": self.best_epoch, "weights": self.best_state}
        atomic_torch_save(state, Path(directory) / STATE_FILE)
        write_checksums(directory)

    def restore(self, directory: str) -> None:
        weights, state = read_checkpoint(directory, map_location=self.device)
        apply_trainable(self.model, weights, Path(directory) / WEIGHTS_FILE)
        self.opt.load_state_dict(state["optimizer"])
        self.sched.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.start_epoch = int(state["epoch"])
        self.last_metrics = dict(state.get("metrics") or {})
        best = state.get("best")
        if best:
            self.best_state, self.best_epoch = dict(best["weights"]), int(best["epoch"])
        best = self.last_metrics.get(f"{self.eval_role}/best_score", self.last_metrics.get(f"{self.eval_role}/best_acc"))
        self.best_eval = float(best) if best is not None else -math.inf

    def resume(self) -> None:
        """Restore the newest usable checkpoint; an unusable one is skipped, with a warning, for the one before."""
        skipped: list[str] = []
        with self.rep.checkpoints() as candidates:
            for d in candidates:
                try:
                    self.restore(d)
                except (CheckpointError, ValueError, KeyError, RuntimeError) as exc:
                    log.warning("checkpoint %s is unusable; falling back to the one before it: %s", d, exc)
                    skipped.append(f"{d}: {exc}")
                    continue
                if skipped:
                    log.warning("resumed from the older checkpoint %s (epoch %d) after skipping %d unusable newer "
                                "one(s)", d, self.start_epoch, len(skipped))
                break
            else:
                if skipped:
                    raise CheckpointError("no usable checkpoint to resume from:\n  " + "\n  ".join(skipped))
        if dist.is_available() and dist.is_initialized():  # every worker must continue from the same epoch
            t = torch.tensor([self.start_epoch, -self.start_epoch], device=self.device, dtype=torch.int64)
            dist.all_reduce(t, op=dist.ReduceOp.MAX)
            if int(t[0]) != -int(t[1]):
                raise CheckpointError(f"workers resumed from different epochs ({-int(t[1])} to {int(t[0])}); "
                                      "is the run's storage shared by all nodes?")

    # -- one epoch
    def forward(self, x: torch.Tensor | dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """One training forward, under the run's autocast: (cls logits, gist logits or None). ``x``: an image
        batch, or a text batch's keyword inputs (``input_ids``, ``attention_mask``, ...)."""
        with torch.autocast(self.device.type, dtype=self.amp, enabled=self.amp is not None):
            return self.model(**x) if isinstance(x, dict) else self.model(x)

    def batch(self, idx: torch.Tensor) -> torch.Tensor | dict[str, torch.Tensor]:
        """The model inputs of training rows ``idx``: prepared images, or padded token ids on the device."""
        if self.text:
            pad = 8 if self.cfg.train.compile else 1
            return to_device(self.train_split.inputs(idx, pad_to_multiple_of=pad), self.device)
        return self.prep(take_rows(self.images, idx))

    def batches(self, epoch: int) -> Iterator[torch.Tensor]:
        """This worker's batches of training indices for ``epoch`` (anchors then same-class partners when the
        objective declares pairs); deterministic in (seed, epoch, rank), so a resumed run sees the same ones."""
        cfg = self.cfg
        gen = torch.Generator().manual_seed(cfg.train.seed * 100_003 + epoch)
        order = torch.randperm(len(self.labels), generator=gen)[self.rep.rank :: self.rep.world_size]
        pair_gen = torch.Generator().manual_seed((cfg.train.seed * 100_003 + epoch) * 1_009 + self.rep.rank)
        bs = cfg.train.batch_size
        stop = len(order) - len(order) % bs if cfg.train.drop_last and len(order) >= bs else len(order)
        for i in range(0, stop, bs):
            idx = order[i : i + bs]
            if self.pairs is not None:
                idx = self.pairs.batch(idx, pair_gen)
            yield idx.to(self.device, non_blocking=True)

    def train_epoch(self, epoch: int) -> dict[str, float]:
        """One pass over this worker's shard; returns ``train/<part>`` means for every part the objective reports,
        plus ``train/loss`` and ``train/acc``. One host sync, at the end."""
        sums, rows = self.train_steps(epoch)
        keys = sorted(sums)  # the same on every worker: the parts depend on the config only
        rows_t = torch.tensor(float(rows), dtype=torch.float64, device=self.device)  # the epoch's one sync is next
        counted = torch.stack([*(sums[k] for k in keys), rows_t])
        *totals, n = allreduce(counted).tolist()
        n = max(1.0, n)
        out = {f"train/{k}": v / n for k, v in zip(keys, totals)}
        if not math.isfinite(out["train/loss"]):
            raise FloatingPointError(f"training loss became {out['train/loss']} at epoch {epoch + 1}")
        return out

    def train_steps(self, epoch: int) -> tuple[dict[str, torch.Tensor], int]:
        """The optimizer steps of one epoch, with no host sync (the GPU runs behind the Python loop): the
        row-weighted sums of the loss, of every part the objective reports and of correct predictions, on the
        device, and the number of rows, counted on the host."""
        cfg = self.cfg
        self.model.train()
        sums: dict[str, torch.Tensor] = {}
        rows = 0

        def add(key: str, value: torch.Tensor) -> None:
            sums[key] = sums[key] + value if key in sums else value.detach().double().clone()

        for idx in self.batches(epoch):
            x, y = self.batch(idx), self.labels[idx]
            step = self.objective.step(self.forward, x, y)
            self.opt.zero_grad(set_to_none=True)
            self.scaler.scale(step.loss).backward()
            if cfg.train.grad_clip > 0:
                self.scaler.unscale_(self.opt)
                nn.utils.clip_grad_norm_([p for p in self.model.parameters() if p.requires_grad], cfg.train.grad_clip)
            self.scaler.step(self.opt)
            self.scaler.update()
            self.sched.step()
            n = len(step.target)
            rows += n
            with torch.no_grad():
                add("loss", step.loss.detach() * n)
                for key, value in step.parts.items():
                    add(key, value * n)
                add("acc", (step.logits.argmax(-1) == step.target).sum())
        return sums, rows

    def fit(self) -> dict[str, Any]:
        cfg = self.cfg
        self.resume()
        metrics: dict[str, Any] = {}
        epochs = cfg.train.epochs
        for epoch in range(self.start_epoch, epochs):
            t0 = time.perf_counter()
            metrics = {"epoch": epoch + 1, **self.train_epoch(epoch), "lr": self.sched.get_last_lr()[0]}
            last = epoch + 1 == epochs
            if self.eval_split is not None and ((epoch + 1) % cfg.train.eval_every == 0 or last):
                ev = self.evaluate(self.eval_split)
                if cfg.train.test_at == "best_val" and ev["score"] > self.best_eval:
                    self.best_state, self.best_epoch = trainable_state(self.model), epoch + 1
                self.best_eval = max(self.best_eval, ev["score"])
                role = self.eval_role
                metrics.update({f"{role}/{k}": v for k, v in ev.items()})
                metrics[f"{role}/best_score"] = self.best_eval
                if not self.text:
                    metrics[f"{role}/best_acc"] = self.best_eval
            metrics["epoch_time_s"] = time.perf_counter() - t0
            record("run/epoch", time.time() - metrics["epoch_time_s"], time.time())
            metrics.update(self.token_stats())
            if last:
                with phase("run/test"):
                    metrics.update(self.test())
            metrics.update({f"params/{k}": v for k, v in self.counts.items()})
            self._report(metrics, checkpoint=(epoch + 1) % cfg.train.checkpoint_every == 0 or last)
        if not metrics:  # resumed after the last epoch: nothing left but the final numbers
            metrics = dict(self.last_metrics) or {"epoch": epochs, **{f"params/{k}": v for k, v in self.counts.items()}}
            if self.cfg.data.test_split and "test/acc" not in metrics and "test/score" not in metrics:
                metrics.update(self.test())
            self._report(metrics, checkpoint=False)
        return metrics

    def token_stats(self) -> dict[str, float]:
        """The Gist token's norm and sum, computed on this worker (DDP keeps them identical across workers)."""
        gist = unwrap(self.model).gist
        if gist is None:
            return {}
        t = gist.tokens.detach().double()
        return {"gist/token_norm": float(t.norm()), "gist/token_sum": float(t.sum())}

    def test(self) -> dict[str, float]:
        d = self.cfg.data
        if not d.test_split:
            return {}
        split = run_splits(self.cfg, [d.test_split])[d.test_split]
        if self.cfg.train.test_at != "best_val" or self.best_state is None:
            return {f"test/{k}": v for k, v in self.evaluate(split).items()}
        last = trainable_state(self.model)  # test the best val epoch's weights, then put the last ones back
        apply_trainable(self.model, self.best_state, f"best epoch {self.best_epoch}")
        try:
            out = {f"test/{k}": v for k, v in self.evaluate(split).items()}
        finally:
            apply_trainable(self.model, last, "last epoch")
        return {**out, "test/epoch": self.best_epoch}

    def evaluate(self, split: Any) -> dict[str, float]:
        """The split's metrics, ``loss`` and ``score`` (the selection metric: ``acc`` for images)."""
        bs = 2 * self.cfg.train.batch_size
        if self.text:
            return evaluate_text(self.model, split, self.metric_names, bs, self.device, self.amp, self.rep.rank,
                                 self.rep.world_size)
        ev = evaluate(self.model, split, self.prep, bs, self.device, self.amp, self.rep.rank, self.rep.world_size)
        return {"acc": ev["acc"], "loss": ev["loss"], "score": ev["acc"]}

    def _report(self, metrics: dict[str, Any], checkpoint: bool) -> None:
        with phase("run/report"):
            if checkpoint and self.rep.rank == 0:
                with tempfile.TemporaryDirectory(prefix="gist-ckpt-") as tmp:
                    self.save(tmp, int(metrics["epoch"]), metrics)
                    self.rep.report(metrics, tmp)
            else:
                self.rep.report(metrics, None)


def run_training(cfg: Config, reporter: Reporter) -> dict[str, Any]:
    """Build, train (resuming from the reporter's latest checkpoint), evaluate; return the final metrics."""
    return GistRun(cfg, reporter).fit()
