"""What STEGO trains and evaluates on: cached frozen features (toy world) or images (full scale).

- :class:`FiveCrops` / :class:`HorizontalFlip`: dataset views (STEGO's five-crop of the toy world; the
  flipped copies whose codes are averaged at evaluation).
- :func:`toy_split_features`: cached features of a toy-world split (optionally five-cropped / flipped).
- :func:`full_dataset`: CocoStuff-27 / Cityscapes-27 at STEGO's resolutions (five-crop for training),
  resized with nearest neighbours (:class:`NearestResize`) as STEGO's loader.
- :func:`official_knn_descriptors`: the image descriptors of STEGO's kNN table (``src/precompute_knns.py``).
- :class:`PairBatchSampler`: the batches of (image, kNN partner) index pairs, split across processes.
- :class:`PairDataset`: loads the images of those pairs for training on the fly.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from ..config import progress
from ..data import CenterCrop, Cityscapes27, CocoStuff27, Compose, Resize, ToyWorld
from ..data.cocostuff import STEGO_TRAIN_LIST
from ..data.five_crop import five_crop
from ..data.five_crop import five_crop_dataset
from ..data.transforms import Pair, resize_pair
from ..models.features import FeatureCache, FeatureSet, run_backbone
from .pairs import draw_positives

FULL_DATASETS = {"cocostuff27": CocoStuff27, "cityscapes27": Cityscapes27}


class FiveCrops(Dataset):
    """STEGO's five-crop of a dataset of same-size images: item 5·i + c is crop c (top-left, top-right,
    bottom-left, bottom-right, centre; ``ratio`` of each side) of image i, resized to ``size`` × ``size``
    (default: back to the image size; bilinear image, nearest label) — STEGO resizes its crops to the training
    resolution too. Crops of a 192-px toy image with ``size=96`` keep the textures' native scale."""

    def __init__(self, dataset: Dataset, ratio: float = 0.5, size: int | None = None):
        self.dataset, self.ratio, self.size = dataset, ratio, size
        self._last: tuple[int, dict] | None = None  # the five crops of an image are usually read in a row

    def __len__(self) -> int:
        return 5 * len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        if self._last is None or self._last[0] != index // 5:
            self._last = (index // 5, self.dataset[index // 5])
        sample = self._last[1]
        image, label = five_crop(sample["image"], sample["label"], self.ratio)[index % 5]
        size = (self.size, self.size) if self.size is not None else tuple(sample["image"].shape[1:])
        if tuple(image.shape[1:]) != size:
            image, label = resize_pair(image, label, size)
        return {"image": image, "label": label}


class HorizontalFlip(Dataset):
    """The images and labels of ``dataset`` mirrored left–right."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        sample = self.dataset[index]
        return {"image": sample["image"].flip(-1), "label": sample["label"].flip(-1)}


def toy_world(split: str, n_images: int | None = None, size: int = 96, seed: int = 0, *, kind: str = "scenes",
              version: int = 1) -> ToyWorld:
    """A toy-world split: ``scenes`` by default (STEGO's CocoStuff-like setting), of world ``version``."""
    return ToyWorld(kind, split, n_images=n_images, size=size, seed=seed, version=version)


def toy_dataset_name(n_images: int, seed: int = 0, five_crop: bool = False, flipped: bool = False, *,
                     kind: str = "scenes", version: int = 1) -> str:
    """The name a toy-world split is cached under (features and kNN table); the world version from v2 on."""
    return (f"toy_{kind}_n{n_images}_seed{seed}" + ("" if version == 1 else f"_v{version}")
            + ("_fivecrop" if five_crop else "") + ("_hflip" if flipped else ""))


def toy_split_features(backbone: nn.Module, backbone_name: str, split: str, n_images: int | None = None,
                       size: int = 96, seed: int = 0, five_crop: bool = False, flipped: bool = False,
                       cache: FeatureCache | None = None, batch_size: int = 50) -> FeatureSet:
    """Cached features N×C×h×w (fp16) and labels of a toy-world split, five-cropped and/or flipped.

    Stored in ``cache`` (default ``COURSE_CACHE/features``) under
    :func:`course_lib.models.backbones.backbone_cache_key` ``(backbone_name, backbone)``.
    """
    world = toy_world(split, n_images, size, seed)
    dataset: Dataset = FiveCrops(world) if five_crop else world
    if flipped:
        dataset = HorizontalFlip(dataset)
    name = toy_dataset_name(len(world), seed, five_crop, flipped)
    device = next(backbone.parameters()).device
    return (cache or FeatureCache()).get_or_compute(backbone_name, dataset, name, split, size,
                                                    backbone=backbone, batch_size=batch_size, device=device)


def toy_images_uint8(split: str, n_images: int | None = None, size: int = 96, seed: int = 0, *,
                     kind: str = "scenes", version: int = 1) -> torch.Tensor:
    """N×H×W×3 uint8 images of a toy-world split (what the CRF looks at)."""
    world = toy_world(split, n_images, size, seed, kind=kind, version=version)
    return torch.stack([torch.from_numpy(world.render(i)[0]) for i in range(len(world))]).mul(255).round().to(torch.uint8)


class NearestResize(Resize):
    """:class:`~course_lib.data.transforms.Resize` with nearest-neighbour sampling of the image too.

    STEGO's loader resizes images *and* labels with ``T.Resize(res, Image.NEAREST)``
    (``mhamilton723/STEGO`` ``src/utils.py:165-183``, ``get_transform``); PIL's NEAREST takes source pixel
    ``floor((x + 0.5) · scale)``, which is torch's ``nearest-exact``. Same output size rule as ``Resize``.
    """

    def __call__(self, image: torch.Tensor, label: torch.Tensor | None = None) -> Pair:
        if image.ndim != 3 or (label is not None and tuple(label.shape) != tuple(image.shape[1:])):
            raise ValueError(f"NearestResize takes a 3×H×W image and an H×W label, got {tuple(image.shape)} and "
                             f"{None if label is None else tuple(label.shape)}")
        size = self.output_size(image.shape[1], image.shape[2])
        pixels = image if label is None else torch.cat([image, label[None].to(image.dtype)])  # ids < 2**24: exact
        pixels = F.interpolate(pixels[None], size=size, mode="nearest-exact")[0]
        return pixels[:3], None if label is None else pixels[3].round().to(label.dtype)

    def __repr__(self) -> str:
        return f"NearestResize({self.size!r})"


def full_dataset(name: str, split: str, resolution: int, five_crop: bool = False,
                 root: str | Path | None = None, n_images: int | None = None, num_workers: int = 0) -> Dataset:
    """CocoStuff-27 / Cityscapes-27 as STEGO's loaders give them: resized (short side, nearest neighbour,
    :class:`NearestResize`) and centre-cropped to ``resolution``. ``five_crop``: the five-crop set
    (``data_scripts/five_crop.py``), prepared first when missing (``num_workers`` processes). CocoStuff's
    ``train`` images are those of STEGO's training list (:data:`~course_lib.data.cocostuff.STEGO_TRAIN_LIST`),
    ``val`` those of the ``_7`` list. ``n_images``: the first ``n_images`` source images only (five-crop: their
    5·n crops), e.g. under ``COURSE_SMOKE``. A missing dataset raises ``DatasetNotFoundError`` at once."""
    if name not in FULL_DATASETS:
        raise ValueError(f"no full-scale loader for {name!r}; choose one of {', '.join(FULL_DATASETS)}")
    transform = Compose([NearestResize(resolution), CenterCrop(resolution)])
    if five_crop:
        return five_crop_dataset(name, split, root, transform=transform, n_images=n_images, num_workers=num_workers)
    options = {"image_list": STEGO_TRAIN_LIST} if (name, split) == ("cocostuff27", "train") else {}
    dataset = FULL_DATASETS[name](root=root, split=split, transform=transform, **options)
    return dataset if n_images is None or n_images >= len(dataset) else Subset(dataset, range(n_images))


def _stack_images(samples: list[dict]) -> torch.Tensor:
    return torch.stack([sample["image"] for sample in samples])


@torch.no_grad()
def dataset_features(backbone: nn.Module, dataset: Dataset, device: torch.device, batch_size: int = 32,
                     num_workers: int = 0, desc: str = "features") -> torch.Tensor:
    """Spatial means of the frozen backbone's features, N×C float32 (for the kNN table at full scale)."""
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers, collate_fn=_stack_images)
    means = [run_backbone(backbone, images, device).mean(dim=(2, 3)).cpu()
             for images in progress(loader, desc=desc, unit="batch")]
    return torch.cat(means)


def official_knn_descriptors(means: torch.Tensor, dropout: float, seed: int) -> torch.Tensor:
    """N×C unit vectors: STEGO's kNN descriptors from the N×C spatial means of the backbone's features.

    ``src/precompute_knns.py:50-55, 15-21`` runs ``DinoFeaturizer`` without ``.eval()``, so its
    ``Dropout2d(p=0.1)`` is active on the backbone feature it returns (``modules.py:115-116``), then
    L2-normalises the spatial mean. A dropped channel is zero at every position, so that is the mean with
    whole channels zeroed (each with probability ``dropout``, one draw per image and channel, here from
    ``seed``), normalised (the 1/(1-p) scale cancels).
    """
    if means.dim() != 2:
        raise ValueError(f"means must be N×C, got {tuple(means.shape)}")
    generator = torch.Generator().manual_seed(seed)
    kept = torch.rand(means.shape, generator=generator) >= dropout
    return F.normalize(means.float() * kept.to(means.device), dim=1, eps=1e-10)


class PairBatchSampler:
    """Batches of ``(index, kNN partner)`` pairs for ``steps`` training steps, this process's share.

    Each epoch shuffles all N items with a generator seeded by ``(seed, epoch)`` (the same order in every
    process); process ``rank`` of ``world_size`` takes its contiguous slice, cut into batches of
    ``batch_size`` (the last incomplete one dropped). Partners are drawn from ranks 1..``num_neighbors``
    of the kNN ``table`` (N×k). Iteration starts at ``start_step`` (resume), and is reproducible.
    """

    def __init__(self, table: torch.Tensor, num_neighbors: int, batch_size: int, steps: int, seed: int = 0,
                 rank: int = 0, world_size: int = 1, start_step: int = 0):
        self.table, self.num_neighbors, self.batch_size = table, num_neighbors, batch_size
        self.steps, self.seed, self.rank, self.world_size, self.start_step = steps, seed, rank, world_size, start_step
        self.per_rank = len(table) // world_size
        self.steps_per_epoch = self.per_rank // batch_size
        if self.steps_per_epoch < 1:
            raise ValueError(f"{len(table)} training items over {world_size} process(es) do not fill one batch "
                             f"of {batch_size}: use a smaller batch or more images")

    def __len__(self) -> int:
        return max(0, self.steps - self.start_step)

    def _epoch(self, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
        order = torch.randperm(len(self.table), generator=torch.Generator().manual_seed(self.seed * 100_003 + epoch))
        mine = order[self.rank * self.per_rank:(self.rank + 1) * self.per_rank]
        mine = mine[:self.steps_per_epoch * self.batch_size]
        generator = torch.Generator().manual_seed((self.seed * 100_003 + epoch) * 1_009 + self.rank + 1)
        return mine, draw_positives(self.table, mine, self.num_neighbors, generator)

    def __iter__(self):
        epoch, indices, positives = None, None, None
        for step in range(self.start_step, self.steps):
            step_epoch, offset = divmod(step, self.steps_per_epoch)
            if step_epoch != epoch:
                epoch = step_epoch
                indices, positives = self._epoch(epoch)
            batch = slice(offset * self.batch_size, (offset + 1) * self.batch_size)
            yield list(zip(indices[batch].tolist(), positives[batch].tolist()))


class PairDataset(Dataset):
    """Item ``(i, j)`` → image and label of sample i with the image of its partner j (for a DataLoader
    whose ``batch_sampler`` is a :class:`PairBatchSampler`)."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, pair: tuple[int, int]) -> dict:
        index, partner = pair
        sample = self.dataset[index]
        return {"image": sample["image"], "label": sample["label"], "image_pos": self.dataset[partner]["image"]}
