"""Dense CRF throughput: the process pool against a per-image loop, and the torch fallback.

    python benchmarks/bench_crf.py [--n 32] [--size 320] [--classes 27] [--workers N]
                                   [--torch-n 4] [--torch-size 64]

Part 1 runs STEGO's CRF (pydensecrf, 10 iterations) on ``n`` photo crops of ``size``×``size`` with
``classes``-class logits at 1/8 resolution (like ViT-S/8 patch predictions), once as a plain
sequential loop of :func:`dense_crf` calls and once through :func:`dense_crf_batch` (one process
per core), and prints images/second for both and their ratio, measured in this run. Part 2 times
the pure-PyTorch mean field (exact kernels) on smaller images on the default device and reports
how often its argmax agrees with pydensecrf's.
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch
import torch.nn.functional as F
from skimage import data as photos

from course_lib.config import get_device
from course_lib.evaluation.crf import dense_crf, dense_crf_batch

PHOTOS = ("astronaut", "coffee", "rocket", "immunohistochemistry", "hubble_deep_field", "retina")


def photo_crops(n: int, size: int, seed: int = 0) -> np.ndarray:
    """``n`` random size×size crops of scikit-image's bundled photos, n×size×size×3 uint8."""
    rng = np.random.default_rng(seed)
    sources = [getattr(photos, name)() for name in PHOTOS]
    crops = []
    for i in range(n):
        photo = sources[i % len(sources)]
        top = rng.integers(0, photo.shape[0] - size + 1)
        left = rng.integers(0, photo.shape[1] - size + 1)
        crops.append(photo[top : top + size, left : left + size, :3])
    return np.ascontiguousarray(np.stack(crops))


def smooth_logits(n: int, n_classes: int, size: int, seed: int = 0) -> torch.Tensor:
    """Spatially smooth random scores, n×C×size×size, as uncertain patch-level predictions."""
    noise = torch.randn(n, n_classes, size, size, generator=torch.Generator().manual_seed(seed))
    return 3 * F.avg_pool2d(noise, 3, stride=1, padding=1, count_include_pad=False)


def timed(function):
    start = time.perf_counter()
    result = function()
    return result, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=32, help="images in the pydensecrf batch")
    parser.add_argument("--size", type=int, default=320, help="image side in pixels (at most 400)")
    parser.add_argument("--classes", type=int, default=27)
    parser.add_argument("--workers", type=int, default=None, help="processes (default: os.cpu_count())")
    parser.add_argument("--torch-n", type=int, default=4, help="images for the torch fallback")
    parser.add_argument("--torch-size", type=int, default=64, help="image side for the torch fallback")
    args = parser.parse_args()
    workers = args.workers or os.cpu_count()

    images = photo_crops(args.n, args.size)
    logits = smooth_logits(args.n, args.classes, args.size // 8)
    print(f"pydensecrf, 10 iterations: {args.n} images {args.size}×{args.size}, {args.classes} classes, "
          f"logits {args.size // 8}×{args.size // 8}")
    sequential, t_loop = timed(lambda: torch.stack([dense_crf(i, l, backend="pydensecrf") for i, l in zip(images, logits)]))
    pooled, t_pool = timed(lambda: dense_crf_batch(images, logits, workers=workers, backend="pydensecrf"))
    assert torch.equal(pooled, sequential), "the pool must give the per-image results"
    print(f"  per-image loop         : {args.n / t_loop:7.2f} images/s ({t_loop:.2f} s)")
    print(f"  process pool ({workers:2d} procs): {args.n / t_pool:7.2f} images/s ({t_pool:.2f} s)")
    print(f"  speed-up pool / loop   : {t_loop / t_pool:.2f}x")

    device = get_device()
    small_images = photo_crops(args.torch_n, args.torch_size, seed=1)
    small_logits = smooth_logits(args.torch_n, args.classes, args.torch_size // 8, seed=1)
    print(f"torch mean field (exact kernels) on {device}: {args.torch_n} images "
          f"{args.torch_size}×{args.torch_size}, {args.classes} classes")
    lattice, t_lattice = timed(lambda: dense_crf_batch(small_images, small_logits, workers=1, backend="pydensecrf"))
    exact, t_torch = timed(lambda: dense_crf_batch(small_images, small_logits.to(device), backend="torch"))
    if device.type == "cuda":
        torch.cuda.synchronize()
        exact, t_torch = timed(lambda: (dense_crf_batch(small_images, small_logits.to(device), backend="torch"),
                                        torch.cuda.synchronize())[0])
    agreement = (exact.cpu().argmax(1) == lattice.argmax(1)).float().mean().item()
    print(f"  torch, batched         : {args.torch_n / t_torch:7.2f} images/s ({t_torch:.2f} s)")
    print(f"  pydensecrf, one process: {args.torch_n / t_lattice:7.2f} images/s ({t_lattice:.2f} s)")
    print(f"  speed ratio torch / pydensecrf: {t_lattice / t_torch:.3f}x; argmax agreement {100 * agreement:.1f} %, "
          f"mean |ΔQ| {(exact.cpu() - lattice).abs().mean().item():.4f}")


if __name__ == "__main__":
    main()
