"""Build the on-disk layouts of the real datasets: the work behind ``data_scripts/get_*.py``.

Every ``prepare_*`` function downloads (through :mod:`course_lib.data.hub`) or reads what it needs,
builds the layout the loaders expect under the data folder, then checks it with the matching
``check_*`` function, which returns counts and raises
:class:`~course_lib.data.folders.DatasetLayoutError` (the loaders' error) naming what is missing. Their ``files`` argument replaces registry entries (tests point them at a local server).

Layouts under the data folder (``COURSE_DATA``)::

    cocostuff/{images,annotations}/{train2017,val2017}/<id>.{jpg,png}
    cocostuff/curated/{train2017,val2017}/Coco164kFull_Stuff_Coarse_7.txt
    cocostuff/curated/train2017/Coco164kFull_Stuff_Coarse.txt           (STEGO's training list)
    cityscapes/leftImg8bit/{train,val}/<city>/<stem>_leftImg8bit.png
    cityscapes/gtFine/{train,val}/<city>/<stem>_gtFine_labelIds.png
    VOCdevkit/VOC2012/{JPEGImages,SegmentationClass,SegmentationClassAug,ImageSets/Segmentation}
    ImageNetS/lists/{categories,mapping,names}/<official file names>
    ImageNetS/ImageNetS{N}/{train,train-semi,validation,test}/<wnid>/<name>.JPEG
    ImageNetS/ImageNetS{N}/{train-semi-segmentation,validation-segmentation}/<wnid>/<name>.png
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import warnings
from collections import deque
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Callable, Iterable, Mapping

from course_lib.config import CourseError
from course_lib.config import progress as progress_bar
from course_lib.data import hub
from course_lib.data.download import (ArchiveError, DownloadError, extract, extraction_marker,
                                      file_checksum, remove_download)
from course_lib.data.folders import DatasetLayoutError  # the loaders' error for an incomplete folder

DOWNLOADS = "downloads"  # sub-folder of the data folder that holds archives while they are needed
COCOSTUFF_LIST = "Coco164kFull_Stuff_Coarse_7.txt"
COCOSTUFF_STEGO_TRAIN_LIST = "Coco164kFull_Stuff_Coarse.txt"
"""STEGO's training list for train2017 (its ``crop_datasets.py``); the same curated download ships it."""
COCOSTUFF_SPLITS = ("train2017", "val2017")
CITYSCAPES_SPLITS = ("train", "val")
CITYSCAPES_ZIPS = ("leftImg8bit_trainvaltest.zip", "gtFine_trainvaltest.zip")
CITYSCAPES_URL = "https://www.cityscapes-dataset.com/downloads/"
IMAGENET_URL = "https://image-net.org/download.php"
VOC_TRAIN_AUG_SIZE = 10582
# ImageNet-S 919 merges these ImageNet classes (key) into another one (value): LUSSeg/ImageNet-S README.
IMAGENET_S_MERGED = {"n04356056": "n04355933", "n04493381": "n02808440", "n03642806": "n03832673",
                     "n04008634": "n03773504", "n03887697": "n15075141"}
LINK_MODES = ("hardlink", "symlink", "copy")


class ListMismatchWarning(UserWarning):
    """A list file given with ``--lists-dir`` differs from the official one."""


# ---------------------------------------------------------------------------------------- archives

def install_archive(entry: hub.RemoteFile, dest_dir: Path, data_dir: Path, *, mirror: str | None = None,
                    keep_archive: bool = False, progress: bool = True) -> None:
    """Download ``entry`` (an archive) into ``<data_dir>/downloads`` and extract it into ``dest_dir``.

    Does nothing when the extraction already finished; deletes the archive afterwards unless
    ``keep_archive``.
    """
    if extraction_marker(entry.filename, dest_dir).exists():
        print(f"[ok] {entry.filename} is already extracted into {dest_dir}.")
        return
    archive = hub.fetch(entry, data_dir / DOWNLOADS, mirror=mirror, progress=progress)
    extract(archive, dest_dir, progress=progress)
    if not keep_archive:
        remove_download(archive)


