"""Built-in pretraining of the ``vit_synth_*`` backbones on the synthetic *source* task.

The quickstart must fine-tune a backbone that carries knowledge, without downloading weights. Each
``vit_synth_*`` backbone is trained once on the multi-attribute source task (shape, colour, count, position,
angle of scenes of 1-4 objects; six heads) and cached as safetensors (without its head) under
``$GIST_RAY_CACHE/backbones`` (default ``~/.cache/gist-ray/backbones``). The downstream tasks of the suite
label scenes differently, so fine-tuning has to transfer. Built under a file lock and renamed into place,
so concurrent trials build it once.
"""

from __future__ import annotations

import hashlib
import math
import time
from pathlib import Path
from typing import Callable, Iterable

import torch
import torch.nn.functional as F
from filelock import FileLock
from safetensors.torch import save_file

from gist_ray.backbones import SYNTH_MEAN_STD, TINY, resolve_name
from gist_ray.cache import backbones_dir
from gist_ray.console import Progress
from gist_ray.data.synthetic import SOURCE_HEADS, render_task

PRETRAIN_VERSION = 2  # bump when the source task or the recipe changes
SOURCE_IMAGES = 6_000
SOURCE_EPOCHS = 6
SOURCE_BATCH = 128


def weights_path(name: str) -> Path:
    """Cache file keyed by the architecture and the pretraining recipe, so a change of either rebuilds."""
    key = f"{TINY[name]}|{SOURCE_IMAGES}|{SOURCE_EPOCHS}|v{PRETRAIN_VERSION}"
    digest = hashlib.sha256(key.encode()).hexdigest()[:10]
    return backbones_dir() / f"{name}-synthetic-{digest}.safetensors"


def needs_pretraining(backbone: str, weights: str) -> bool:
    """True for a ``vit_synth_*`` backbone with ``weights: auto`` (its weights come from :func:`pretrain`)."""
    name = resolve_name(backbone)
    return weights == "auto" and name in TINY and TINY[name].pretrain


def resolve_weights(backbone: str, weights: str) -> str:
    """``model.weights`` as the backbone builder takes it: ``auto`` on a ``vit_synth_*`` becomes the cached
    pretrained file (built on first use); everything else is returned unchanged."""
    if needs_pretraining(backbone, weights):
        return str(pretrained_synthetic_weights(resolve_name(backbone)))
    return weights


def ensure_pretrained(backbones: Iterable[str], weights: str) -> None:
    """Build the missing synthetic-pretrained weights of ``backbones`` now, one at a time, in this process (a
    driver calls this before any trial starts, so trials never race to build them)."""
    for name in dict.fromkeys(resolve_name(b) for b in backbones):
        if needs_pretraining(name, weights):
            pretrained_synthetic_weights(name)


def pretrained_synthetic_weights(name: str, verbose: bool = True) -> Path:
    """Path to the cached source-task weights of tiny backbone ``name``, building them on first use."""
    path = weights_path(name)
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock"):
        if not path.is_file():
            t0 = time.perf_counter()
            if verbose:
                print(f"[gist-ray] pretraining {name} on the synthetic source task (once; cached at {path})", flush=True)
            # one torch thread: on a shared 2-core machine two intra-op threads made this about 10x slower
            # (vit_synth_xs: 324 s vs 31 s wall, back to back); the tiny models gain little from a second one
            threads = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                steps = SOURCE_EPOCHS * math.ceil(SOURCE_IMAGES / SOURCE_BATCH)
                with Progress(steps, f"[gist-ray] pretraining {name}") as bar:
                    state = pretrain(name, on_step=lambda loss: bar.update(1, f"loss {loss:.3f}"))
            finally:
                torch.set_num_threads(threads)
            tmp = path.with_suffix(".tmp")
            save_file(state, str(tmp))
            tmp.replace(path)
            if verbose:
                print(f"[gist-ray] pretrained {name} in {time.perf_counter() - t0:.0f} s", flush=True)
    return path


def pretrain(name: str, n_images: int = SOURCE_IMAGES, epochs: int = SOURCE_EPOCHS, seed: int = 0,
             on_step: Callable[[float], None] | None = None) -> dict:
    """Train backbone ``name`` on the source task; return its state dict without the head. ``on_step(loss)`` is
    called after every optimiser step (a progress bar)."""
    # timm (3.3 s to import here, through torchvision and torch._dynamo) only when a backbone is pretrained: a
    # sweep or study driver that finds its weights in the cache never builds a model
    from timm.models.vision_transformer import VisionTransformer

    spec = TINY[name]
    torch.manual_seed(seed)
    model = VisionTransformer(num_classes=sum(SOURCE_HEADS), **spec.kwargs())
    images, labels = render_task("source", "train", n_images, spec.img_size, seed)
    mean = torch.tensor(SYNTH_MEAN_STD[0]).view(1, 3, 1, 1) * 255
    std = torch.tensor(SYNTH_MEAN_STD[1]).view(1, 3, 1, 1) * 255
    bs = SOURCE_BATCH
    steps = epochs * math.ceil(n_images / bs)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.05)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps, pct_start=0.1)
    bounds = torch.tensor((0,) + SOURCE_HEADS).cumsum(0).tolist()
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(n_images, generator=gen).split(bs):
            x = (torch.from_numpy(images.numpy()[idx.numpy()]).float() - mean) / std
            out = model(x)
            loss = sum(F.cross_entropy(out[:, lo:hi], labels[idx, k]) for k, (lo, hi) in enumerate(zip(bounds, bounds[1:])))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if on_step is not None:
                on_step(float(loss))
    return {k: v.contiguous() for k, v in model.state_dict().items() if not k.startswith("head.")}
