"""Benchmark: the ImageNet-S evaluator against a straightforward per-image reference, in one run.

Writes ``--n`` synthetic prediction / ground-truth PNG pairs the size of ImageNet-S-50's validation set
(752 images of about 375×500, K = 50; objects are ellipses on 'other' with ignore bands along their
outlines, predictions are the ground truth with shifted and resized objects, some wrong classes and
salt noise) into a temporary folder, then times

- :func:`course_lib.evaluation.imagenet_s.evaluate_folders` on all cores (the CLI's code path);
- the same on one process;
- the straightforward reference of ``tests/test_imagenet_s_eval.py`` (one image at a time, a Python loop
  over the K + 1 classes, each class's boundary by iterated 3×3 erosions as the official evaluator does)
  on the first ``--n-reference`` images, whose scores must agree with the evaluator's to 1e-6,

and prints images per second for each and the speed-up ratios.

    python benchmarks/bench_evaluation.py            # 752 pairs
    python benchmarks/bench_evaluation.py --n 100    # a quick check
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from course_lib.data.label_png import read_imagenet_s_png, write_imagenet_s_png
from course_lib.evaluation.imagenet_s import METRIC_KEYS, ImageNetSEvaluator, default_workers, evaluate_folders

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from test_imagenet_s_eval import reference_scores  # noqa: E402  (the one reference implementation)

NUM_CLASSES = 50
IGNORE = 1000


def ellipse_radius(shape: tuple[int, int], centre: np.ndarray, radii: np.ndarray, angle: float) -> np.ndarray:
    """H×W normalised radius of an ellipse (< 1 inside)."""
    yy, xx = np.ogrid[: shape[0], : shape[1]]
    dy, dx = yy - centre[0], xx - centre[1]
    cos, sin = np.cos(angle), np.sin(angle)
    return np.sqrt(((cos * dy + sin * dx) / radii[0]) ** 2 + ((-sin * dy + cos * dx) / radii[1]) ** 2)


def synthetic_pair(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """One (prediction, ground truth) pair of H×W ids, H×W about 375×500 (either orientation)."""
    rng = np.random.default_rng(seed)
    short, long = int(rng.integers(330, 376)), int(rng.integers(460, 501))
    shape = (short, long) if rng.random() < 0.7 else (long, short)
    gt = np.zeros(shape, np.int32)
    pred = np.zeros(shape, np.int32)
    for _ in range(int(rng.integers(1, 4))):
        category = int(rng.integers(1, NUM_CLASSES + 1))
        area = rng.uniform(0.02, 0.5) * shape[0] * shape[1]
        aspect = rng.uniform(0.5, 2.0)
        radii = np.sqrt(area / np.pi) * np.array([np.sqrt(aspect), 1 / np.sqrt(aspect)])
        centre = rng.uniform(0.2, 0.8, size=2) * shape
        angle = rng.uniform(0, np.pi)
        radius = ellipse_radius(shape, centre, radii, angle)
        gt[radius < 1] = category
        gt[np.abs(radius - 1) * radii.min() < 1.5] = IGNORE  # a ~3 px unsure band on the outline
        guess = category if rng.random() < 0.8 else int(rng.integers(1, NUM_CLASSES + 1))
        jitter = rng.normal(0, 0.05, size=2) * shape
        pred[ellipse_radius(shape, centre + jitter, radii * rng.uniform(0.85, 1.15), angle) < 1] = guess
    salt = rng.random(shape) < 0.01
    pred[salt] = rng.integers(0, NUM_CLASSES + 1, size=int(salt.sum()))
    return pred, gt


def _write_pair(job: tuple[int, Path, Path]) -> None:
    seed, pred_path, gt_path = job
    pred, gt = synthetic_pair(seed)
    write_imagenet_s_png(pred_path, pred)
    write_imagenet_s_png(gt_path, gt)


def write_dataset(root: Path, n: int, workers: int) -> tuple[Path, Path]:
    """``root/pred`` and ``root/gt`` with ``n`` pairs ``<class>/<name>.png`` (in a process pool)."""
    jobs = [(seed, root / "pred" / f"n{seed % 50:02d}" / f"img_{seed:05d}.png",
             root / "gt" / f"n{seed % 50:02d}" / f"img_{seed:05d}.png") for seed in range(n)]
    with ProcessPoolExecutor(workers) as pool:
        list(pool.map(_write_pair, jobs, chunksize=16))
    return root / "pred", root / "gt"


def timed(function, *args, **kwargs):
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=752, help="number of image pairs (ImageNet-S-50 val: 752)")
    parser.add_argument("--n-reference", type=int, default=40, help="images timed with the slow reference")
    parser.add_argument("--workers", type=int, default=default_workers(), help="processes (default: all cores)")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as folder:
        _, seconds = timed(write_dataset, Path(folder), args.n, args.workers)
        pred_dir, gt_dir = Path(folder) / "pred", Path(folder) / "gt"
        print(f"wrote {args.n} pairs of ~375×500 PNGs (K = {NUM_CLASSES}) in {seconds:.1f} s")

        scores, fast = timed(evaluate_folders, pred_dir, gt_dir, NUM_CLASSES, workers=args.workers)
        _, single = timed(evaluate_folders, pred_dir, gt_dir, NUM_CLASSES, workers=1)

        subset = sorted(gt_dir.glob("*/*.png"))[: args.n_reference]
        pairs = [(pred_dir / path.relative_to(gt_dir), path) for path in subset]
        reference, slow = timed(reference_scores, ((read_imagenet_s_png(p), read_imagenet_s_png(g)) for p, g in pairs),
                                NUM_CLASSES)
        evaluator = ImageNetSEvaluator(NUM_CLASSES)
        for pred_path, gt_path in pairs:
            evaluator.update(read_imagenet_s_png(pred_path), read_imagenet_s_png(gt_path))
        subset_scores = evaluator.compute()
        for key in METRIC_KEYS:
            a, b = subset_scores[key], reference[key]
            assert (a is None and b is None) or abs(a - b) < 1e-6, f"{key}: evaluator {a} != reference {b}"

    rate_fast, rate_single, rate_slow = args.n / fast, args.n / single, len(pairs) / slow
    print("scores:", ", ".join(f"{key} {'n/a' if value is None else f'{value:.2f}'}" for key, value in scores.items()))
    print(f"reference agrees with the evaluator on {len(pairs)} images (all metrics within 1e-6)")
    print(f"evaluate_folders, {args.workers} processes: {args.n} images in {fast:.2f} s = {rate_fast:.1f} images/s")
    print(f"evaluate_folders, 1 process:   {args.n} images in {single:.2f} s = {rate_single:.1f} images/s")
    print(f"per-image reference, 1 process: {len(pairs)} images in {slow:.2f} s = {rate_slow:.2f} images/s")
    print(f"speed-up: {rate_fast / rate_slow:.1f}x ({args.workers} processes), "
          f"{rate_single / rate_slow:.1f}x (1 process) over the reference")


if __name__ == "__main__":
    main()