@dataclass(frozen=True)
class FolderSpec:
    """A folder to take out of an archive: the shallowest one called ``name`` (any name if
    ``None``) that holds every entry of ``containing``."""

    name: str | None = None
    containing: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if self.name is None and not self.containing:
            raise ValueError("A FolderSpec needs a name or the entries the folder contains.")

    def matches(self, folder: Path) -> bool:
        return ((self.name is None or folder.name == self.name)
                and all((folder / child).exists() for child in self.containing))


def install_folders_from_archive(entry: hub.RemoteFile, folders: Mapping[Path, FolderSpec], data_dir: Path, *,
                                 mirror: str | None = None, keep_archive: bool = False,
                                 progress: bool = True) -> None:
    """Download ``entry``, extract it to a staging folder and move the folders it holds into place.

    ``folders`` maps each destination to the :class:`FolderSpec` that finds it inside the archive,
    so the archive's own top-level layout does not matter. A marker next to each destination
    records that it is complete; an interrupted run is taken up again. An existing destination
    without its marker is never overwritten (it may be the user's own data).
    """
    pending = {dest: spec for dest, spec in folders.items()
               if not (_installed_marker(dest).exists() and dest.is_dir())}
    if not pending:
        print(f"[ok] the contents of {entry.filename} are already in place.")
        return
    for dest in pending:
        if dest.exists():
            raise DatasetLayoutError(
                f"{dest} already exists but was not (completely) installed from {entry.filename}: move it "
                "away or delete it, then run the same command again.")
    archive = hub.fetch(entry, data_dir / DOWNLOADS, mirror=mirror, progress=progress)
    staging = data_dir / DOWNLOADS / f"{entry.filename}.staging"
    extract(archive, staging, progress=progress)
    for dest, spec in pending.items():
        found = _find_folder(staging, spec)
        if found is None:
            shutil.rmtree(staging)
            raise DatasetLayoutError(
                f"{entry.filename} holds no folder {spec.name or ''} with {', '.join(spec.containing) or 'files'}: "
                f"the archive is not what the course expects. Delete {archive} and run the command again; "
                "if this repeats, report the URL to the course maintainers."
            )
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(found, dest)
        if found == staging:  # the archive's top level was the folder itself
            extraction_marker(archive, dest).unlink()
        _installed_marker(dest).write_text(f"{entry.filename}\n")
    if staging.exists():
        shutil.rmtree(staging)
    if not keep_archive:
        remove_download(archive)


def _installed_marker(dest: Path) -> Path:
    """The marker ``.<name>.installed`` next to a folder that :func:`install_folders_from_archive` placed."""
    return dest.parent / f".{dest.name}.installed"


def _find_folder(root: Path, spec: FolderSpec) -> Path | None:
    """Breadth-first search for the shallowest folder under ``root`` (itself included) matching ``spec``."""
    queue = deque([root])
    while queue:
        folder = queue.popleft()
        if spec.matches(folder):
            return folder
        queue.extend(sorted(p for p in folder.iterdir() if p.is_dir() and p.name != "__MACOSX"))
    return None


def _already_complete(check: Callable[[Path], dict], root: Path) -> dict | None:
    """The counts of ``check(root)`` if the dataset there is already complete, else ``None``."""
    if not root.is_dir():
        return None
    try:
        counts = check(root)
    except DatasetLayoutError:
        return None
    print(f"[ok] {root} is already complete; nothing to download.")
    return counts


def _require(paths: Iterable[Path], what: str, command: str) -> None:
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise DatasetLayoutError(f"{what}: missing {', '.join(missing[:5])}"
                                 f"{' …' if len(missing) > 5 else ''}. Run `{command}`.")


def _missing_report(missing: list[str], total: int, what: str) -> str:
    examples = ", ".join(missing[:5]) + (" …" if len(missing) > 5 else "")
    return f"{len(missing)} of {total} {what} are missing (e.g. {examples})"


# --------------------------------------------------------------------------------------- CocoStuff

