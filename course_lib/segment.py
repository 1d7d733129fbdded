"""Segment a folder of your own images with a trained STEGO run.

``python -m course_lib.segment --images DIR --out OUT [--run RUN_DIR] [--no-crf] [--device D]
[--batch-size N] [--resolution PX] [--crf-workers N]``, or :func:`segment_folder` from Python.

The run (``--run``) is any folder ``python -m course_lib.stego.train`` wrote (``config.json``,
``stego.pt``, ``metrics.json``); by default the shipped toy run (:func:`course_lib.stego.train.toy_run`,
as lessons 03, 04 and 08 load it). Its ``config.json`` gives the backbone and the evaluation resolution
(``val_resolution``: 320 px for the official presets, 322 px for DINOv2, 96 px in the toy world),
``stego.pt`` the head and the cluster probe (the weights the run evaluated: the last step, or the best
kept checkpoint when the run selected one), ``metrics.json`` (when the run has one) the Hungarian
assignment of clusters to the classes of its validation set, used for the legend only (a run trained on
an unlabelled folder, ``--dataset folder:DIR``, has none: its clusters are named ``cluster k``).

Every image of ``DIR`` (not its sub-folders) whose suffix is ``.jpg``, ``.jpeg`` or ``.png`` (any case)
goes through what STEGO's evaluation does (:mod:`course_lib.stego.evaluate`), at the image's own aspect
ratio instead of a centre crop:

1. read (:func:`course_lib.data.image_folder.read_photo`, shared with training on a folder) with its EXIF
   orientation applied; greyscale (``L``, ``1``), palette (``P``), CMYK and 16-bit
   greyscale become RGB (16-bit values scaled by 1/257); an alpha channel (``RGBA``, ``LA``, a palette
   with transparency) is *composited over white*, not dropped: the colour of a transparent pixel is
   undefined (often black), and dropping alpha would show it as a dark region of its own;
2. resized (bilinear, antialiased) so that its short side is the run's resolution and both sides are
   multiples of the backbone's patch size p, (H', W') = p · round((H, W) · resolution / min(H, W) / p);
3. features of the image and of its mirror image f, f_flip (B×C×H'/p×W'/p) → codes
   z = (S(f) + flip(S(f_flip))) / 2 (:func:`~course_lib.stego.evaluate.flip_averaged_codes`) →
   upsampled bilinearly to H'×W' → cluster log-probabilities ``log_softmax(2 · cos(z, μ_k))``
   (:func:`~course_lib.stego.evaluate.cluster_log_probs`);
4. the dense CRF on the image at the model's resolution H'×W' (:func:`course_lib.evaluation.dense_crf_batch`,
   STEGO's kernel widths, made for the 320-px images the official evaluation uses; a process pool on the
   CPU), then the argmax (``--no-crf``: the argmax of step 3);
5. the cluster ids upsampled to the image's own H×W with nearest-neighbour sampling.

Images are batched by their size at step 2 (one batch holds images of one H'×W'): padding would change
the result, since every ViT token attends to the padded ones and the CRF would smooth across the pad,
whereas grouping gives every image exactly what it gets alone.

Outputs in ``OUT`` (created; each file written under a temporary name and renamed, so an existing file is
replaced only by a complete one; ``OUT`` may not be ``DIR``, whose PNGs it would replace):

- ``<name>.png``: single-channel uint8 cluster ids (0..K-1), exactly the image's H×W (after EXIF rotation);
- ``<name>_overlay.jpg``: the image with the clusters' colours blended in (:func:`course_lib.viz.overlay`,
  ``alpha`` 0.5, :func:`course_lib.viz.class_palette` of the K clusters);
- ``legend.png``: cluster id → colour, named ``cluster k: <class>`` when the run's metrics hold a Hungarian
  assignment, else ``cluster k``;
- ``segment.json``: the run, the settings, the legend, per image its file, output names, size, model size
  and the share of its pixels in each cluster; the files skipped, with the reason.

``<name>`` is the file's stem. When two images share a stem (``a.jpg`` and ``a.png``, also when they differ
only in case, as on a case-insensitive disk) or the stem is ``legend``, the suffix is appended instead:
``a_jpg``, ``a_png`` (a clash that remains after this is an error naming the files). A file that cannot be
read as an image is named on stderr and in ``segment.json`` and skipped; the others go on. A folder with
no image file, or with no readable one, is a :class:`~course_lib.config.CourseError` (exit status 2 in
the CLI).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from . import cli
from .config import ConfigError, get_device, progress
from .data.image_folder import UNREADABLE, image_files, read_photo
from .data.transforms import resize_pair
from .evaluation.crf import dense_crf_batch
from .models.backbones import backbone_cache_key, load_backbone
from .models.features import run_backbone
from .stego.evaluate import cluster_log_probs, flip_averaged_codes
from .stego.model import StegoModel
from .viz.palettes import class_palette, overlay

RESERVED_NAMES = ("legend",)
"""Output stems the folder's own files use (``legend.png``): an image of that stem gets its suffix appended."""
OVERLAY_ALPHA = 0.5
"""Weight of the cluster colours in ``<name>_overlay.jpg``."""
DEFAULT_BATCH_SIZE = 8


