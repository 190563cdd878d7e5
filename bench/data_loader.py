"""Images/s of the decoded-tensor cache vs decoding every image with PIL every epoch.

Writes N generated JPEGs in the VTAB-1k layout, then times, over the same images:

- ``pil``: what an uncached loader does each epoch: open + decode (+ resize) every file, one thread;
- ``pil-threads``: the same with the loader's decode thread pool (what a cache miss costs);
- ``cached``: open the split through the ``vtab`` loader (list check + memory-mapped cache hit) and copy
  every image out in shuffled batches of 64 (numpy gather; also timed with torch indexing).

Usage: ``python bench/data_loader.py [--n 500] [--src-size 224] [--size 224] [--epochs 3]``
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np


def make_images(root: Path, n: int, src: int) -> Path:
    """``<root>/dtd/`` with ``test.txt`` listing n JPEGs (smooth colour fields plus noise, quality 90)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    ddir = root / "dtd"
    (ddir / "images").mkdir(parents=True)
    yy, xx = np.mgrid[0:src, 0:src] / src
    lines = []
    for i in range(n):
        a, b, c = rng.uniform(0, 6, size=3)
        base = np.stack([np.sin(a * xx + b * yy + k + c) for k in range(3)], -1) * 100 + 128
        img = np.clip(base + rng.normal(0, 12, size=base.shape), 0, 255).astype(np.uint8)
        Image.fromarray(img).save(ddir / "images" / f"{i:05d}.jpg", quality=90)
        lines.append(f"images/{i:05d}.jpg {i % 47}\n")
    (ddir / "test.txt").write_text("".join(lines))
    return ddir


def best_rate(n: int, epochs: int, fn) -> float:
    """Images/s of the fastest of ``epochs`` runs of ``fn()`` (each handles n images)."""
    times = []
    for _ in range(epochs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return n / min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--src-size", type=int, default=224, help="side of the generated JPEGs")
    ap.add_argument("--size", type=int, default=224, help="stored resolution")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch", type=int, default=64)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="gist-bench-data-") as tmp:
        os.environ["GIST_RAY_CACHE"] = str(Path(tmp) / "cache")
        import torch

        from gist_ray.config import DataConfig
        from gist_ray.data import DATASETS
        from gist_ray.data.decode import decode_image, decode_into, default_workers

        ddir = make_images(Path(tmp) / "vtab", args.n, args.src_size)
        cfg = DataConfig(name="vtab", task="dtd", root=str(ddir.parent), image_size=args.size)
        paths = [str(ddir / line.split()[0]) for line in (ddir / "test.txt").read_text().splitlines()]
        load = DATASETS.get("vtab")
        out = np.empty((args.n, 3, args.size, args.size), dtype=np.uint8)

        def pil_epoch() -> None:
            for i, p in enumerate(paths):
                out[i] = decode_image(p, args.size)

        pil = best_rate(args.n, args.epochs, pil_epoch)
        threaded = best_rate(args.n, args.epochs, lambda: decode_into(out, paths, paths))

        t0 = time.perf_counter()
        load(cfg, "test")  # the one decode that fills the cache
        build = args.n / (time.perf_counter() - t0)
        gen = torch.Generator().manual_seed(0)

        def cached_epoch(torch_gather: bool = False) -> None:
            split = load(cfg, "test")
            perm = torch.randperm(len(split), generator=gen)
            arr = split.images.numpy()
            for i in range(0, len(perm), args.batch):
                idx = perm[i : i + args.batch]
                if torch_gather:  # torch advanced indexing: element-wise on CPU for uint8, much slower
                    split.images[idx]
                else:  # a batch copied out of the map (numpy fancy indexing: one memcpy per image)
                    torch.from_numpy(arr[idx.numpy()])

        cached = best_rate(args.n, args.epochs, cached_epoch)
        cached_torch = best_rate(args.n, args.epochs, lambda: cached_epoch(torch_gather=True))

    print(f"{args.n} JPEGs {args.src_size}x{args.src_size} -> {args.size}x{args.size}, best of {args.epochs} epochs, "
          f"{default_workers()} decode threads")
    print(f"  pil (1 thread)        {pil:10.0f} images/s")
    print(f"  pil ({default_workers()} threads)       {threaded:10.0f} images/s")
    print(f"  cache build (1st run) {build:10.0f} images/s")
    print(f"  cached (mmap)         {cached:10.0f} images/s")
    print(f"  cached, torch gather  {cached_torch:10.0f} images/s  (images[idx] on a CPU uint8 tensor)")
    print(f"  cached / pil          {cached / pil:10.1f} x")
    print(f"  cached / pil-threads  {cached / threaded:10.1f} x")


if __name__ == "__main__":
    main()