def prepare_cocostuff(data_dir: Path, source: str = "stego", *, files: Mapping[str, hub.RemoteFile] | None = None,
                      mirror: str | None = None, keep_archives: bool = False, progress: bool = True) -> dict:
    """Download CocoStuff 164k into ``<data_dir>/cocostuff`` and check it.

    ``source="stego"``: the STEGO authors' prepared archive (one download, already in the layout).
    ``source="official"``: the COCO 2017 image zips, the COCO-Stuff stuffthingmaps and IIC's
    curated lists, from their original hosts.
    """
    files = {**hub.COCOSTUFF, **(files or {})}
    root = data_dir / "cocostuff"
    if (complete := _already_complete(check_cocostuff, root)) is not None:
        return complete
    options = {"mirror": mirror, "keep_archive": keep_archives, "progress": progress}
    if source == "stego":
        install_folders_from_archive(
            files["cocostuff_stego"], {root: FolderSpec(containing=("images", "annotations", "curated"))},
            data_dir, **options)
    elif source == "official":
        install_archive(files["coco_train2017"], root / "images", data_dir, **options)
        install_archive(files["coco_val2017"], root / "images", data_dir, **options)
        install_archive(files["cocostuff_stuffthingmaps"], root / "annotations", data_dir, **options)
        install_folders_from_archive(files["cocostuff_curated"], {root / "curated": FolderSpec(name="curated")},
                                     data_dir, **options)
    else:
        raise ValueError(f"Unknown CocoStuff source {source!r}: use 'stego' or 'official'.")
    return check_cocostuff(root)


def check_cocostuff(root: Path) -> dict:
    """Check ``cocostuff/``: every id of the curated lists (``Coco164kFull_Stuff_Coarse_7.txt`` of both splits and
    STEGO's training list ``Coco164kFull_Stuff_Coarse.txt`` of train2017) has its image and its label PNG.

    Returns ``{"train2017": n_images, "val2017": n_images, "train2017_stego": n_images}`` (the ``_7`` lists, then
    STEGO's).
    """
    command = "python data_scripts/get_cocostuff.py"
    lists = {split: root / "curated" / split / COCOSTUFF_LIST for split in COCOSTUFF_SPLITS}
    lists["train2017_stego"] = root / "curated" / "train2017" / COCOSTUFF_STEGO_TRAIN_LIST
    _require(list(lists.values()), "CocoStuff curated lists", command)
    counts = {}
    for key, list_path in lists.items():
        split = list_path.parent.name
        ids = _read_lines(list_path)
        missing = [f"{split}/{i}" for i in ids
                   if not (root / "images" / split / f"{i}.jpg").is_file()
                   or not (root / "annotations" / split / f"{i}.png").is_file()]
        if missing:
            raise DatasetLayoutError(
                f"CocoStuff in {root}: " + _missing_report(missing, len(ids), f"images or labels of {list_path.name}")
                + f". Run `{command}` again.")
        counts[key] = len(ids)
    return counts


# -------------------------------------------------------------------------------------- PASCAL VOC

def prepare_voc(data_dir: Path, *, files: Mapping[str, hub.RemoteFile] | None = None, mirror: str | None = None,
                keep_archives: bool = False, progress: bool = True) -> dict:
    """Download PASCAL VOC 2012 and the SBD-augmented labels into ``<data_dir>/VOCdevkit/VOC2012``.

    Also writes ``ImageSets/Segmentation/train_aug.txt`` (see :func:`write_voc_train_aug`).
    """
    files = {**hub.VOC, **(files or {})}
    voc_root = data_dir / "VOCdevkit" / "VOC2012"
    if (complete := _already_complete(check_voc, voc_root)) is not None:
        return complete
    options = {"mirror": mirror, "keep_archive": keep_archives, "progress": progress}
    install_archive(files["voc2012_trainval"], data_dir, data_dir, **options)
    install_folders_from_archive(
        files["voc2012_segmentation_class_aug"],
        {voc_root / "SegmentationClassAug": FolderSpec(name="SegmentationClassAug")}, data_dir, **options)
    write_voc_train_aug(voc_root)
    return check_voc(voc_root)