@dataclass
class SegmentRun:
    """A trained STEGO run ready to segment: its folder, the model (eval mode), the backbone's name, the
    evaluation resolution (short side, px) and the legend (one name per cluster)."""

    path: Path
    model: StegoModel
    backbone: str
    resolution: int
    legend: list[str]

    @property
    def n_clusters(self) -> int:
        return self.model.cluster_probe.n_classes


@dataclass
class SegmentReport:
    """What :func:`segment_folder` did (``segment.json`` holds it): per image ``file``, ``label``,
    ``overlay`` (output names), ``height``, ``width``, ``model_height``, ``model_width`` and
    ``cluster_shares`` (K shares of its pixels, cluster id order); per skipped file ``file`` and ``reason``."""

    images_dir: Path
    out: Path
    run: Path
    backbone: str
    resolution: int
    crf: bool
    n_clusters: int
    legend: list[str]
    device: str
    alpha: str = "composited over white"
    images: list[dict] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)
    seconds: float = 0.0


def default_run() -> Path:
    """The shipped toy STEGO run, copied into ``COURSE_CACHE`` (or trained when the toy backbone was
    retrained) as lessons 03, 04 and 08 do (:func:`course_lib.stego.train.toy_run`)."""
    from .stego.train import toy_run, toy_run_dir

    toy_run()
    return toy_run_dir()


def _read_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ConfigError(f"{path} cannot be read as JSON ({error}): is this a complete STEGO run?") from None
    if not isinstance(value, dict):
        raise ConfigError(f"{path} holds {type(value).__name__}, not the JSON object a STEGO run writes")
    return value


