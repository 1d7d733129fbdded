"""The registry of every remote file the course knows: URL, checksum, size and file name.

As in d2l's ``DATA_HUB``, each file is a :class:`RemoteFile` with its source URL and, where one is
known, a checksum that :func:`course_lib.data.download.download` verifies. A checksum is recorded
only when an established library checks the same value, several independent download scripts agree
on it, or it was computed here from the authors' exact files; otherwise ``checksum_known=False``
and the file is trusted on first use (the downloader then warns and prints the SHA-256 it
computed). ``checksum_source`` says where each value comes from; no value is ever guessed.

``COURSE_DOWNLOAD_MIRROR`` (or the ``--mirror`` option of the data scripts) replaces every URL by
``<mirror>/<file name>``, for a local copy, a faster mirror, or the tests' local server.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from course_lib.config import cache_dir
from course_lib.data.download import MIRROR_VARIABLE, download


@dataclass(frozen=True)
class RemoteFile:
    """One downloadable file.

    ``filename`` is the name on disk and on a mirror (unique in the registry). ``checksum_known``
    must agree with ``sha256``/``md5``: ``False`` means no trustworthy checksum exists yet.
    ``sha256`` is the hex digest or, where only a prefix of it is published (torchvision's weight
    files), that prefix; ``checksum_source`` says which.
    ``http_only`` marks a file whose official URL is plain HTTP (no working HTTPS is known for its
    host); its integrity rests on the checksum (where known) and on the archive's own CRCs.
    """

    name: str
    url: str
    filename: str
    checksum_known: bool
    sha256: str | None = None
    md5: str | None = None
    size: int | None = None
    checksum_source: str = ""
    http_only: bool = False
    description: str = ""

    def __post_init__(self) -> None:
        has_checksum = self.sha256 is not None or self.md5 is not None
        if has_checksum != self.checksum_known:
            raise ValueError(f"Registry entry {self.name!r}: checksum_known={self.checksum_known} "
                             f"but sha256={self.sha256!r}, md5={self.md5!r}.")

    def resolved_url(self, mirror: str | None = None) -> str:
        """The URL to fetch: ``<mirror>/<filename>`` if a mirror is given or set in the environment."""
        mirror = mirror or os.environ.get(MIRROR_VARIABLE)
        if mirror:
            return f"{mirror.rstrip('/')}/{self.filename}"
        return self.url


# ------------------------------------------------------------------------------------- DINO weights
# facebookresearch/dino, hubconf.py: the backbone-only checkpoints (no head), loaded with a strict
# load_state_dict. Meta publishes no checksum for them.
_DINO = "https://dl.fbaipublicfiles.com/dino"
_DINO_SOURCE = "none published (facebookresearch/dino README and hubconf.py give only the URLs)"

WEIGHTS: dict[str, RemoteFile] = {
    model: RemoteFile(
        name=model,
        url=f"{_DINO}/{stem}/{stem}.pth",
        filename=f"{stem}.pth",
        checksum_known=False,
        checksum_source=_DINO_SOURCE,
        description=description,
    )
    for model, stem, description in [
        ("dino_vits16", "dino_deitsmall16_pretrain", "DINO ViT-S/16 backbone (21M parameters)"),
        ("dino_vits8", "dino_deitsmall8_pretrain", "DINO ViT-S/8 backbone (21M parameters)"),
        ("dino_vitb16", "dino_vitbase16_pretrain", "DINO ViT-B/16 backbone (85M parameters)"),
        ("dino_vitb8", "dino_vitbase8_pretrain", "DINO ViT-B/8 backbone (85M parameters)"),
    ]
}


# ------------------------------------------------------------------------------------ DINOv2 weights
# facebookresearch/dinov2 (commit b8931f7), dinov2/hub/utils.py:14-20 and dinov2/hub/backbones.py:57-59: the
# backbone-only checkpoints <base>/<arch>/<arch>[_reg4]_pretrain.pth, loaded with a strict load_state_dict.
# Meta publishes no checksum (the hub loads them with torch.hub.load_state_dict_from_url, hash unchecked), so
# they are treated as the DINO files: trusted on first use (get_weights.py prints and records the SHA-256
# beside the file, <file>.sha256) and verified by a strict load into the architecture.
_DINOV2 = "https://dl.fbaipublicfiles.com/dinov2"
_DINOV2_SOURCE = ("none published (facebookresearch/dinov2 README and dinov2/hub/backbones.py give only the URLs; "
                  "load_state_dict_from_url checks no hash)")

WEIGHTS.update({
    model: RemoteFile(
        name=model,
        url=f"{_DINOV2}/{arch}/{arch}{suffix}_pretrain.pth",
        filename=f"{arch}{suffix}_pretrain.pth",
        checksum_known=False,
        checksum_source=_DINOV2_SOURCE,
        description=description,
    )
    for model, arch, suffix, description in [
        ("dinov2_vits14", "dinov2_vits14", "", "DINOv2 ViT-S/14 backbone (21M parameters)"),
        ("dinov2_vitb14", "dinov2_vitb14", "", "DINOv2 ViT-B/14 backbone (86M parameters)"),
        ("dinov2_vits14_reg", "dinov2_vits14", "_reg4", "DINOv2 ViT-S/14 backbone with 4 registers (21M parameters)"),
        ("dinov2_vitb14_reg", "dinov2_vitb14", "_reg4", "DINOv2 ViT-B/14 backbone with 4 registers (86M parameters)"),
    ]
})


# ---------------------------------------------------------------------- torchvision ImageNet ResNets
# torchvision.models.ResNet{18,50,101}_Weights.IMAGENET1K_V1: the ImageNet initialisation SegSort starts
# from. torchvision names each file after the first 8 hex digits of its SHA-256 and verifies exactly that
# prefix (torch.hub.load_state_dict_from_url(check_hash=True)); no full digest is published, so the
# registry checks the same prefix (course_lib.data.download accepts a SHA-256 prefix).
_TORCHVISION = "https://download.pytorch.org/models"
_TORCHVISION_SOURCE = ("SHA-256 prefix only (8 hex digits): torchvision's file name carries it and "
                       "load_state_dict_from_url(check_hash=True) verifies the same prefix; "
                       "no full digest is published")

WEIGHTS.update({
    model: RemoteFile(
        name=model,
        url=f"{_TORCHVISION}/{filename}",
        filename=filename,
        checksum_known=True,
        sha256=sha256_prefix,
        checksum_source=_TORCHVISION_SOURCE,
        description=description,
    )
    for model, filename, sha256_prefix, description in [
        ("resnet18", "resnet18-f37072fd.pth", "f37072fd",
         "torchvision ResNet-18, ImageNet IMAGENET1K_V1 (11.7M parameters)"),
        ("resnet50", "resnet50-0676ba61.pth", "0676ba61",
         "torchvision ResNet-50, ImageNet IMAGENET1K_V1 (25.6M parameters)"),
        ("resnet101", "resnet101-63fe2227.pth", "63fe2227",
         "torchvision ResNet-101, ImageNet IMAGENET1K_V1 (44.5M parameters; SegSort's initialisation)"),
    ]
})


def weights_path(model: str, weights_dir: str | os.PathLike | None = None) -> Path:
    """Where ``get_weights.py`` stores ``model``: ``<weights_dir or cache_dir()/weights>/<file>.pth``."""
    if model not in WEIGHTS:
        raise KeyError(f"Unknown model {model!r}: choose one of {', '.join(WEIGHTS)}.")
    folder = Path(weights_dir) if weights_dir is not None else cache_dir() / "weights"
    return folder / WEIGHTS[model].filename


# ---------------------------------------------------------------------------------------- CocoStuff
COCOSTUFF: dict[str, RemoteFile] = {
    # mhamilton723/STEGO src/download_datasets.py: images, stuffthingmaps annotations and the IIC
    # curated lists, already in the course's cocostuff/ layout.
    "cocostuff_stego": RemoteFile(
        name="cocostuff_stego",
        url="https://marhamilresearch4.blob.core.windows.net/stego-public/pytorch_data/cocostuff.zip",
        filename="cocostuff.zip",
        checksum_known=False,
        checksum_source="none published (STEGO's download_datasets.py downloads it unchecked)",
        description="CocoStuff 164k as prepared by the STEGO authors (images, annotations, curated lists)",
    ),
    # The official sources (nightrome/cocostuff README, xu-ji/IIC datasets/README.txt).
    "coco_train2017": RemoteFile(
        name="coco_train2017",
        url="http://images.cocodataset.org/zips/train2017.zip",
        filename="train2017.zip",
        checksum_known=True,
        md5="cced6f7f71b7629ddf16f17bbcfab6b2",
        checksum_source="md5 checked by several independent public COCO download scripts "
                        "(not published by COCO itself)",
        http_only=True,
        description="COCO 2017 train images (118k, about 18 GB)",
    ),
    "coco_val2017": RemoteFile(
        name="coco_val2017",
        url="http://images.cocodataset.org/zips/val2017.zip",
        filename="val2017.zip",
        checksum_known=True,
        md5="442b8da7639aecaf257c1dceb8ba8c80",
        checksum_source="md5 checked by several independent public COCO download scripts "
                        "(not published by COCO itself)",
        http_only=True,
        description="COCO 2017 val images (5k, about 1 GB)",
    ),
    "cocostuff_stuffthingmaps": RemoteFile(
        name="cocostuff_stuffthingmaps",
        url="http://calvin.inf.ed.ac.uk/wp-content/uploads/data/cocostuffdataset/stuffthingmaps_trainval2017.zip",
        filename="stuffthingmaps_trainval2017.zip",
        checksum_known=False,
        checksum_source="none published (nightrome/cocostuff README gives the URL and the size, 659 MB)",
        http_only=True,
        description="COCO-Stuff stuff+thing label PNGs (0..181, 255 unlabelled) for train2017 and val2017",
    ),
    "cocostuff_curated": RemoteFile(
        name="cocostuff_curated",
        url="https://www.robots.ox.ac.uk/~xuji/datasets/COCOStuff164kCurated.tar.gz",
        filename="COCOStuff164kCurated.tar.gz",
        checksum_known=False,
        checksum_source="none published (xu-ji/IIC datasets/README.txt gives only the URL)",
        description="the IIC curated image lists (Coco164kFull_Stuff_Coarse_7.txt: IIC, PiCIE, STEGO val; Coco164kFull_Stuff_Coarse.txt: STEGO train)",
    ),
}

# ------------------------------------------------------------------------------------ PASCAL VOC 2012
VOC: dict[str, RemoteFile] = {
    "voc2012_trainval": RemoteFile(
        name="voc2012_trainval",
        url="https://thor.robots.ox.ac.uk/pascal/VOC/voc2012/VOCtrainval_11-May-2012.tar",
        filename="VOCtrainval_11-May-2012.tar",
        checksum_known=True,
        md5="6cd6e144f989b92b3379bac3b3de84fd",
        checksum_source="md5 of torchvision.datasets.VOCSegmentation (torchvision/datasets/voc.py)",
        description="PASCAL VOC 2012 trainval (images, SegmentationClass, ImageSets), about 2 GB",
    ),
    # The SBD-augmented labels as single-channel PNGs, the archive linked by DrSleep's
    # tensorflow-deeplab-resnet and used by most VOC 'train_aug' code bases.
    "voc2012_segmentation_class_aug": RemoteFile(
        name="voc2012_segmentation_class_aug",
        url="https://www.dropbox.com/s/oeu149j8qtbs1x0/SegmentationClassAug.zip?dl=1",
        filename="SegmentationClassAug.zip",
        checksum_known=False,
        checksum_source="none published (DrSleep/tensorflow-deeplab-resnet README gives only the link)",
        description="SegmentationClassAug: 12,031 single-channel label PNGs (VOC 2012 + SBD)",
    ),
}

# ------------------------------------------------------------------------------------------ ImageNet-S
# LUSSeg/ImageNet-S, folder data/, pinned to the commit whose files the checksums were computed from.
IMAGENET_S_COMMIT = "b2312ba7396151f883362bdc86d71469aa81066e"
_IMAGENET_S_RAW = f"https://raw.githubusercontent.com/LUSSeg/ImageNet-S/{IMAGENET_S_COMMIT}/data"
_IMAGENET_S_LIST_SOURCE = (f"sha256 computed from the official file at LUSSeg/ImageNet-S commit "
                           f"{IMAGENET_S_COMMIT[:8]}")

# (folder, file name, size in bytes, sha256)
_IMAGENET_S_LIST_FILES = [
    ("categories", "ImageNetS_categories_im50.txt", 499,
     "cba1701f5d94bf0dfbb40f2d529daab362dff552b9bfcea4bcdddbb5fcf762ad"),
    ("categories", "ImageNetS_categories_im300.txt", 2999,
     "9327409a512019ff7be95354f33daf2735852c04fecd0ac261790ce23e4115ca"),
    ("categories", "ImageNetS_categories_im919.txt", 9189,
     "b2ee89cf2d5def583dcea806b8cc99def3d9bb7355ae981fc4c986c6d8dec1da"),
    ("mapping", "ImageNetS_im50_mapping_validation.txt", 58655,
     "d51e06461f83d3742527768a86e7cb2543adad64ba273cd22dfb27d57ea02458"),
    ("mapping", "ImageNetS_im300_mapping_validation.txt", 319565,
     "d887652204f140a57775740f000ea7660f7e34a458d7bcfcf9b3898501351482"),
    ("mapping", "ImageNetS_im919_mapping_validation.txt", 968681,
     "52de0512c75cd04289f1b5be7fe2aad932a6f6e47288947d63e724985c5904b3"),
    ("mapping", "ImageNetS_im50_mapping_test.txt", 131195,
     "27b06a0b774f2a47b7660cee64187bf051ed98b734a0402f4b0c00e04f1dcbb4"),
    ("mapping", "ImageNetS_im300_mapping_test.txt", 708863,
     "94f26c4bc8c1acf4b2756138055c621df01b064094d863289cd3d6c81476cb64"),
    ("mapping", "ImageNetS_im919_mapping_test.txt", 2138993,
     "b2e60b72dafe47c71ba3d912d912dce5d4b612aae60ee6dfbdd95d780133dd61"),
    ("names", "ImageNetS_im50_validation.txt", 57903,
     "683614c6dd07d508e26862b24b3bcffccb919e50ee1ad1d14eb0e809ba8ee979"),
    ("names", "ImageNetS_im300_validation.txt", 315468,
     "36f9cbe4b3be25ccf6875e1627347d084ddd5a19971ff167ede5f8eafa4a3a41"),
    ("names", "ImageNetS_im919_validation.txt", 956262,
     "76b5e5ca74b4270568d8197a6aa7bf1c658859da84966d9308d11263fda9a83c"),
    ("names", "ImageNetSemi_im50_train.txt", 29787,
     "830e654142938b28f8856951bc4b264018cc1c13bf577777bb1359cf37a7f969"),
    ("names", "ImageNetSemi_im300_train.txt", 178665,
     "05f032374bd7a9a81213828940809e09e1eeedc5b43d78a4e41c1d64cb7e492a"),
    ("names", "ImageNetSemi_im919_train.txt", 547125,
     "d8a33edfeda5ea6a302fbf5bfc41735dc6b8f3d525a7dfc09bc5cb39d6ec44db"),
]

IMAGENET_S_LISTS: dict[str, RemoteFile] = {
    f"{folder}/{filename}": RemoteFile(
        name=f"{folder}/{filename}",
        url=f"{_IMAGENET_S_RAW}/{folder}/{filename}",
        filename=filename,
        checksum_known=True,
        sha256=sha256,
        size=size,
        checksum_source=_IMAGENET_S_LIST_SOURCE,
        description=f"official ImageNet-S list ({folder})",
    )
    for folder, filename, size, sha256 in _IMAGENET_S_LIST_FILES
}

IMAGENET_S_SUBSETS = ("50", "300", "919")


def imagenet_s_list_names(subset: str) -> dict[str, str]:
    """Registry keys of the official lists of one subset, by role.

    Roles: ``categories`` (sorted wnids; class id = 1-based line number), ``mapping_validation`` /
    ``mapping_test`` (``src dst`` lines from ImageNet's val folder), ``names_validation``
    (``wnid/NAME.JPEG wnid/NAME.png`` of the annotated validation images) and ``names_train_semi``
    (the same for the labelled training images of the semi-supervised split).
    """
    if subset not in IMAGENET_S_SUBSETS:
        raise ValueError(f"Unknown ImageNet-S subset {subset!r}: use one of {', '.join(IMAGENET_S_SUBSETS)}.")
    return {
        "categories": f"categories/ImageNetS_categories_im{subset}.txt",
        "mapping_validation": f"mapping/ImageNetS_im{subset}_mapping_validation.txt",
        "mapping_test": f"mapping/ImageNetS_im{subset}_mapping_test.txt",
        "names_validation": f"names/ImageNetS_im{subset}_validation.txt",
        "names_train_semi": f"names/ImageNetSemi_im{subset}_train.txt",
    }


# LUSSeg/ImageNet-S datapreparation/datapreparation_anno.sh: the label PNGs of the validation and
# train-semi splits, one release zip per subset. The hexadecimal suffix is part of the official
# file name; what it encodes is not documented, so it is not used as a checksum.
_IMAGENET_S_RELEASE = "https://github.com/LUSSeg/ImageNet-S/releases/download/ImageNet-S"
IMAGENET_S_ANNOTATIONS: dict[str, RemoteFile] = {
    subset: RemoteFile(
        name=f"imagenet_s{subset}_annotations",
        url=f"{_IMAGENET_S_RELEASE}/{filename}",
        filename=filename,
        checksum_known=False,
        checksum_source="none published (datapreparation_anno.sh downloads it unchecked)",
        description=f"ImageNet-S{subset} segmentation labels (validation-segmentation, train-semi-segmentation)",
    )
    for subset, filename in [
        ("50", "ImageNetS50-a0fe9d82231f9bc4787ee76e304dfa51.zip"),
        ("300", "ImageNetS300-dd8e42e156bac415a35c3c239de297bf.zip"),
        ("919", "ImageNetS919-5f7f58ae1003d21da9409a8576bf7680.zip"),
    ]
}


def all_files() -> dict[str, RemoteFile]:
    """Every registry entry, by name."""
    entries = [*WEIGHTS.values(), *COCOSTUFF.values(), *VOC.values(), *IMAGENET_S_LISTS.values(),
               *IMAGENET_S_ANNOTATIONS.values()]
    return {entry.name: entry for entry in entries}


def fetch(entry: RemoteFile, folder: str | os.PathLike, mirror: str | None = None, progress: bool = True,
          force: bool = False, validate: Callable[[Path], str | None] | None = None) -> Path:
    """Download ``entry`` into ``folder`` (resuming, verifying its checksum and size) and return its path.

    ``force`` and ``validate`` are those of :func:`course_lib.data.download.download`: download again
    whatever is there; a check of the file's contents (``None`` when good, else the reason)."""
    url = entry.resolved_url(mirror)
    print(f"[get] {entry.filename} <- {url}")
    return download(url, Path(folder) / entry.filename, sha256=entry.sha256, md5=entry.md5,
                    expected_size=entry.size, progress=progress, force=force, validate=validate)