def write_voc_train_aug(voc_root: Path) -> Path:
    """Write ``ImageSets/Segmentation/train_aug.txt``: every image with an SBD-augmented label that is
    not in the validation set (10,582 ids for the standard archive), sorted."""
    aug = voc_root / "SegmentationClassAug"
    val_list = voc_root / "ImageSets" / "Segmentation" / "val.txt"
    _require([aug, val_list], "PASCAL VOC 2012", "python data_scripts/get_voc.py")
    val = set(_read_lines(val_list))
    train_aug = sorted(p.stem for p in aug.glob("*.png") if p.stem not in val)
    if len(train_aug) != VOC_TRAIN_AUG_SIZE:
        print(f"[note] train_aug has {len(train_aug)} images; the standard split has {VOC_TRAIN_AUG_SIZE}.")
    path = val_list.with_name("train_aug.txt")
    path.write_text("".join(f"{i}\n" for i in train_aug))
    return path


def check_voc(voc_root: Path) -> dict:
    """Check ``VOCdevkit/VOC2012``: every id of ``train_aug``, ``train`` and ``val`` has its JPEG and
    its label (``SegmentationClassAug`` for ``train_aug``, ``SegmentationClass`` otherwise).

    Returns the number of images per list.
    """
    command = "python data_scripts/get_voc.py"
    lists = voc_root / "ImageSets" / "Segmentation"
    _require([lists / f"{name}.txt" for name in ("train_aug", "train", "val")], "PASCAL VOC 2012", command)
    counts = {}
    for name, labels in (("train_aug", "SegmentationClassAug"), ("train", "SegmentationClass"),
                         ("val", "SegmentationClass")):
        ids = _read_lines(lists / f"{name}.txt")
        missing = [i for i in ids if not (voc_root / "JPEGImages" / f"{i}.jpg").is_file()
                   or not (voc_root / labels / f"{i}.png").is_file()]
        if missing:
            raise DatasetLayoutError(f"PASCAL VOC in {voc_root}: "
                                     + _missing_report(missing, len(ids), f"{name} images or labels")
                                     + f". Run `{command}` again.")
        counts[name] = len(ids)
    return counts


# -------------------------------------------------------------------------------------- Cityscapes

def cityscapes_instructions(from_dir: Path | None = None) -> str:
    """How to get the two Cityscapes packages (the site needs a free account)."""
    problem = (f"The folder {from_dir} does not hold both Cityscapes packages.\n\n" if from_dir is not None
               else "")
    return (
        f"{problem}Cityscapes needs a (free) account, so the course cannot download it for you:\n"
        f"  1. Register and log in at https://www.cityscapes-dataset.com/ and open {CITYSCAPES_URL}\n"
        f"  2. Download these two packages into one folder DIR:\n"
        f"       {CITYSCAPES_ZIPS[0]}   (images, about 11 GB)\n"
        f"       {CITYSCAPES_ZIPS[1]}        (fine labels, about 241 MB)\n"
        f"  3. Run: python data_scripts/get_cityscapes.py --from-dir DIR\n"
    )


def prepare_cityscapes(from_dir: Path, data_dir: Path, progress: bool = True) -> dict:
    """Extract the user's Cityscapes zips from ``from_dir`` into ``<data_dir>/cityscapes`` and check it.

    The zips are the user's own download and are never deleted.
    """
    zips = [Path(from_dir) / name for name in CITYSCAPES_ZIPS]
    if not all(z.is_file() for z in zips):
        raise DatasetLayoutError(cityscapes_instructions(Path(from_dir)))
    root = data_dir / "cityscapes"
    for archive in zips:
        extract(archive, root, progress=progress)
    return check_cityscapes(root)