def load_run(run: str | Path, device: torch.device) -> tuple[SegmentRun, nn.Module]:
    """The STEGO run folder ``run`` (a ``python -m course_lib.stego.train`` output) and its frozen backbone.

    Reads ``config.json`` (``stego.backbone``, ``stego.val_resolution``; a shipped run without one uses the
    configuration saved in ``stego.pt``), ``stego.pt`` (:meth:`StegoModel.load`) and, when present,
    ``metrics.json`` (``classes`` and ``cluster_assignment`` for the legend; ``backbone_key``, checked
    against the backbone loaded now).

    Raises:
        ConfigError: ``run`` is not a folder, is not a finished STEGO run (the message names the missing
            file or section), or was trained on other backbone weights than the ones installed now.
        WeightsNotFoundError: the backbone's weight file is not downloaded (the message has the command).
    """
    run = Path(run).expanduser()
    if not run.is_dir():
        raise ConfigError(f"--run {run}: no such folder; give a folder written by python -m course_lib.stego.train")
    weights, config_path, metrics_path = run / "stego.pt", run / "config.json", run / "metrics.json"
    config = _read_json(config_path) if config_path.is_file() else None
    if config is not None and not isinstance(config.get("stego"), dict):
        raise ConfigError(f"--run {run} is not a STEGO run: its config.json has no 'stego' section (written by "
                          "another CLI?); give a folder written by python -m course_lib.stego.train")
    if not weights.is_file():
        unfinished = " (only checkpoint.pt: the training has not finished; run its command again to finish it)" \
            if (run / "checkpoint.pt").is_file() else ""
        raise ConfigError(f"--run {run} is not a finished STEGO run: stego.pt is missing{unfinished}; "
                          "python -m course_lib.stego.train --out RUN writes it when training ends")
    try:
        model = StegoModel.load(weights, map_location="cpu")
    except (OSError, RuntimeError, ValueError, KeyError, TypeError, EOFError) as error:
        raise ConfigError(f"{weights} cannot be loaded as a STEGO model ({type(error).__name__}: {error}); "
                          "train the run again") from None
    settings = config["stego"] if config is not None else model.config.to_dict()
    try:
        name, resolution = str(settings["backbone"]), int(settings["val_resolution"])
    except (KeyError, TypeError, ValueError):
        raise ConfigError(f"--run {run}: the 'stego' section of its config.json lacks a backbone or a "
                          "val_resolution; give a folder written by python -m course_lib.stego.train") from None
    metrics = _read_json(metrics_path) if metrics_path.is_file() else {}
    try:
        backbone = load_backbone(name, device=device)
    except ValueError as error:  # a name this version does not know
        raise ConfigError(f"--run {run}: {error}") from None
    expected, current = metrics.get("backbone_key"), backbone_cache_key(name, backbone)
    if expected is not None and expected != current:
        raise ConfigError(f"--run {run} was trained on the backbone {expected}, but {name} is now {current} "
                          "(retrained weights): train the STEGO run again on them")
    channels = getattr(backbone, "embed_dim", model.in_channels)
    if channels != model.in_channels:
        raise ConfigError(f"{weights} expects {model.in_channels}-channel features, but {name} gives {channels}: "
                          "the run's config.json and stego.pt disagree")
    legend = _legend(model.cluster_probe.n_classes, metrics.get("classes"), metrics.get("cluster_assignment"))
    return SegmentRun(run, model.to(device).eval(), name, resolution, legend), backbone


def _legend(n_clusters: int, classes: list[str] | None, assignment: list[int] | None) -> list[str]:
    """``cluster k: <class>`` for the clusters the Hungarian assignment matched to a class, else ``cluster k``."""
    names = [f"cluster {k}" for k in range(n_clusters)]
    if classes and assignment and len(assignment) == n_clusters:
        names = [f"{name}: {classes[c]}" if 0 <= c < len(classes) else name for name, c in zip(names, assignment)]
    return names


def model_size(height: int, width: int, resolution: int, patch: int) -> tuple[int, int]:
    """(H', W'): the short side scaled to ``resolution``, the long one in proportion, both rounded to a
    multiple of the ``patch`` size (at least one patch)."""
    scale = resolution / min(height, width)
    return tuple(max(patch, round(side * scale / patch) * patch) for side in (height, width))


def output_names(files: list[Path]) -> dict[Path, str]:
    """The output stem of every file: its stem, or ``<stem>_<suffix>`` when another file has the same stem
    (case-insensitively) or the stem is reserved (``legend``). Raises ``ConfigError`` for a clash left."""
    stems = Counter(path.stem.casefold() for path in files)
    names = {path: path.stem if stems[path.stem.casefold()] == 1 and path.stem.casefold() not in RESERVED_NAMES
             else f"{path.stem}_{path.suffix[1:]}" for path in files}
    taken = Counter(name.casefold() for name in names.values())
    clashes = sorted(path.name for path, name in names.items() if taken[name.casefold()] > 1)
    if clashes:
        raise ConfigError(f"--images: {', '.join(clashes)} would write outputs of the same name; rename one of them")
    return names


