"""Sweeps: search-space files -> Ray Tune + Optuna trials, tracked in MLflow, resumable."""