def check_cityscapes(root: Path) -> dict:
    """Check ``cityscapes/``: every ``leftImg8bit`` image of train and val has its ``gtFine_labelIds``.

    Returns the number of images per split (2975 and 500 for the full dataset).
    """
    counts = {}
    for split in CITYSCAPES_SPLITS:
        images = sorted((root / "leftImg8bit" / split).glob("*/*_leftImg8bit.png"))
        if not images:
            raise DatasetLayoutError(f"No images in {root / 'leftImg8bit' / split}.\n" + cityscapes_instructions())
        labels = [root / "gtFine" / split / p.parent.name / p.name.replace("_leftImg8bit.png", "_gtFine_labelIds.png")
                  for p in images]
        missing = [str(p.relative_to(root)) for p in labels if not p.is_file()]
        if missing:
            raise DatasetLayoutError(f"Cityscapes in {root}: " + _missing_report(missing, len(labels), "labels")
                                     + ". Extract gtFine_trainvaltest.zip again (get_cityscapes.py --from-dir DIR).")
        counts[split] = len(images)
    return counts


# -------------------------------------------------------------------------------------- ImageNet-S

def imagenet_s_instructions(imagenet_dir: Path | None = None) -> str:
    """How to provide ImageNet-1k, which ImageNet-S is built from (it needs a licence)."""
    problem = (f"{imagenet_dir} is not an ImageNet-1k folder with train/ and val/.\n\n"
               if imagenet_dir is not None else "")
    return (
        f"{problem}ImageNet-S is built from your own copy of ImageNet-1k (ILSVRC 2012), which needs an account\n"
        "and acceptance of the ImageNet terms of access, so the course cannot download it for you:\n"
        f"  1. Log in at {IMAGENET_URL} and download ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar.\n"
        "  2. Unpack them as DIR/train/<wnid>/<wnid>_<n>.JPEG (the train tar holds one tar per class)\n"
        "     and DIR/val/<wnid>/ILSVRC2012_val_<n>.JPEG (a flat DIR/val/ folder also works).\n"
        "  3. Run: python data_scripts/get_imagenet_s.py --imagenet-dir DIR --subset 50\n"
        "The official ImageNet-S lists (sha256-checked) and segmentation labels are then downloaded.\n"
    )


def fetch_imagenet_s_lists(lists_root: Path, subset: str, *, lists_dir: Path | None = None,
                           files: Mapping[str, hub.RemoteFile] | None = None, mirror: str | None = None,
                           progress: bool = True) -> dict[str, Path]:
    """Put the official lists of ``subset`` under ``lists_root/{categories,mapping,names}/``.

    They are downloaded (checksummed) unless ``lists_dir`` holds local copies, as
    ``lists_dir/<folder>/<file>`` or ``lists_dir/<file>``; a local copy that differs from the
    official file is used as given, with a :class:`ListMismatchWarning`. Returns paths by role
    (see :func:`course_lib.data.hub.imagenet_s_list_names`).
    """
    files = {**hub.IMAGENET_S_LISTS, **(files or {})}
    paths = {}
    for role, key in hub.imagenet_s_list_names(subset).items():
        entry, folder = files[key], lists_root / key.split("/")[0]
        if lists_dir is None:
            paths[role] = hub.fetch(entry, folder, mirror=mirror, progress=progress)
            continue
        candidates = [Path(lists_dir) / key, Path(lists_dir) / entry.filename]
        local = next((c for c in candidates if c.is_file()), None)
        if local is None:
            raise DatasetLayoutError(f"--lists-dir {lists_dir} has no {key} (looked for "
                                     f"{' and '.join(map(str, candidates))}).")
        if entry.sha256 is not None and file_checksum(local) != entry.sha256:
            warnings.warn(f"{local} differs from the official {key} (sha256 {entry.sha256}); using it as given.",
                          ListMismatchWarning, stacklevel=2)
        target = folder / entry.filename
        folder.mkdir(parents=True, exist_ok=True)
        if not (target.exists() and os.path.samefile(local, target)):
            shutil.copyfile(local, target)
        paths[role] = target
    return paths


@dataclass
class _LinkPlan:
    """Source → destination pairs of one split, and the sources that could not be found."""

    pairs: list[tuple[Path, Path]] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    total: int = 0


