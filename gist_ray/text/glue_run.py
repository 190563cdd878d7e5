"""The paper's Table 3 on GLUE with the plain-PyTorch trainer: resumable runs, one JSON line each, and the table.

    python -m gist_ray.text.glue_run --root /data/glue --backbone t5_base --method adapter_attempt \\
        --gist off on --lam 0.25 0.5 0.75 --out table3.jsonl --device cuda

Defaults are the paper's / ATTEMPT's GLUE recipe: the eight Table 3 tasks, batch 32, max length 256, lr 3e-4,
20 epochs, 500 warmup steps, the ``attempt_*`` splits. A run trains on ``attempt_train``, evaluates ``attempt_val``
after every epoch, keeps the trained parameters of the best epoch (ATTEMPT's ``load_best_model_at_end``) and
reports ``attempt_test`` there. Runs already in ``--out`` are skipped, so rerunning the command resumes. The table
picks, per task, the lambda with the best val score (the paper searches lambda in {0.25, 0.5, 0.75}) and prints
test scores x100 in Table 3's column order, their mean, trainable parameters and the GIST delta.

This is the standalone driver (no Ray, no MLflow); through the platform the same runs are
``search_spaces/glue_lambda.yaml`` / ``glue_table3.yaml`` and ``gist-ray report EXPERIMENT --table3``.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from gist_ray.text import glue
from gist_ray.text.data import TextDataConfig, check_text_splits, load_text_split
from gist_ray.text.model import build_text_model, text_trainable_counts
from gist_ray.text.train import GistLoss, evaluate_text, train_text


@dataclass
class GlueRunSpec:
    task: str
    backbone: str = "t5_base"
    method: str = "adapter_attempt"
    gist: bool = True
    lam: float = 0.75
    mu: float = 0.5
    temperature: float = 3.0
    epochs: int = 20
    batch_size: int = 32
    lr: float = 3e-4
    max_length: int = 256
    warmup_steps: int = 500
    seed: int = 42
    weights: str = "auto"

    def key(self) -> str:
        d = asdict(self)
        if not self.gist:  # lambda, mu and T do not act without the token: one run, whatever they are
            d.update(lam=None, mu=None, temperature=None)
        return json.dumps(d, sort_keys=True)


def run_glue(spec: GlueRunSpec, root: str, device: str) -> dict[str, Any]:
    """Train, select the best val epoch, test there; returns the result row."""
    task = glue.glue_task(spec.task)
    data = TextDataConfig(name="glue", task=task.key, root=root, train_split="attempt_train",
                          eval_split="attempt_val", test_split="attempt_test", max_length=spec.max_length)
    check_text_splits(data, [data.train_split, data.eval_split, data.test_split])
    torch.manual_seed(spec.seed)
    t0 = time.perf_counter()
    model, tok = build_text_model(spec.backbone, task.num_classes, spec.method, weights=spec.weights,
                                  gist_enabled=spec.gist)
    train, val, test = (load_text_split(data, s, tok) for s in (data.train_split, data.eval_split, data.test_split))
    best: dict[str, Any] = {"score": float("-inf")}

    def on_epoch_end(epoch: int) -> None:
        ev = evaluate_text(model, val, task.metrics, device=device)
        if ev[task.paper_metric] > best["score"]:
            state = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
            best.update(score=ev[task.paper_metric], epoch=epoch, val=ev, state=state)

    loss = GistLoss(mu=spec.mu, lam=spec.lam, temperature=spec.temperature)
    history = train_text(model, train, epochs=spec.epochs, batch_size=spec.batch_size, lr=spec.lr,
                         warmup_steps=spec.warmup_steps, loss=loss, seed=spec.seed, device=device,
                         on_epoch_end=on_epoch_end)
    with torch.no_grad():
        params = dict(model.named_parameters())
        for n, t in best["state"].items():
            params[n].copy_(t)
    return {"key": spec.key(), "spec": asdict(spec), "best_epoch": best["epoch"], "val": best["val"],
            "test": evaluate_text(model, test, task.metrics, device=device), "metric": task.paper_metric,
            "params": text_trainable_counts(model), "final_train_loss": history[-1]["loss"],
            "seconds": time.perf_counter() - t0}


def finished(out: Path) -> dict[str, dict]:
    if not out.is_file():
        return {}
    rows = [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
    return {r["key"]: r for r in rows}


def table3(rows: list[dict]) -> str:
    """Markdown: per (backbone, method, GIST) the test score x100 of the best-val lambda per task."""
    groups: dict[tuple, dict[str, dict]] = {}
    for r in rows:
        s = r["spec"]
        g = groups.setdefault((s["backbone"], s["method"], s["gist"]), {})
        if s["task"] not in g or r["val"][r["metric"]] > g[s["task"]]["val"][r["metric"]]:
            g[s["task"]] = r
    tasks = [t for t in glue.TABLE3_TASKS if any(t in g for g in groups.values())]
    lines = ["| backbone | method | GIST | " + " | ".join(tasks) + " | mean | params (M) |",
             "|" + "---|" * (len(tasks) + 5)]
    means: dict[tuple, float] = {}
    for (bb, method, gist), g in sorted(groups.items()):
        cells = [100 * g[t]["test"][g[t]["metric"]] if t in g else None for t in tasks]
        done = [c for c in cells if c is not None]
        means[(bb, method, gist)] = sum(done) / len(done) if len(done) == len(tasks) else float("nan")
        params = max(r["params"]["total"] for r in g.values()) / 1e6
        lines.append(f"| {bb} | {method} | {'on' if gist else 'off'} | "
                     + " | ".join("-" if c is None else f"{c:.2f}" for c in cells)
                     + f" | {means[(bb, method, gist)]:.2f} | {params:.3f} |")
    for (bb, method, gist), m in sorted(means.items()):
        if gist and (bb, method, False) in means:
            lines.append(f"\nGIST delta ({bb}, {method}): {m - means[(bb, method, False)]:+.2f} points")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", required=True, help="GLUE root (TSV layout or saved-to-disk)")
    p.add_argument("--tasks", nargs="+", default=list(glue.TABLE3_TASKS))
    p.add_argument("--backbone", default="t5_base")
    p.add_argument("--weights", default="auto")
    p.add_argument("--method", nargs="+", default=["adapter_attempt"])
    p.add_argument("--gist", nargs="+", choices=["off", "on"], default=["off", "on"])
    p.add_argument("--lam", nargs="+", type=float, default=[0.25, 0.5, 0.75])
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--warmup-steps", type=int, default=500)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", default="glue_table3.jsonl")
    a = p.parse_args(argv)
    out = Path(a.out)
    done = finished(out)
    specs = [GlueRunSpec(task, a.backbone, m, g == "on", lam, epochs=a.epochs, batch_size=a.batch_size, lr=a.lr,
                         max_length=a.max_length, warmup_steps=a.warmup_steps, seed=a.seed, weights=a.weights)
             for task in a.tasks for m in a.method for g in a.gist for lam in (a.lam if g == "on" else [a.lam[0]])]
    for spec in specs:
        glue.glue_task(spec.task)  # every task name checked before the first run starts
    for spec in specs:
        if spec.key() in done:
            continue
        row = run_glue(spec, a.root, a.device)
        with open(out, "a") as f:
            f.write(json.dumps(row) + "\n")
        done[row["key"]] = row
        print(f"{spec.task} {spec.method} gist={spec.gist} lam={spec.lam}: test {row['metric']} "
              f"{row['test'][row['metric']]:.4f} (best epoch {row['best_epoch']}, {row['seconds']:.0f} s)", flush=True)
    rows = [done[s.key()] for s in specs]
    print(table3(rows))
    return rows


if __name__ == "__main__":
    main()
