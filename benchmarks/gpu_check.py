"""The GPU check (``make gpu-check``): the full profile's training steps at the papers' sizes, on CUDA.

    python benchmarks/gpu_check.py [--device cuda] [--steps 10] [--out benchmarks/results]
    python benchmarks/gpu_check.py --device cpu --smoke --out DIR      # tiny sizes, for the test on a CPU

Writes a fake data root in the official layouts (``tests/full_data_root.py``'s writers) with images at real
sizes (480×640 CocoStuff and VOC, 375×500 ImageNet-S) and random weights, then, through the course's real
loaders and losses, times one training step of each method and records the peak GPU memory of each
(``torch.cuda.max_memory_allocated``):

- STEGO, DINO ViT-S/8 (random weights: speed does not depend on them), 224 px, batch 16 (+16 kNN partners):
  features read from a cache against the frozen backbone run every step, each in fp32 and bf16 autocast;
  the frozen backbone's evaluation forward at 320 px;
- PASS pre-training at the ImageNet-S presets: ResNet-18 (S50: 2×224 + 6×96 crops) and ResNet-50 (S300/919:
  2×224), batch 32, bf16 autocast;
- SegSort, dilated ResNet-101 on 336-px VOC crops, batch 8, bf16 autocast;
- the dense CRF (STEGO's parameters, 10 iterations, 27 classes, 320×320): the PyTorch mean field on the GPU
  against pydensecrf on the CPU (process pool), and how often their labels agree;
- the ImageNet-S evaluator on the fake validation set (images per second).

Results go to ``benchmarks/results/gpu_<device name>.json``. Without CUDA the script says so and exits 1,
unless given ``--device cpu --smoke`` (tiny sizes, every code path; peak memory is then ``null``).
"""
from __future__ import annotations

import argparse
import os
import platform
import re
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import fake_datasets as fake  # noqa: E402
from bench_crf import photo_crops, smooth_logits  # noqa: E402
from bench_stego import make_step, time_steps  # noqa: E402

SIZES = {
    "full": dict(image=(480, 640), imagenet_image=(375, 500), per_split=32, stego_res=224, stego_eval=320,
                 stego_batch=16, pass_batch=32, pass_crops=None, segsort_crop=336, segsort_batch=8, crf_images=8,
                 crf_size=320, eval_images=24),
    "smoke": dict(image=(48, 64), imagenet_image=(40, 56), per_split=4, stego_res=32, stego_eval=48, stego_batch=2,
                  pass_batch=2, pass_crops=((32, 2, 0.14, 1.0), (16, 2, 0.05, 0.14)), segsort_crop=32,
                  segsort_batch=2, crf_images=2, crf_size=32, eval_images=3),
}
"""The papers' resolutions and per-GPU batches (``full``), and tiny ones that run every path on a CPU (``smoke``)."""