def _plan_train(imagenet_dir: Path, out: Path, categories: list[str]) -> _LinkPlan:
    """``train``: all training images of the subset's classes (merged classes included, as in 919)."""
    plan = _LinkPlan()
    for wnid in categories:
        for source in [wnid] + sorted(k for k, v in IMAGENET_S_MERGED.items() if v == wnid):
            folder = imagenet_dir / "train" / source
            plan.total += 1
            if not folder.is_dir():
                plan.missing.append(f"train/{source}/")
                continue
            with os.scandir(folder) as entries:
                plan.pairs.extend((Path(e.path), out / wnid / e.name) for e in entries if e.is_file())
    return plan


def _plan_listed(out: Path, pairs: list[tuple[str, str]], source_of: Callable[[str], list[Path]]) -> _LinkPlan:
    """One link per ``(src, dst)`` pair; ``source_of(src)`` gives the candidate source paths."""
    plan = _LinkPlan(total=len(pairs))
    for src, dst in pairs:
        found = next((p for p in source_of(src) if p.is_file()), None)
        if found is None:
            plan.missing.append(src)
        else:
            plan.pairs.append((found, out / dst))
    return plan


def _columns(path: Path) -> list[tuple[str, str]]:
    """The two columns of an ImageNet-S list (``src dst`` or ``image label``)."""
    rows = []
    for line in _read_lines(path):
        parts = line.split()
        if len(parts) != 2:
            raise DatasetLayoutError(f"{path}: expected two columns per line, got {line!r}.")
        rows.append((parts[0], parts[1]))
    return rows


def build_imagenet_s(imagenet_dir: Path, subset_root: Path, lists: Mapping[str, Path], link_mode: str = "hardlink",
                     progress: bool = True) -> dict:
    """Build ``ImageNetS{N}/{train,train-semi,validation,test}`` from a local ImageNet-1k.

    Follows LUSSeg/ImageNet-S ``datapreparation_*``: ``train`` holds every training image of the
    subset's categories (for 919, five merged classes join their target); ``train-semi`` the
    training images named by ``ImageNetSemi_im{N}_train.txt`` (the source class is the file-name
    prefix, which can differ from the destination folder); ``validation`` and ``test`` the
    ImageNet validation images of the ``mapping`` lists, whose ``src dst`` folders can differ.
    Files are hard-linked (falling back to a copy across file systems), symlinked or copied
    (``link_mode``). Every source is checked before anything is linked. Returns counts per split.
    """
    if link_mode not in LINK_MODES:
        raise ValueError(f"Unknown link mode {link_mode!r}: use one of {', '.join(LINK_MODES)}.")
    imagenet_dir = Path(imagenet_dir)
    if not (imagenet_dir / "train").is_dir() or not (imagenet_dir / "val").is_dir():
        raise DatasetLayoutError(imagenet_s_instructions(imagenet_dir))
    categories = _read_lines(lists["categories"])

    def val_source(src: str) -> list[Path]:  # wnid sub-folders, or a flat val/ folder
        return [imagenet_dir / "val" / src, imagenet_dir / "val" / Path(src).name]

    def train_source(src: str) -> list[Path]:  # n01440764/n01440764_123.JPEG: class = name prefix
        name = Path(src).name
        return [imagenet_dir / "train" / name.split("_")[0] / name]

    plans = {
        "train": _plan_train(imagenet_dir, subset_root / "train", categories),
        "train-semi": _plan_listed(subset_root / "train-semi",
                                   [(image, image) for image, _ in _columns(lists["names_train_semi"])],
                                   train_source),
        "validation": _plan_listed(subset_root / "validation", _columns(lists["mapping_validation"]), val_source),
        "test": _plan_listed(subset_root / "test", _columns(lists["mapping_test"]), val_source),
    }
    problems = [f"{split}: " + _missing_report(plan.missing, plan.total, "sources")
                for split, plan in plans.items() if plan.missing]
    if problems:
        raise DatasetLayoutError(
            f"Your ImageNet copy in {imagenet_dir} lacks files that ImageNet-S needs:\n  " + "\n  ".join(problems)
            + "\nCheck that it is the full ILSVRC 2012 train and val sets, unpacked as described below.\n\n"
            + imagenet_s_instructions())
    linker = _Linker(link_mode)
    for split, plan in plans.items():
        for folder in {dst.parent for _, dst in plan.pairs} | {subset_root / split / w for w in categories}:
            folder.mkdir(parents=True, exist_ok=True)
        for src, dst in progress_bar(plan.pairs, desc=f"{subset_root.name}/{split}", unit="file",
                                     **({} if progress else {"disable": True})):
            linker(src, dst)
    return {split: len(plan.pairs) for split, plan in plans.items()}


