"""gist-ray: run, sweep and scale GIST parameter-efficient fine-tuning on Ray, Optuna and MLflow."""

__version__ = "0.1.0"
