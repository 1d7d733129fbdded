"""Train and evaluate STEGO: ``python -m course_lib.stego.train --profile toy --out DIR``.

Toy profile (default): the toy world's scenes (1000 training, 200 validation images, 96 px) on the
shipped toy ViT's cached features, :data:`~.configs.TOY_CONFIG`, then the ablations. Full scale, e.g.
``--profile full --dataset cocostuff27 --backbone dino_vitb8``: the official configuration of that pair,
training images loaded and passed through the frozen backbone at every step (bf16 autocast on CUDA;
``--cached-features`` caches them instead), five-crop as the official config says (``--no-five-crop``),
validation features cached.

Several processes: ``torchrun --nproc_per_node N -m course_lib.stego.train ...`` (DistributedDataParallel;
NCCL on GPUs, gloo on CPUs). ``--batch-size`` is per process; process 0 evaluates and writes the files.

Outputs in ``DIR``: ``checkpoint.pt`` (resumed when present), ``stego.pt`` (:meth:`StegoModel.load`),
``loss_curves.png`` and ``metrics.json``: ``cluster_mIoU``, ``cluster_accuracy``, ``linear_mIoU``,
``linear_accuracy`` (after the CRF; ``*_no_crf`` without), ``baseline_kmeans_mIoU`` /
``baseline_kmeans_accuracy`` (k-means on the same backbone's validation features, same matching),
``ablations`` (rows of :func:`~.ablations.run_ablations`, each trained under ``DIR/ablations``), the
per-step losses, timings and the configuration.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import time
from pathlib import Path

import torch
import torch.distributed as dist

from .. import config as course_config
from ..models.backbones import backbone_cache_key, load_backbone
from .ablations import run_ablations
from .configs import TOY_CONFIG, stego_config
from .experiment import kmeans_baseline, prepare_data, run_experiment
from ..distributed import init_distributed

TOY_SIZES = {"n_train": 1000, "n_val": 200, "size": 96}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Train STEGO's head on a frozen backbone and evaluate it.")
    parser.add_argument("--out", required=True, help="output folder (checkpoints, metrics.json, loss_curves.png)")
    parser.add_argument("--profile", choices=course_config.PROFILES, default=None,
                        help="toy (default, $COURSE_PROFILE) or full")
    parser.add_argument("--dataset", default=None, help="toy (toy profile) | cocostuff27 | cityscapes27")
    parser.add_argument("--backbone", default=None, help="toy_vit | dino_vits8 | dino_vitb8 | ... (default: the "
                        "official one of the dataset)")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=None, help="images per process and step")
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--code-dim", type=int, default=None)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--five-crop", action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument("--crf", action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument("--ablations", action=argparse.BooleanOptionalAction, default=None,
                        help="train and evaluate the ablations (default: on in the toy profile)")
    parser.add_argument("--cached-features", action=argparse.BooleanOptionalAction, default=None,
                        help="train on cached features (default: toy yes, full no)")
    parser.add_argument("--n-train", type=int, default=None, help="toy: training images (1000)")
    parser.add_argument("--n-val", type=int, default=None, help="toy: validation images (200)")
    parser.add_argument("--size", type=int, default=TOY_SIZES["size"], help="toy: image size (96)")
    parser.add_argument("--resolution", type=int, default=None, help="full scale: training crop size (224)")
    parser.add_argument("--val-resolution", type=int, default=None, help="full scale: validation size (320)")
    parser.add_argument("--device", default=None)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads per process (default: 1 "
                        "for the toy world, whose small tensors gain nothing from more; else torch's default)")
    parser.add_argument("--num-workers", type=int, default=0, help="data-loading processes (full scale)")
    parser.add_argument("--crf-workers", type=int, default=None, help="CRF processes (default: all cores)")
    parser.add_argument("--checkpoint-every", type=int, default=500)
    return parser.parse_args(argv)


def build_config(args: argparse.Namespace):
    profile = course_config.profile(args.profile)
    dataset = args.dataset or ("toy" if profile == "toy" else "cocostuff27")
    if profile == "toy" and dataset != "toy":
        raise course_config.ConfigError(f"--dataset {dataset} needs --profile full (real data on a GPU)")
    overrides = {key: value for key, value in (
        ("steps", args.steps), ("batch_size", args.batch_size), ("lr", args.lr), ("code_dim", args.code_dim),
        ("seed", args.seed), ("five_crop", args.five_crop), ("crf", args.crf), ("resolution", args.resolution),
        ("val_resolution", args.val_resolution)) if value is not None}
    if dataset == "toy":
        overrides.setdefault("resolution", args.size)
        overrides.setdefault("val_resolution", args.size)
    return stego_config(dataset, args.backbone, **overrides)


def main(argv: list[str] | None = None) -> dict | None:
    args = parse_args(argv)
    started = time.perf_counter()
    config = build_config(args)
    threads = args.threads or (1 if config.dataset == "toy" else None)
    if threads:
        torch.set_num_threads(threads)
    context = init_distributed(args.device)
    toy = config.dataset == "toy"
    out = Path(args.out)
    backbone = load_backbone(config.backbone, device=context.device)
    prepare_options = dict(n_train=args.n_train or (TOY_SIZES["n_train"] if toy else None),
                           n_val=args.n_val or (TOY_SIZES["n_val"] if toy else None), size=args.size,
                           online=not (args.cached_features if args.cached_features is not None else toy),
                           num_workers=args.num_workers)
    data = prepare_data(config, backbone, context, **prepare_options)
    result = run_experiment(config, data, out, context, crf_workers=args.crf_workers,
                            checkpoint_every=args.checkpoint_every)
    baseline = kmeans_baseline(data, config.seed) if context.is_main else None
    ablations = None
    if args.ablations if args.ablations is not None else toy:
        ablations = run_ablations(config, data, result, baseline, backbone, out / "ablations", context,
                                  prepare_options, args.crf_workers)
    if context.distributed:
        dist.destroy_process_group()
    if not context.is_main:
        return None
    metrics = {key: value for key, value in result.items() if key not in ("history", "config")}
    metrics.update({
        "baseline_kmeans_mIoU": baseline["mIoU"], "baseline_kmeans_accuracy": baseline["accuracy"],
        "ablations": ablations, "n_classes": data.n_classes, "classes": data.classes,
        "n_train": len(data.source.table), "n_val": len(data.val), "world_size": context.world_size,
        "backbone_key": backbone_cache_key(config.backbone, backbone), "device": str(context.device),
        "seconds": time.perf_counter() - started, "config": config.to_dict(), "history": result["history"],
    })
    _write_outputs(out, metrics)
    _print_summary(metrics)
    return metrics


def toy_run_dir() -> Path:
    """Where lessons 03 and 04 keep the toy CLI run: ``COURSE_CACHE/stego/runs/<toy backbone key>-<config
    hash>`` (:func:`course_lib.models.backbones.backbone_cache_key`: a retrained toy backbone or a changed toy configuration gets a new
    folder)."""
    config_hash = hashlib.sha256(json.dumps(TOY_CONFIG.to_dict(), sort_keys=True).encode()).hexdigest()[:8]
    return course_config.cache_dir() / "stego" / "runs" / f"{backbone_cache_key('toy_vit')}-{config_hash}"


SHIPPED_RUNS = Path(__file__).resolve().parent.parent / "assets" / "stego_toy"
"""Toy CLI runs shipped with the package (``metrics.json`` and ``stego.pt``), in folders named like
:func:`toy_run_dir`'s, so a copy is used only for the exact toy backbone and configuration it was made with."""