def write_fake_root(data_dir: Path, sizes: dict) -> None:
    """CocoStuff train, ImageNet-S50 train / validation and VOC train_aug in the official layouts."""
    fake.make_cocostuff(data_dir, "train", n_images=sizes["per_split"], size=sizes["image"], seed=1)
    categories = fake.fake_wnids(50)
    for split, count in (("train", sizes["per_split"]), ("validation", sizes["eval_images"])):
        fake.make_imagenet_s(data_dir, 50, split, categories, used_classes=(1, 2, 3, 4),
                             per_class=max(1, count // 4), size=sizes["imagenet_image"], seed=2)
    fake.make_voc(data_dir, "train_aug", n_images=sizes["per_split"], size=sizes["image"], seed=3)


def measured(step, steps: int, device: torch.device) -> dict:
    """Milliseconds per ``step()`` call (after two warm-up calls) and the peak memory it reached (MB, CUDA)."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    seconds = time_steps(step, steps, device)
    peak = torch.cuda.max_memory_allocated(device) / 1e6 if device.type == "cuda" else None
    return {"ms_per_step": 1000 * seconds, "peak_memory_mb": peak}


def stego_checks(sizes: dict, steps: int, device: torch.device) -> dict:
    from course_lib.models import load_backbone
    from course_lib.stego import StegoModel, stego_config
    from course_lib.stego.data import full_dataset

    res, batch = sizes["stego_res"], sizes["stego_batch"]
    dataset = full_dataset("cocostuff27", "train", res)
    samples = [dataset[i % len(dataset)] for i in range(2 * batch)]
    images = torch.stack([s["image"] for s in samples]).to(device)
    labels = torch.stack([s["label"] for s in samples[:batch]]).to(device)
    backbone = load_backbone("dino_vits8", device=device, random_init=True)
    config = stego_config("cocostuff27", "dino_vits8", batch_size=batch)
    with torch.no_grad():
        cache = backbone.patch_features(images).float().cpu()   # stands in for the on-disk feature cache
    results = {}
    for amp in (False, True):
        def online():
            with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                both = backbone.patch_features(images)
            return both[:batch].float(), both[batch:].float()

        def cached():
            both = cache.to(device, non_blocking=True)
            return both[:batch], both[batch:]

        for name, features in (("cached", cached), ("online", online)):
            model = StegoModel(backbone.embed_dim, 27, config).to(device).train()
            results[f"train_{name}_{'bf16' if amp else 'fp32'}"] = measured(
                make_step(model, features, labels, amp, device), steps, device)
    evaluation = torch.rand(batch, 3, sizes["stego_eval"], sizes["stego_eval"], device=device)

    def evaluate():
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            backbone.patch_features(evaluation)

    results["eval_forward"] = measured(evaluate, steps, device)
    return results


def _autocast(device: torch.device):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


def pass_checks(sizes: dict, steps: int, device: torch.device) -> dict:
    from torch.utils.data import DataLoader

    from course_lib.data import ImageNetS
    from course_lib.luss.multicrop import CropSpec, MultiCropDataset, MultiCropWithBoxes
    from course_lib.luss.pipeline import settings_for
    from course_lib.luss.pretrain import PASSModel, pass_losses

    results = {}
    for key, dataset_name in (("resnet18_imagenet_s50", "imagenet_s50"), ("resnet50_imagenet_s300", "imagenet_s300")):
        config = replace(settings_for(dataset_name).pretrain, batch_size=sizes["pass_batch"])
        if sizes["pass_crops"] is not None:
            config = replace(config, crops=[CropSpec(*spec) for spec in sizes["pass_crops"]])
        views = MultiCropDataset(ImageNetS(50, "train"), MultiCropWithBoxes.from_config(config), config.grid_size)
        batch = next(iter(DataLoader(views, batch_size=config.batch_size, shuffle=False)))
        model = PASSModel.from_config(config).to(device).train()
        optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
        crops = [crop.to(device) for crop in batch["crops"]]
        grids = batch["grid_a"].to(device), batch["grid_b"].to(device)
        overlap = batch["overlap"].to(device)

        def step():
            with _autocast(device):
                outputs = model(crops, *grids)
            losses = pass_losses(outputs, model.prototypes, overlap, config)
            optimizer.zero_grad(set_to_none=True)
            losses["loss"].backward()
            optimizer.step()

        results[key] = {**measured(step, steps, device), "batch": config.batch_size,
                        "crops": [f"{c.number}×{c.size}" for c in config.crops]}
    return results


def segsort_checks(sizes: dict, steps: int, device: torch.device) -> dict:
    from torch.utils.data import DataLoader

    from course_lib.data import VOC2012
    from course_lib.segsort.loss import PrototypeMemory
    from course_lib.segsort.network import build_embedding_net
    from course_lib.segsort.train import PROFILE_DEFAULTS, TrainConfig, VOCSegSortDataset, batch_loss

    cfg = TrainConfig(**{**vars(TrainConfig()), **PROFILE_DEFAULTS["full"], "profile": "full", "weights": None,
                         "size": sizes["segsort_crop"], "batch_size": sizes["segsort_batch"]})
    dataset = VOCSegSortDataset(VOC2012(split="train_aug"), cfg.size, cfg.prior)
    batch = next(iter(DataLoader(dataset, batch_size=cfg.batch_size)))
    net = build_embedding_net(cfg.arch, cfg.embedding_dim, None, seed=0).to(device).train()
    optimizer = torch.optim.SGD(net.parameters(), lr=cfg.lr, momentum=cfg.momentum)
    memory = PrototypeMemory(cfg.n_banks)

    def step():
        with _autocast(device):
            loss = batch_loss(net, batch, cfg, memory, device)
        optimizer.zero_grad(set_to_none=True)
        loss.float().backward()
        optimizer.step()

    return {"resnet101_voc2012": {**measured(step, steps, device), "batch": cfg.batch_size, "crop": cfg.size}}


def crf_checks(sizes: dict, device: torch.device) -> dict:
    from course_lib.evaluation.crf import dense_crf_batch, pydensecrf_available

    n, size = sizes["crf_images"], sizes["crf_size"]
    images = photo_crops(n, size)
    logits = smooth_logits(n, 27, max(1, size // 8))
    results = {}
    start = time.perf_counter()
    on_device = dense_crf_batch(images, logits.to(device), backend="torch")
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    results["torch_images_per_s"] = n / (time.perf_counter() - start)
    results["torch_device"] = str(device)
    if pydensecrf_available():
        start = time.perf_counter()
        reference = dense_crf_batch(images, logits, backend="pydensecrf")
        results["pydensecrf_cpu_images_per_s"] = n / (time.perf_counter() - start)
        agree = (on_device.argmax(1).cpu() == reference.argmax(1)).float().mean()
        results["label_agreement"] = float(agree)
    return results


def evaluator_checks(data_dir: Path, out_dir: Path) -> dict:
    from course_lib.data.label_png import read_imagenet_s_png, write_imagenet_s_png
    from course_lib.evaluation.imagenet_s import evaluate_folders

    gt_dir = data_dir / "ImageNetS" / "ImageNetS50" / "validation-segmentation"
    predictions = out_dir / "predictions"
    paths, present = sorted(gt_dir.glob("*/*.png")), set()
    for path in paths:   # the ground truth itself as predictions ('ignore' predicted as 'other')
        gt = read_imagenet_s_png(path)
        present.update(np.unique(gt[gt != 1000]).tolist())
        write_imagenet_s_png(predictions / path.relative_to(gt_dir), np.where(gt == 1000, 0, gt))
    start = time.perf_counter()
    scores = evaluate_folders(predictions, gt_dir, 50)
    seconds = time.perf_counter() - start
    # mIoU averages over all K + 1 classes: a perfect prediction scores 100 × (classes present) / (K + 1)
    return {"images": len(paths), "images_per_s": len(paths) / seconds, "mIoU_of_ground_truth": scores["mIoU"],
            "mIoU_expected": 100 * len(present) / 51}


def device_slug(device: torch.device, smoke: bool) -> str:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    slug = re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_") or device.type
    return f"{slug}_smoke" if smoke else slug


def run(device: torch.device, smoke: bool, steps: int, out: Path) -> Path:
    """Every check on ``device``; returns the JSON written under ``out``."""
    from course_lib.cli import write_json

    sizes = SIZES["smoke" if smoke else "full"]
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as folder:
        data_dir, cache_dir = Path(folder) / "data", Path(folder) / "cache"
        write_fake_root(data_dir, sizes)
        os.environ.update(COURSE_DATA=str(data_dir), COURSE_CACHE=str(cache_dir), COURSE_PROFILE="full")
        torch.manual_seed(0)
        report = {
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "torch": torch.__version__, "cuda": torch.version.cuda, "smoke": smoke, "steps_timed": steps,
            "sizes": sizes,
            "stego": stego_checks(sizes, steps, device),
            "pass": pass_checks(sizes, steps, device),
            "segsort": segsort_checks(sizes, steps, device),
            "crf": crf_checks(sizes, device),
            "evaluator": evaluator_checks(data_dir, Path(folder)),
        }
    report["seconds"] = time.perf_counter() - started
    return write_json(out / f"gpu_{device_slug(device, smoke)}.json", report)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda, cuda:1, ... (cpu only with --smoke)")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: every code path in seconds")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per check (default 10; smoke 1)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("error: no CUDA device on this machine: the GPU check needs one. For a CPU smoke run of its code "
              "paths use --device cpu --smoke.", file=sys.stderr)
        return 1
    if device.type != "cuda" and not args.smoke:
        print(f"error: --device {args.device} times nothing meaningful at the papers' sizes; use a CUDA device, "
              "or add --smoke for a tiny run of every code path.", file=sys.stderr)
        return 1
    path = run(device, args.smoke, args.steps or (1 if args.smoke else 10), args.out)
    print(path.read_text())
    print(f"written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
