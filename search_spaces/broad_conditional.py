"""Run:  gist-ray sweep search_spaces/broad_conditional.py data.root=/data/vtab-1k data.task=dtd

A define-by-run (Optuna) version of broad.yaml: each PEFT method's knobs are suggested only when that method
is chosen, and lambda / T / mu only when GIST is on, so the sampler never wastes trials on inactive knobs.
"""

SWEEP = {
    "name": "broad-conditional",
    "protocol": "vtab",
    "base": {
        "model": {"backbone": "vit_b", "weights": "hub"},
        "data": {"name": "vtab", "task": "dtd"},
        "train": {"epochs": 100, "batch_size": 32, "warmup_epochs": 10, "eval_every": 5, "checkpoint_every": 10},
        "resources": {"num_workers": 1, "use_gpu": True, "gpus_per_worker": 0.5},
    },
    "search": {"num_samples": 64, "max_concurrent_trials": 8, "metric": "val/acc", "mode": "max",
               "sampler": "tpe", "scheduler": "asha", "grace_period": 20, "reduction_factor": 3},
}

KNOBS = {
    "gist_adapter": lambda t: {"method.bottleneck": t.suggest_categorical("method.bottleneck", [4, 8, 16])},
    "adaptformer": lambda t: {"method.bottleneck": t.suggest_categorical("method.bottleneck", [4, 8, 16]),
                              "method.scale": t.suggest_float("method.scale", 0.01, 1.0, log=True)},
    "lora": lambda t: {"method.rank": t.suggest_categorical("method.rank", [2, 4, 8, 16])},
    "vpt_deep": lambda t: {"method.length": t.suggest_int("method.length", 5, 50)},
    "ssf": lambda t: {},
}


def space(trial):
    """Optuna define-by-run space; returns constants to add to the sampled parameters (none here)."""
    method = trial.suggest_categorical("method.name", sorted(KNOBS))
    KNOBS[method](trial)
    if trial.suggest_categorical("gist.enabled", [True, False]):
        trial.suggest_float("gist.lam", 0.0, 1.5)
        trial.suggest_float("gist.temperature", 1.0, 8.0, log=True)
        trial.suggest_float("gist.mu", 0.0, 1.0)
    trial.suggest_float("train.lr", 1e-4, 5e-2, log=True)
    trial.suggest_float("train.weight_decay", 1e-5, 1e-1, log=True)
    return None