def toy_run(out: str | Path | None = None) -> dict:
    """The ``metrics.json`` of ``python -m course_lib.stego.train --profile toy --out OUT`` (default
    :func:`toy_run_dir`): loaded when present; else copied from the shipped run of the same backbone and
    configuration when there is one; else the CLI runs in this process first ("exists → load")."""
    out = Path(out) if out is not None else toy_run_dir()
    shipped = SHIPPED_RUNS / out.name
    if not (out / "metrics.json").is_file() and (shipped / "metrics.json").is_file():
        out.mkdir(parents=True, exist_ok=True)
        for name in ("stego.pt", "metrics.json"):  # metrics.json last: it marks the run as complete
            shutil.copyfile(shipped / name, out / name)
    if not (out / "metrics.json").is_file():
        main(["--profile", "toy", "--out", str(out)])
    return json.loads((out / "metrics.json").read_text())


def _write_outputs(out: Path, metrics: dict) -> None:
    from matplotlib.figure import Figure  # no pyplot: the CLI never touches a GUI backend

    from .plots import plot_loss_curves

    out.mkdir(parents=True, exist_ok=True)
    figure = Figure(figsize=(11, 3.4))
    plot_loss_curves(metrics["history"], figure.subplots(1, 2))
    figure.tight_layout()
    figure.savefig(out / "loss_curves.png", dpi=100)
    temporary = out / "metrics.json.part"
    temporary.write_text(json.dumps(metrics, indent=1))
    temporary.replace(out / "metrics.json")


def _print_summary(metrics: dict) -> None:
    print(f"cluster mIoU {metrics['cluster_mIoU']:.1f} (no CRF {metrics['cluster_mIoU_no_crf']:.1f}), "
          f"linear mIoU {metrics['linear_mIoU']:.1f}, k-means baseline {metrics['baseline_kmeans_mIoU']:.1f}, "
          f"{metrics['seconds']:.0f} s")
    for row in metrics["ablations"] or []:
        linear = "" if row["linear_mIoU"] is None else f"  linear {row['linear_mIoU']:5.1f}"
        print(f"  {row['variant']:22s} cluster {row['cluster_mIoU']:5.1f}{linear}")


if __name__ == "__main__":
    main()