class _Linker:
    """Links one file; an existing destination of the right size is kept (so re-runs are cheap)."""

    def __init__(self, mode: str):
        self.mode = mode
        self.warned = False

    def __call__(self, src: Path, dst: Path) -> None:
        if dst.exists():
            if dst.stat().st_size == src.stat().st_size:
                return
            dst.unlink()
        elif dst.is_symlink():  # dangling link
            dst.unlink()
        if self.mode == "symlink":
            os.symlink(src.resolve(), dst)
        elif self.mode == "copy":
            shutil.copy2(src, dst)
        else:
            try:
                os.link(src, dst)
            except OSError as error:
                if not self.warned:
                    print(f"[note] hard links are not possible here ({error.strerror}); copying instead. "
                          "Use --link-mode symlink to save disk space.", file=sys.stderr)
                    self.warned = True
                shutil.copy2(src, dst)


def install_imagenet_s_annotations(subset: str, subset_root: Path, data_dir: Path, *,
                                   files: Mapping[str, hub.RemoteFile] | None = None, mirror: str | None = None,
                                   keep_archive: bool = False, progress: bool = True) -> None:
    """Download the official label PNGs of ``subset`` into ``validation-segmentation`` and
    ``train-semi-segmentation`` of ``subset_root``."""
    entry = {**hub.IMAGENET_S_ANNOTATIONS, **(files or {})}[subset]
    folders = {subset_root / name: FolderSpec(name=name)
               for name in ("validation-segmentation", "train-semi-segmentation")}
    install_folders_from_archive(entry, folders, data_dir, mirror=mirror, keep_archive=keep_archive,
                                 progress=progress)


def check_imagenet_s(subset_root: Path, lists: Mapping[str, Path]) -> dict:
    """Check ``ImageNetS{N}``: one ``train`` folder per category, and every image and label PNG named
    by the official lists. Returns counts (images per split, label PNGs per split)."""
    command = "python data_scripts/get_imagenet_s.py --imagenet-dir DIR --subset " + subset_root.name[len("ImageNetS"):]
    categories = _read_lines(lists["categories"])
    empty = [w for w in categories if not (subset_root / "train" / w).is_dir()
             or not any((subset_root / "train" / w).iterdir())]
    if empty:
        raise DatasetLayoutError(f"{subset_root}/train: " + _missing_report(empty, len(categories), "class folders")
                                 + f". Run `{command}`.")
    semi = _columns(lists["names_train_semi"])
    expected = {
        "train-semi": [image for image, _ in semi],
        "train-semi-segmentation": [label for _, label in semi],
        "validation": [dst for _, dst in _columns(lists["mapping_validation"])],
        "validation-segmentation": [label for _, label in _columns(lists["names_validation"])],
        "test": [dst for _, dst in _columns(lists["mapping_test"])],
    }
    counts = {"train": sum(1 for _ in (subset_root / "train").glob("*/*"))}
    for split, names in expected.items():
        missing = [n for n in names if not (subset_root / split / n).is_file()]
        if missing:
            raise DatasetLayoutError(f"{subset_root / split}: " + _missing_report(missing, len(names), "files")
                                     + f". Run `{command}` again.")
        counts[split] = len(names)
    return counts


