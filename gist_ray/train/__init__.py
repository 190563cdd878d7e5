"""Training: the plain-torch run (``loop``) and the Ray Train / Tune shells around it."""