@torch.no_grad()
def segment_batch(run: SegmentRun, backbone: nn.Module, images: torch.Tensor, crf: bool = True,
                  crf_workers: int | None = None) -> torch.Tensor:
    """Cluster ids B×H'×W' (int64, CPU) of B×H'×W'×3 uint8 images of one size (steps 3-4 of the module
    docstring): flip-averaged codes, the cluster probe at α = 2, the CRF on these images when ``crf``."""
    device = next(run.model.parameters()).device
    pixels = images.permute(0, 3, 1, 2).float().div(255)
    features = run_backbone(backbone, torch.cat([pixels, pixels.flip(dims=[3])]), device)  # one pass for both
    codes = flip_averaged_codes(run.model, *features.chunk(2))
    log_probs = cluster_log_probs(run.model, codes, tuple(images.shape[1:3]))
    if not crf:
        return log_probs.argmax(1).cpu()
    return dense_crf_batch(images, log_probs.cpu(), workers=crf_workers).argmax(1)


@dataclass
class _Pending:
    """An image read and resized, waiting for its batch."""

    path: Path
    name: str
    height: int
    width: int
    resized: torch.Tensor  # H'×W'×3 uint8


def _resized(photo: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    image = torch.from_numpy(photo).permute(2, 0, 1).float().div(255)
    image, _ = resize_pair(image, None, size)
    return image.mul(255).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).contiguous()


def _save_image(array: np.ndarray, path: Path, **options) -> None:
    with cli.replace_when_written(path) as partial:
        Image.fromarray(array).save(partial, **options)


def _write_outputs(item: _Pending, small_ids: torch.Tensor, out: Path, palette: np.ndarray) -> dict:
    """Write ``<name>.png`` and ``<name>_overlay.jpg`` of one image from its H'×W' ids; its report entry."""
    ids = F.interpolate(small_ids[None, None].float(), size=(item.height, item.width), mode="nearest-exact")
    ids = ids[0, 0].to(torch.uint8).numpy()
    _save_image(ids, out / f"{item.name}.png")
    blended = overlay(read_photo(item.path), ids, alpha=OVERLAY_ALPHA, palette=palette)
    _save_image(blended, out / f"{item.name}_overlay.jpg", quality=90)
    shares = np.bincount(ids.ravel(), minlength=len(palette)) / ids.size
    return {"file": item.path.name, "label": f"{item.name}.png", "overlay": f"{item.name}_overlay.jpg",
            "height": item.height, "width": item.width, "model_height": int(small_ids.shape[0]),
            "model_width": int(small_ids.shape[1]), "cluster_shares": shares.tolist()}


def write_legend(path: Path, names: list[str], palette: np.ndarray) -> None:
    """``legend.png``: one coloured square per name (``palette[k]`` for ``names[k]``)."""
    from matplotlib.figure import Figure  # no pyplot: never a GUI backend

    from .viz.plots import legend_patches

    columns = 1 + (len(names) - 1) // 20
    figure = Figure(figsize=(3.2 * columns, 0.3 * min(len(names), 20) + 0.4))
    figure.legend(handles=legend_patches(names, palette), loc="center", ncols=columns, frameon=False)
    with cli.replace_when_written(path) as partial:
        figure.savefig(partial, dpi=100, bbox_inches="tight")


