"""Train and evaluate STEGO: ``python -m course_lib.stego.train [--profile toy|full] [--out DIR]``.

Toy profile (default): the toy world's scenes (1000 training, 200 validation images, 96 px) on the
shipped toy ViT's cached features, :data:`~.configs.TOY_CONFIG`, then the ablations. Full scale, e.g.
``--profile full --dataset cocostuff27 --backbone dino_vitb8``: the official configuration of that pair,
training images loaded and passed through the frozen backbone at every step (bf16 autocast on CUDA;
``--cached-features`` caches them instead), five-crop as the official config says (``--no-five-crop``),
validation features cached.

Your own images: ``--dataset folder:DIR --backbone NAME [--n-clusters K] [--shifts official|calibrated]``
(either profile) trains on every readable image of DIR without labels (:mod:`.folder`): no validation, no
checkpoint selection (the last step), no label metrics; ``metrics.json`` holds the losses and label-free
diagnostics, and ``python -m course_lib.segment --images DIR --run RUN`` segments with the run.

DINOv2 backbones (``dinov2_vits14``, ``dinov2_vitb14``, ``*_reg``): patch 14, so crops of 224 px and evaluation
at 322 px; a ``--resolution`` / ``--val-resolution`` that is not a multiple of the patch size is refused with
the nearest valid sizes. There is no official DINOv2 preset: the DINO ViT-S/8 or B/8 block of the dataset is
reused (:func:`~.configs.preset_note`, ``preset_note`` in ``config.json`` and ``metrics.json``).

One command from the raw dataset to the metrics: what the run needs and is missing (the five-crop set
under ``COURSE_DATA/cropped``, the kNN table and the feature caches under ``COURSE_CACHE``) is prepared,
with progress bars, and reused by the next run. A dataset or weight file that is not downloaded stops the
run at once with the command that fetches it (``error: ...``, exit status 2, no traceback).

The flags follow the course's CLI convention (:mod:`course_lib.cli`): ``--profile --dataset --out
--data-root --device --threads --seed --max-steps --print-config``; ``--out`` defaults to
``COURSE_CACHE/runs/stego_<dataset>_<backbone>`` (:func:`course_lib.config.default_run_dir`, where the
lessons look for it). ``--steps`` is the number of steps, ``--max-steps`` caps it. ``COURSE_SMOKE=1``
runs the same code paths at tiny size (:data:`SMOKE_SIZES`: a few images, at most 2 steps, 64 px), the
dry run of the full profile.

Several processes: ``torchrun --nproc_per_node N -m course_lib.stego.train ...`` (DistributedDataParallel;
NCCL on GPUs, gloo on CPUs). ``--batch-size`` is per process; process 0 evaluates and writes the files.

Every value is checked before any work (one line on stderr naming the flag, exit status 2), and ``--out``
must be a folder this process can write. ``DIR/config.json`` is the run's record
(:func:`course_lib.cli.guard_run`): a command with another configuration is refused with the keys that
differ (``--overwrite`` starts afresh), and a finished identical run is reported and left untouched.

Checkpoint selection (full profile, as the official trainer): the run validates every ``--val-freq`` steps
(100) on the labelled validation set (probes on the codes, no flip, no CRF), keeps the ``--save-top-k`` (2)
best of the steps divisible by ``--select-every`` (400) by cluster mIoU, and evaluates the best one: the
final metrics are those of a checkpoint *selected on the validation images they are measured on*
(:class:`~.configs.CheckpointSelection`). ``--val-freq 0`` (the toy profile's default) evaluates the last step.

Outputs in ``DIR``, each written under a temporary name and renamed when complete: ``config.json`` (the
resolved configuration, written at the start, as ``--print-config`` shows it), ``checkpoint.pt`` (every
``--checkpoint-every`` steps, by default a tenth of the run; resumed when present), ``best_step<N>.pt``
(the kept checkpoints), ``stego.pt`` (the evaluated weights, :meth:`StegoModel.load`), ``loss_curves.png``
and ``metrics.json`` (finite numbers only, ``null`` otherwise): ``selection`` (which weights were evaluated,
in words), ``selected_step``, ``validation_curve`` (with selection), ``cluster_mIoU``, ``cluster_accuracy``, ``linear_mIoU``, ``linear_accuracy`` (after the CRF;
``*_no_crf`` without), ``baseline_kmeans_mIoU`` / ``baseline_kmeans_accuracy`` (k-means on the same
backbone's validation features, same matching), ``ablations`` (rows of :func:`~.ablations.run_ablations`,
each trained under ``DIR/ablations``), the per-step losses, timings and the configuration.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch
import torch.distributed as dist

from .. import cli
from .. import config as course_config
from ..data.toyworld import MAX_SIZE as TOY_MAX_SIZE, MIN_SIZE as TOY_MIN_SIZE
from ..models.backbones import backbone_cache_key, load_backbone
from ..models.vit import VIT_ARCHITECTURES
from .ablations import run_ablations
from .configs import (NO_SELECTION, OFFICIAL_SELECTION, TOY_CONFIG, CheckpointSelection, StegoConfig,
                      check_patch_multiple, preset_note, stego_config)
from .data import FULL_DATASETS
from .folder import (FOLDER_PREFIX, FULL_N_CLUSTERS, SELECTION as FOLDER_SELECTION, SHIFT_CHOICES, TOY_N_CLUSTERS,
                     calibrated, default_shifts, folder_config, folder_diagnostics, folder_of, list_folder,
                     prepare_folder_data)
from .model import StegoModel
from .trainer import train_stego
from .experiment import kmeans_baseline, prepare_data, run_experiment
from .trainer import default_checkpoint_every
from ..distributed import init_distributed

TOY_SIZES = {"n_train": 1000, "n_val": 200, "size": 96}
SMOKE_SIZES = {"toy": {"n_train": 16, "n_val": 8, "size": 64, "batch_size": 4},
               "full": {"n_train": 8, "n_val": 8, "resolution": 64, "val_resolution": 64, "batch_size": 4,
                        "val_freq": 1, "select_every": 1}}
"""``COURSE_SMOKE=1`` defaults (a flag given on the command line wins): toy-world images and size, or the
first source images and resolutions (multiples of 8 and 16, the patch sizes) of a full-scale dataset, with
validation and checkpoint selection at every step (so the 2-step dry run runs them)."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = cli.ArgumentParser(prog="python -m course_lib.stego.train",
                                description="Train STEGO's head on a frozen backbone and evaluate it.")
    cli.add_common_arguments(parser, out_required=False,
                             dataset_help="toy (toy profile) | cocostuff27 | cityscapes27 | folder:DIR (any folder "
                                          "of .jpg/.png images, no labels; either profile) (default: toy, full "
                                          "profile: cocostuff27)")
    parser.add_argument("--backbone", default=None,
                        help=f"toy_vit | {' | '.join(VIT_ARCHITECTURES)} (DINOv2: patch 14, crops 224 / evaluation "
                             "322 px, the DINO ViT-S/8 or B/8 hyper-parameters: no official DINOv2 preset exists) "
                             "(default: the official one of the dataset; folder: toy_vit / dino_vits8)")
    parser.add_argument("--n-clusters", type=cli.positive_int, default=None,
                        help=f"folder:DIR only: clusters K (default {FULL_N_CLUSTERS} full, {TOY_N_CLUSTERS} toy)")
    parser.add_argument("--shifts", choices=SHIFT_CHOICES, default=None,
                        help="folder:DIR only: the shifts b: official (the preset's) or calibrated (each b attracts "
                             "a set share of the folder's own self / kNN / random correspondences, the toy recipe) "
                             "(default: official for dino_* backbones, calibrated otherwise)")
    parser.add_argument("--steps", type=cli.positive_int, default=None,
                        help="optimisation steps (--max-steps caps them)")
    parser.add_argument("--batch-size", type=cli.int_range(2), default=None,
                        help="images per process and step (at least 2: the negatives are other images of the batch)")
    parser.add_argument("--lr", type=cli.positive_float, default=None, help="the head's Adam learning rate")
    parser.add_argument("--code-dim", type=cli.positive_int, default=None)
    parser.add_argument("--five-crop", action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument("--crf", action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument("--ablations", action=argparse.BooleanOptionalAction, default=None,
                        help="train and evaluate the ablations (default: on in the toy profile)")
    parser.add_argument("--cached-features", action=argparse.BooleanOptionalAction, default=None,
                        help="train on cached features (default: toy yes, full no)")
    parser.add_argument("--n-train", type=cli.positive_int, default=None,
                        help="training images (toy: 1000; full: the first N source images, default all)")
    parser.add_argument("--n-val", type=cli.positive_int, default=None,
                        help="validation images (toy: 200; full: the first N, default all)")
    parser.add_argument("--size", type=cli.positive_int, default=None, help="toy: image size (96)")
    parser.add_argument("--resolution", type=cli.positive_int, default=None, help="full scale: training crop size (224)")
    parser.add_argument("--val-resolution", type=cli.positive_int, default=None,
                        help="full scale: validation size (320)")
    parser.add_argument("--num-workers", type=cli.non_negative_int, default=0,
                        help="data-loading processes (full scale; also the five-crop preparation)")
    parser.add_argument("--crf-workers", type=cli.positive_int, default=None, help="CRF processes (default: all cores)")
    parser.add_argument("--val-freq", type=cli.non_negative_int, default=None,
                        help="steps between validations during training; 0: none, evaluate the last step (default: "
                             f"full {OFFICIAL_SELECTION.val_freq} as the official trainer, toy 0)")
    parser.add_argument("--select-every", type=cli.positive_int, default=None,
                        help="candidate checkpoints are the steps divisible by this, a multiple of --val-freq "
                             f"(default {OFFICIAL_SELECTION.select_every}, official)")
    parser.add_argument("--save-top-k", type=cli.positive_int, default=None,
                        help=f"best candidate checkpoints kept (default {OFFICIAL_SELECTION.save_top_k}, official)")
    parser.add_argument("--checkpoint-every", type=cli.positive_int, default=None,
                        help="steps between checkpoints (default: a tenth of the steps, so Ctrl-C keeps most of the "
                             "work)")
    return parser.parse_args(argv)


def _dataset(args: argparse.Namespace) -> str:
    profile = course_config.profile(args.profile)
    dataset = args.dataset or ("toy" if profile == "toy" else "cocostuff27")
    if profile == "toy" and dataset != "toy":
        raise course_config.ConfigError(f"--dataset {dataset} needs --profile full (real data on a GPU)")
    if dataset != "toy" and dataset not in FULL_DATASETS:
        raise course_config.ConfigError(f"no STEGO training data loader for --dataset {dataset!r}; choose toy, "
                                        f"{', '.join(FULL_DATASETS)}")
    return dataset


def _flag(args: argparse.Namespace, name: str, dataset: str):
    """The flag ``name`` if given, else its ``COURSE_SMOKE`` default (:data:`SMOKE_SIZES`), else ``None``."""
    value = getattr(args, name)
    if value is not None or not course_config.smoke():
        return value
    return SMOKE_SIZES["toy" if dataset == "toy" else "full"].get(name)


def _overrides(args: argparse.Namespace, dataset: str) -> dict:
    """The preset fields the flags (or ``COURSE_SMOKE``'s sizes) set. A smoke resolution that no flag gave is
    rounded to a multiple of the backbone's patch size (64 → 56 for DINOv2's 14)."""
    overrides = {name: _flag(args, name, dataset) for name in (
        "steps", "batch_size", "lr", "code_dim", "seed", "five_crop", "crf", "resolution", "val_resolution")}
    patch = VIT_ARCHITECTURES.get(args.backbone or "", {}).get("patch_size")
    for name in ("resolution", "val_resolution"):
        if patch and getattr(args, name) is None and overrides[name] is not None:
            overrides[name] = patch * max(1, overrides[name] // patch)
    return {name: value for name, value in overrides.items() if value is not None}


def _checked(make_config) -> StegoConfig:
    """``make_config()`` with a ``ValueError`` (an unknown dataset, an invalid value, a resolution that is not a
    multiple of a known ViT's patch size) turned into the user's ``ConfigError`` (no traceback)."""
    try:
        config = make_config()
        patch = VIT_ARCHITECTURES.get(config.backbone, {}).get("patch_size")
        if patch:
            check_patch_multiple(config, patch)
        return config
    except course_config.ConfigError:
        raise
    except ValueError as error:
        raise course_config.ConfigError(str(error)) from None


def build_config(args: argparse.Namespace) -> StegoConfig:
    """The run's :class:`StegoConfig`: the preset of (dataset, backbone), the flags, ``COURSE_SMOKE``'s
    sizes where no flag says otherwise, and the steps capped (``--max-steps``, 2 under smoke)."""
    dataset = _dataset(args)
    for flag in ("n_clusters", "shifts"):
        if getattr(args, flag) is not None:
            raise course_config.ConfigError(f"--{flag.replace('_', '-')} is for --dataset {FOLDER_PREFIX}DIR (a "
                                            f"labelled dataset has its classes and the preset's shifts)")
    overrides = _overrides(args, dataset)
    if dataset == "toy":
        if not TOY_MIN_SIZE <= toy_size(args) <= TOY_MAX_SIZE:
            raise course_config.ConfigError(f"--size must be {TOY_MIN_SIZE}..{TOY_MAX_SIZE} for the toy world's "
                                            f"images, got {toy_size(args)}")
        overrides.setdefault("resolution", toy_size(args))
        overrides.setdefault("val_resolution", toy_size(args))
    config = _checked(lambda: stego_config(dataset, args.backbone, **overrides))
    return replace(config, steps=cli.cap_steps(config.steps, args.max_steps))


def build_selection(args: argparse.Namespace, config: StegoConfig) -> CheckpointSelection:
    """The run's :class:`CheckpointSelection`: the official one at full scale, none in the toy world (whose
    lessons evaluate the last step), then the flags and ``COURSE_SMOKE``'s values."""
    base = NO_SELECTION if config.dataset == "toy" else OFFICIAL_SELECTION
    overrides = {name: _flag(args, name, config.dataset) for name in ("val_freq", "select_every", "save_top_k")}
    try:
        return replace(base, **{name: value for name, value in overrides.items() if value is not None})
    except ValueError as error:
        raise course_config.ConfigError(f"--val-freq / --select-every: {error}") from None


def toy_size(args: argparse.Namespace) -> int:
    """The toy world's image size: ``--size``, else 64 under ``COURSE_SMOKE``, else 96."""
    return _flag(args, "size", "toy") or TOY_SIZES["size"]


def prepare_options(args: argparse.Namespace, config: StegoConfig) -> dict:
    """The :func:`~.experiment.prepare_data` options of the run (image counts, size, online, workers)."""
    toy = config.dataset == "toy"
    defaults = TOY_SIZES if toy else {}
    return dict(n_train=_flag(args, "n_train", config.dataset) or defaults.get("n_train"),
                n_val=_flag(args, "n_val", config.dataset) or defaults.get("n_val"),
                size=toy_size(args), online=not (args.cached_features if args.cached_features is not None else toy),
                num_workers=args.num_workers)


def resolved_configuration(args: argparse.Namespace, config: StegoConfig, options: dict, out: Path,
                           selection: CheckpointSelection = NO_SELECTION) -> dict:
    """What ``--print-config`` prints and ``config.json`` holds: the StegoConfig, the data and run options
    (``run.checkpoint_selection``: :class:`CheckpointSelection` as a dict)."""
    toy = config.dataset == "toy"
    return {
        "profile": course_config.profile(args.profile), "smoke": course_config.smoke(), "out": str(out),
        "stego": config.to_dict(), "preset_note": preset_note(config.dataset, config.backbone),
        "data": {"dataset": config.dataset, "data_root": None if toy else str(course_config.data_dir()),
                 "five_crop": config.five_crop, "resolution": config.resolution,
                 "val_resolution": config.val_resolution, **options},
        "run": {"ablations": ablations_on(args, config), "device": args.device or "auto", "threads": args.threads,
                "max_steps": args.max_steps, "crf_workers": args.crf_workers,
                "checkpoint_every": args.checkpoint_every or default_checkpoint_every(config.steps),
                "checkpoint_selection": asdict(selection),
                "cache": str(course_config.cache_dir())},
    }


RUN_OUTPUTS = ("checkpoint.pt", "stego.pt", "result.json", "loss_curves.png", "ablations")
"""The files a run writes in its folder besides ``config.json`` and ``metrics.json`` (``--overwrite`` deletes them)."""
RESULT_NEUTRAL = ("run.crf_workers", "run.checkpoint_every", "run.cache", "data.num_workers", "preset_note")
"""Configuration keys that change how a run goes, never its result: a rerun may change them."""


def ablations_on(args: argparse.Namespace, config: StegoConfig) -> bool:
    """``--ablations``, by default on in the toy world only."""
    return args.ablations if args.ablations is not None else config.dataset == "toy"


def main(argv: list[str] | None = None) -> dict | None:
    """Run the CLI; returns the metrics on process 0 (``None`` elsewhere and for ``--print-config``)."""
    args = parse_args(argv)
    cli.apply_common(args)
    started = time.perf_counter()
    folder = folder_of(args.dataset)
    if folder is not None:
        return folder_main(args, folder, started)
    config = build_config(args)
    options = prepare_options(args, config)
    selection = build_selection(args, config)
    out = Path(args.out) if args.out is not None else course_config.default_run_dir("stego", config.dataset,
                                                                                      config.backbone)
    resolved = resolved_configuration(args, config, options, out, selection)
    if args.print_config:
        cli.print_config(resolved)
        return None
    cli.prepare_out(out)  # a file or an unwritable folder stops here, not after training
    if int(os.environ.get("RANK", "0")) == 0 or not args.overwrite:  # only process 0 deletes
        finished = cli.guard_run(out, resolved, overwrite=args.overwrite, outputs=RUN_OUTPUTS, ignore=RESULT_NEUTRAL)
        if finished is not None:
            return finished
    toy = config.dataset == "toy"
    if args.threads is None and toy:
        torch.set_num_threads(1)  # the toy world's small tensors gain nothing from more threads
    context = init_distributed(args.device)
    if context.is_main:
        cli.write_json(out / "config.json", resolved)
    backbone = load_backbone(config.backbone, device=context.device)  # a missing weight file stops here
    data = prepare_data(config, backbone, context, **options)  # a missing dataset stops before the heavy work
    result = run_experiment(config, data, out, context, crf_workers=args.crf_workers,
                            checkpoint_every=resolved["run"]["checkpoint_every"], selection=selection)
    baseline = kmeans_baseline(data, config.seed) if context.is_main else None
    ablations = None
    if ablations_on(args, config):
        ablations = run_ablations(config, data, result, baseline, backbone, out / "ablations", context,
                                  options, args.crf_workers)
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
        "profile": resolved["profile"], "smoke": resolved["smoke"], "preset_note": resolved["preset_note"],
        "seconds": time.perf_counter() - started, "config": config.to_dict(), "history": result["history"],
    })
    _write_outputs(out, metrics)
    _print_summary(metrics, out)
    return metrics


def folder_main(args: argparse.Namespace, folder: Path, started: float) -> dict | None:
    """``--dataset folder:DIR`` (:mod:`.folder`): train on the folder's images without labels and write
    ``config.json``, ``checkpoint.pt``, ``stego.pt`` (the last step), ``loss_curves.png`` and ``metrics.json``
    (losses, the label-free diagnostics, ``selection`` saying why the last step, ``classes`` null so that
    ``course_lib.segment`` names the clusters ``cluster k``). One process; returns the metrics."""
    toy = course_config.profile(args.profile) == "toy"
    for flag, value in (("--val-freq", args.val_freq), ("--select-every", args.select_every),
                        ("--save-top-k", args.save_top_k), ("--n-val", args.n_val)):
        if value:
            raise course_config.ConfigError(f"{flag} needs labelled validation images; --dataset {FOLDER_PREFIX}DIR "
                                            "has no labels (the run keeps its last step)")
    if args.ablations:
        raise course_config.ConfigError(f"--ablations are measured against labels; --dataset {FOLDER_PREFIX}DIR "
                                        "has none")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise course_config.ConfigError(f"--dataset {FOLDER_PREFIX}DIR trains in one process: run it without torchrun")
    overrides = _overrides(args, "toy" if toy else "full")
    if toy:
        overrides.setdefault("resolution", toy_size(args))
        overrides.setdefault("val_resolution", overrides["resolution"])
    config = _checked(lambda: folder_config(toy, args.backbone, args.shifts, **overrides))
    config = replace(config, steps=cli.cap_steps(config.steps, args.max_steps))
    shifts = args.shifts or default_shifts(config.backbone)
    n_clusters = args.n_clusters or (TOY_N_CLUSTERS if toy else FULL_N_CLUSTERS)
    files, skipped, fingerprint = list_folder(folder, _flag(args, "n_train", "toy" if toy else "full"))
    online = not (args.cached_features if args.cached_features is not None else toy)
    out = Path(args.out) if args.out is not None else course_config.default_run_dir(
        "stego", f"folder_{folder.resolve().name}", config.backbone)
    resolved = {
        "profile": course_config.profile(args.profile), "smoke": course_config.smoke(), "out": str(out),
        "stego": config.to_dict(), "preset_note": preset_note("cocostuff27" if not toy else "toy", config.backbone),
        "data": {"dataset": f"{FOLDER_PREFIX}{folder}", "folder": str(folder.resolve()), "n_images": len(files),
                 "fingerprint": fingerprint, "n_clusters": n_clusters, "shifts": shifts,
                 "five_crop": config.five_crop, "resolution": config.resolution,
                 "val_resolution": config.val_resolution, "online": online, "num_workers": args.num_workers},
        "run": {"device": args.device or "auto", "threads": args.threads, "max_steps": args.max_steps,
                "checkpoint_every": args.checkpoint_every or default_checkpoint_every(config.steps),
                "checkpoint_selection": FOLDER_SELECTION, "cache": str(course_config.cache_dir())},
    }
    if args.print_config:
        cli.print_config(resolved)
        return None
    cli.prepare_out(out)
    finished = cli.guard_run(out, resolved, overwrite=args.overwrite, outputs=RUN_OUTPUTS, ignore=RESULT_NEUTRAL)
    if finished is not None:
        return finished
    if args.threads is None and toy:
        torch.set_num_threads(1)
    context = init_distributed(args.device)
    cli.write_json(out / "config.json", resolved)
    backbone = load_backbone(config.backbone, device=context.device)
    try:  # any backbone (the toy ViT too): the loaded one knows its patch size
        check_patch_multiple(config, backbone.patch_size)
    except ValueError as error:
        raise course_config.ConfigError(str(error)) from None
    data = prepare_folder_data(config, backbone, files, fingerprint, online=online, official_knn=not toy,
                               num_workers=args.num_workers, context=context)
    config = calibrated(config, data)
    torch.manual_seed(config.seed)
    model = StegoModel(data.source.in_channels, n_clusters, config)
    train_started = time.perf_counter()
    history = train_stego(model, data.source, out, context, checkpoint_every=resolved["run"]["checkpoint_every"],
                          desc=f"STEGO on {folder.name}")
    train_seconds = time.perf_counter() - train_started
    with cli.replace_when_written(out / "stego.pt") as partial:
        model.save(partial)
    metrics = {
        "selection": FOLDER_SELECTION, "selected_step": config.steps, "classes": None, "cluster_assignment": None,
        "n_clusters": n_clusters, "shifts": shifts,
        "shift_values": {"b_self": config.b_self, "b_knn": config.b_knn, "b_rand": config.b_rand},
        "preset_note": resolved["preset_note"],
        "diagnostics": folder_diagnostics(model, data.sample_features, data.sample_table),
        "final_losses": {key: value for key, value in history[-1].items() if key != "linear"} if history else None,
        "linear_probe": "not trained: no labels (its loss is 0)",
        "folder": str(folder.resolve()), "fingerprint": fingerprint, "n_images": len(files), "skipped": skipped,
        "n_train": len(data.source.table), "backbone_key": backbone_cache_key(config.backbone, backbone),
        "device": str(context.device), "profile": resolved["profile"], "smoke": resolved["smoke"],
        "train_seconds": train_seconds, "seconds": time.perf_counter() - started, "config": config.to_dict(),
        "history": history,
    }
    _write_outputs(out, metrics)
    diagnostics = metrics["diagnostics"]
    print(f"trained on {len(files)} images of {folder} ({len(skipped)} skipped), {config.steps} steps, "
          f"{n_clusters} clusters ({diagnostics['empty_clusters']} empty, size entropy "
          f"{diagnostics['cluster_entropy']:.2f}), code mean cosine {diagnostics['code_mean_cosine']:.2f}; "
          f"{metrics['seconds']:.0f} s; run folder {out} (python -m course_lib.segment --images DIR --run {out})")
    return metrics


def toy_run_dir() -> Path:
    """Where lessons 03 and 04 keep the toy CLI run: ``COURSE_CACHE/stego/runs/<toy backbone key>-<config
    hash>`` (:func:`course_lib.models.backbones.backbone_cache_key`: a retrained toy backbone or a changed toy configuration gets a new
    folder), with ``-smoke`` appended under ``COURSE_SMOKE``."""
    config_hash = hashlib.sha256(json.dumps(TOY_CONFIG.to_dict(), sort_keys=True).encode()).hexdigest()[:8]
    smoke = "-smoke" if course_config.smoke() else ""  # a tiny run never stands in for the real one
    return course_config.cache_dir() / "stego" / "runs" / f"{backbone_cache_key('toy_vit')}-{config_hash}{smoke}"


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
    with cli.replace_when_written(out / "loss_curves.png") as partial:
        figure.savefig(partial, dpi=100)
    cli.write_json(out / "metrics.json", metrics)  # last: it marks the run as complete


def _print_summary(metrics: dict, out: Path) -> None:
    print(f"cluster mIoU {metrics['cluster_mIoU']:.1f} (no CRF {metrics['cluster_mIoU_no_crf']:.1f}), "
          f"linear mIoU {metrics['linear_mIoU']:.1f}, k-means baseline {metrics['baseline_kmeans_mIoU']:.1f}, "
          f"{metrics['seconds']:.0f} s; run folder {out}")
    print(f"  evaluated step {metrics['selected_step']}: {metrics['selection']}")
    for row in metrics["ablations"] or []:
        linear = "" if row["linear_mIoU"] is None else f"  linear {row['linear_mIoU']:5.1f}"
        print(f"  {row['variant']:22s} cluster {row['cluster_mIoU']:5.1f}{linear}")


if __name__ == "__main__":
    cli.run_cli(main)