def prepare_imagenet_s(imagenet_dir: Path, data_dir: Path, subset: str, *, lists_dir: Path | None = None,
                       link_mode: str = "hardlink", files: Mapping[str, hub.RemoteFile] | None = None,
                       mirror: str | None = None, keep_archives: bool = False, progress: bool = True) -> dict:
    """Build ``<data_dir>/ImageNetS/ImageNetS{subset}`` (lists, images, official labels) and check it."""
    root = data_dir / "ImageNetS"
    lists = fetch_imagenet_s_lists(root / "lists", subset, lists_dir=lists_dir, files=files, mirror=mirror,
                                   progress=progress)
    subset_root = root / f"ImageNetS{subset}"
    build_imagenet_s(imagenet_dir, subset_root, lists, link_mode=link_mode, progress=progress)
    install_imagenet_s_annotations(subset, subset_root, data_dir, files=files, mirror=mirror,
                                   keep_archive=keep_archives, progress=progress)
    return check_imagenet_s(subset_root, lists)


# ---------------------------------------------------------------------------------------- weights

def prepare_weights(models: Iterable[str], weights_dir: Path | None = None, *,
                    files: Mapping[str, hub.RemoteFile] | None = None, mirror: str | None = None,
                    progress: bool = True, force: bool = False) -> dict[str, Path]:
    """Download the official checkpoints of ``models`` (names of :data:`course_lib.data.hub.WEIGHTS`).

    A file already there is kept only when it is verified: its checksum (the registry's, else the SHA-256
    recorded at its download) and that it loads with ``torch.load(weights_only=True)`` as a state dict of
    the model's architecture (strict keys and shapes); a bad one is reported with its path and downloaded
    again, and so is every file with ``force``. A new download must pass the same checks.
    """
    from course_lib.models.backbones import weights_problem  # the models import the registry: import late

    files = {**hub.WEIGHTS, **(files or {})}
    paths = {}
    for model in models:
        target = hub.weights_path(model, weights_dir)
        paths[model] = hub.fetch(files[model], target.parent, mirror=mirror, progress=progress, force=force,
                                 validate=partial(weights_problem, model))
        print(f"[ok] {paths[model]} loads as the state dict of {hub.WEIGHTS[model].description} "
              "(weights_only=True, strict keys and shapes).")
    return paths


# ------------------------------------------------------------------------------------ command lines

def _read_lines(path: Path) -> list[str]:
    return [line.strip() for line in Path(path).read_text().splitlines() if line.strip()]


def add_common_arguments(parser: argparse.ArgumentParser, data_dir: bool = True, downloads: bool = True) -> None:
    """Add the options the data scripts share: ``--data-dir``; for scripts that download,
    ``--mirror`` and ``--keep-archives``; and ``--no-progress``."""
    if data_dir:
        parser.add_argument("--data-dir", type=Path, default=None,
                            help="root folder of the datasets (default: $COURSE_DATA, else <project>/data)")
    if downloads:
        parser.add_argument("--mirror", default=None,
                            help=f"fetch every file from MIRROR/<file name> instead of its official URL "
                                 f"(default: ${hub.MIRROR_VARIABLE} if set)")
    if data_dir and downloads:
        parser.add_argument("--keep-archives", action="store_true",
                            help="keep the downloaded archives in <data-dir>/downloads after extraction")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars (also: TQDM_DISABLE=1)")


def run_script(main: Callable[[], int | None]) -> None:
    """Run a data script's ``main``: warnings print as one ``warning: ...`` line, and the course's
    expected failures as a short message on stderr with exit status 1 (no traceback)."""
    warnings.formatwarning = lambda message, category, *args, **kwargs: f"warning: {message}\n"
    try:
        status = main()
    except (DownloadError, ArchiveError, CourseError) as error:
        print(f"\nerror: {error}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("\ninterrupted: run the same command again to resume.", file=sys.stderr)
        sys.exit(130)
    sys.exit(status or 0)


def print_summary(title: str, location: Path, counts: Mapping[str, object]) -> None:
    """Print what was prepared: ``title``, where, and the counts of a ``check_*`` function."""
    print(f"\n{title} is ready in {location}")
    for key, value in counts.items():
        print(f"  {key:<26} {value}")