def segment_folder(images: str | Path, out: str | Path, run: str | Path | None = None, *, crf: bool = True,
                   batch_size: int = DEFAULT_BATCH_SIZE, device: str | torch.device | None = None,
                   resolution: int | None = None, crf_workers: int | None = None) -> SegmentReport:
    """Segment every image of the folder ``images`` with a trained STEGO run; write the results to ``out``.

    Args:
        images: the folder (not recursive; ``.jpg``, ``.jpeg``, ``.png``, any case, any size).
        out: the output folder (created; not ``images``).
        run: a ``python -m course_lib.stego.train`` run folder (default: the shipped toy run, :func:`default_run`).
        crf: the dense CRF after the cluster probe (STEGO's evaluation does it).
        batch_size: images per forward pass (of one size after resizing).
        device: ``cpu``, ``cuda``, ... (default :func:`course_lib.config.get_device`: the GPU when there is one).
        resolution: the short side the model sees (default: the run's ``val_resolution``).
        crf_workers: CRF processes (default: every core).

    Writes ``out/<name>.png`` (uint8 cluster ids at the image's own H×W), ``out/<name>_overlay.jpg``,
    ``out/legend.png`` and ``out/segment.json`` (see the module docstring); unreadable files are named on
    stderr and in ``segment.json``.

    Returns:
        The :class:`SegmentReport` that ``segment.json`` holds.

    Raises:
        ConfigError: a missing folder, no image file or no readable one, a bad value, a run that is not a
            finished STEGO run, or two files whose outputs would clash.
    """
    started = time.perf_counter()
    images, out = Path(images).expanduser(), Path(out).expanduser()
    files = image_files(images)
    if batch_size < 1 or (resolution is not None and resolution < 1):
        raise ConfigError(f"--batch-size ({batch_size}) and --resolution ({resolution}) must be positive")
    names = output_names(files)
    if out.resolve() == images.resolve():
        raise ConfigError(f"--out {out} is the --images folder: its label PNGs would replace your images; "
                          "give another folder")
    cli.prepare_out(out)
    device = device if isinstance(device, torch.device) else get_device(device)
    segment_run, backbone = load_run(run if run is not None else default_run(), device)
    patch = int(backbone.patch_size)
    resolution = resolution or segment_run.resolution
    if resolution < patch:
        raise ConfigError(f"--resolution {resolution} is smaller than {segment_run.backbone}'s patch size "
                          f"({patch} px)")
    if segment_run.n_clusters > 256:
        raise ConfigError(f"{segment_run.path} has {segment_run.n_clusters} clusters: more than a uint8 PNG holds")
    palette = class_palette(segment_run.n_clusters)
    report = SegmentReport(images, out, segment_run.path, segment_run.backbone, resolution, crf,
                           segment_run.n_clusters, segment_run.legend, str(device))
    done: dict[Path, dict] = {}
    buckets: dict[tuple[int, int], list[_Pending]] = {}
    bar = progress(total=len(files), desc="segmenting", unit="image")

    def flush(size: tuple[int, int]) -> None:
        batch = buckets.pop(size)
        ids = segment_batch(segment_run, backbone, torch.stack([item.resized for item in batch]), crf, crf_workers)
        for item, item_ids in zip(batch, ids):
            done[item.path] = _write_outputs(item, item_ids, out, palette)
        bar.update(len(batch))

    for path in files:
        try:
            photo = read_photo(path)
        except UNREADABLE as error:
            report.skipped.append({"file": path.name, "reason": f"not a readable image ({error})"})
            bar.write(f"skipped {path.name}: not a readable image ({error})", file=sys.stderr)
            bar.update(1)
            continue
        size = model_size(*photo.shape[:2], resolution, patch)
        buckets.setdefault(size, []).append(_Pending(path, names[path], *photo.shape[:2], _resized(photo, size)))
        if len(buckets[size]) == batch_size:
            flush(size)
    for size in list(buckets):
        flush(size)
    bar.close()
    if not done:
        reasons = "; ".join(f"{entry['file']}: {entry['reason']}" for entry in report.skipped[:5])
        raise ConfigError(f"--images {images}: none of its {len(files)} image files can be read ({reasons})")
    report.images = [done[path] for path in files if path in done]
    write_legend(out / "legend.png", segment_run.legend, palette)
    report.seconds = time.perf_counter() - started
    cli.write_json(out / "segment.json", asdict(report))
    return report


def read_labels(report: SegmentReport) -> dict[str, np.ndarray]:
    """The label PNGs :func:`segment_folder` wrote: image file name → H×W uint8 cluster ids (0..K−1) at the
    image's own size, in the report's order."""
    labels = {}
    for entry in report.images:
        with Image.open(Path(report.out) / entry["label"]) as ids:
            labels[entry["file"]] = np.array(ids)
    return labels


def folder_cluster_shares(report: SegmentReport) -> np.ndarray:
    """K shares (summing to 1) of all the folder's pixels in each cluster: the per-image ``cluster_shares``
    weighted by the images' H·W (a large image counts for more pixels)."""
    pixels = np.array([entry["height"] * entry["width"] for entry in report.images], dtype=np.float64)
    shares = np.array([entry["cluster_shares"] for entry in report.images], dtype=np.float64)
    return pixels @ shares / pixels.sum()


def cluster_exemplars(report: SegmentReport, per_cluster: int = 3) -> list[list[str]]:
    """Per cluster k, the image files (at most ``per_cluster``) in which k covers the largest share of the
    pixels, largest first; an image where k is absent never counts (an empty cluster gets no exemplar)."""
    shares = np.array([entry["cluster_shares"] for entry in report.images])  # N×K
    files = [entry["file"] for entry in report.images]
    order = np.argsort(-shares, axis=0, kind="stable")[:per_cluster]  # per_cluster×K
    return [[files[i] for i in order[:, k] if shares[i, k] > 0] for k in range(report.n_clusters)]


def run_agreement(reference: SegmentReport, other: SegmentReport) -> float:
    """How much two segmentations of the same folder agree, label-free (e.g. two training seeds): the share
    (%) of pixels with the same cluster once ``other``'s clusters are matched one-to-one to ``reference``'s
    (Hungarian on their pixel co-occurrence over the whole folder, :class:`UnsupervisedMetrics` with
    ``reference`` in the place of the labels). 100: the same partition up to the clusters' names.

    Raises:
        ConfigError: the two have different numbers of clusters, images or image sizes.
    """
    from .evaluation import UnsupervisedMetrics

    first, second = read_labels(reference), read_labels(other)
    if reference.n_clusters != other.n_clusters or first.keys() != second.keys():
        raise ConfigError(f"{reference.out} and {other.out} are not segmentations of the same images with the same "
                          f"K ({len(first)} images, K = {reference.n_clusters} vs {len(second)}, K = "
                          f"{other.n_clusters})")
    sizes = [name for name in first if first[name].shape != second[name].shape]
    if sizes:
        raise ConfigError(f"{other.out}: {', '.join(sizes[:5])} differ in size from {reference.out}'s")
    metrics = UnsupervisedMetrics(reference.n_clusters)
    metrics.update(torch.from_numpy(np.concatenate([second[name].ravel() for name in first]).astype(np.int64)),
                   torch.from_numpy(np.concatenate([first[name].ravel() for name in first]).astype(np.int64)))
    return float(metrics.compute()["accuracy"])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = cli.ArgumentParser(prog="python -m course_lib.segment",
                                description="Segment every image of a folder with a trained STEGO run.")
    parser.add_argument("--images", type=Path, required=True, help="folder of .jpg/.jpeg/.png images (not recursive)")
    parser.add_argument("--out", type=Path, required=True,
                        help="output folder: <name>.png, <name>_overlay.jpg, legend.png, segment.json")
    parser.add_argument("--run", type=Path, default=None,
                        help="a python -m course_lib.stego.train run folder (default: the shipped toy run)")
    parser.add_argument("--crf", action=argparse.BooleanOptionalAction, default=True,
                        help="refine with the dense CRF (default: on, as STEGO's evaluation)")
    parser.add_argument("--batch-size", type=cli.positive_int, default=DEFAULT_BATCH_SIZE,
                        help=f"images per forward pass (default {DEFAULT_BATCH_SIZE})")
    parser.add_argument("--resolution", type=cli.positive_int, default=None,
                        help="short side the model sees, px (default: the run's evaluation resolution)")
    parser.add_argument("--crf-workers", type=cli.positive_int, default=None, help="CRF processes (default: all cores)")
    cli.add_common_arguments(parser, skip=("out", "profile", "dataset", "data_root", "seed", "max_steps",
                                           "print_config", "overwrite"))
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> SegmentReport:
    """Run the CLI: segment the folder, print where the results are."""
    args = parse_args(argv)
    cli.apply_common(args)
    report = segment_folder(args.images, args.out, args.run, crf=args.crf, batch_size=args.batch_size,
                            device=args.device, resolution=args.resolution, crf_workers=args.crf_workers)
    names = ", ".join(entry["file"] for entry in report.skipped)
    skipped = f", {len(report.skipped)} skipped ({names})" if report.skipped else ""
    print(f"segmented {len(report.images)} images{skipped} with {report.run} ({report.backbone}, "
          f"{report.resolution} px, {report.n_clusters} clusters, CRF {'on' if report.crf else 'off'}) in "
          f"{report.seconds:.1f} s; results in {report.out}")
    return report


if __name__ == "__main__":
    cli.run_cli(main)
