"""Feature extraction, the on-disk feature cache and the correspondence measurements of lesson 02."""
import numpy as np
import pytest
import torch

from course_lib.data import ToyWorld
from course_lib.models import FeatureCache, extract_features
from course_lib.models.feature_correspondences import (
    correlation_maps,
    kmeans_segmentation,
    patch_labels,
    raw_pixel_features,
    same_class_scores,
    same_class_separability,
)


class CountingBackbone(torch.nn.Module):
    """Average-pools 8×8 patches; counts how many images it has seen."""

    patch_size = 8

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(1))
        self.seen = 0

    def patch_features(self, x):
        self.seen += len(x)
        return torch.nn.functional.avg_pool2d(x, 8) * self.weight


def test_extract_features_batches_and_normalises():
    world = ToyWorld("scenes", "val", n_images=5, size=64)
    backbone = CountingBackbone()
    features, labels = extract_features(backbone, world, batch_size=2, device="cpu")
    assert features.shape == (5, 3, 8, 8) and labels.shape == (5, 64, 64)
    assert backbone.seen == 5 and not features.requires_grad
    # ImageNet normalisation happened before the backbone: pooled values are no longer in [0, 1]
    assert features.min() < 0


def test_feature_cache_round_trip_and_reuse(tmp_path):
    world = ToyWorld("scenes", "val", n_images=4, size=64)
    cache = FeatureCache(tmp_path)
    backbone = CountingBackbone()
    first = cache.get_or_compute("counting", world, "toy4", "val", 64, backbone=backbone, batch_size=3)
    assert backbone.seen == 4
    again = cache.get_or_compute("counting", world, "toy4", "val", 64, backbone=backbone)
    assert backbone.seen == 4, "the second call must read the cache, not rerun the backbone"
    assert again.features.dtype == torch.float16 and isinstance(np.asarray(again.features), np.ndarray)
    reference, labels = extract_features(CountingBackbone(), world, device="cpu")
    torch.testing.assert_close(again.features.float(), reference, atol=2e-3, rtol=2e-3)
    assert torch.equal(again.labels.long(), labels) and first.path == again.path
    assert first.path.relative_to(tmp_path).parts == ("counting", "toy4", "val", "64")


def test_incomplete_cache_entry_is_recomputed(tmp_path):
    world = ToyWorld("scenes", "val", n_images=2, size=64)
    cache = FeatureCache(tmp_path)
    entry = cache.get_or_compute("counting", world, "toy2", "val", 64, backbone=CountingBackbone())
    (entry.path / "meta.json").unlink()  # as if the run had been cut off before the end
    assert cache.load("counting", "toy2", "val", 64) is None
    backbone = CountingBackbone()
    cache.get_or_compute("counting", world, "toy2", "val", 64, backbone=backbone)
    assert backbone.seen == 2


def test_cache_size_mismatch_is_explained(tmp_path):
    cache = FeatureCache(tmp_path)
    cache.get_or_compute("counting", ToyWorld("scenes", "val", n_images=2, size=64), "toy", "val", 64,
                         backbone=CountingBackbone())
    with pytest.raises(ValueError, match="hold 2 images"):
        cache.get_or_compute("counting", ToyWorld("scenes", "val", n_images=3, size=64), "toy", "val", 64,
                             backbone=CountingBackbone())


def test_correlation_maps_peak_at_the_query():
    features = torch.randn(2, 16, 5, 6, generator=torch.Generator().manual_seed(0))
    maps = correlation_maps(features[1, :, 2, 3], features)
    assert maps.shape == (2, 5, 6)
    assert maps[1, 2, 3] == pytest.approx(1.0, abs=1e-6) and maps.max() <= 1 + 1e-6
    with pytest.raises(ValueError, match="same C"):
        correlation_maps(torch.zeros(3), features)


def test_patch_labels_majority_and_purity():
    labels = torch.zeros(1, 4, 4, dtype=torch.long)
    labels[0, :2, 2:] = 3            # top-right cell pure class 3
    labels[0, 2:, :2] = -1           # bottom-left cell ignored
    labels[0, 2, 2] = 1              # bottom-right: 3 of 4 pixels class 0
    grid = patch_labels(labels, (2, 2), min_purity=0.75)
    assert grid.tolist() == [[[0, 3], [-1, 0]]]
    assert patch_labels(labels, (2, 2), min_purity=0.8)[0, 1, 1] == -1


def test_raw_pixel_features_shape_and_content():
    images = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).reshape(2, 3, 4, 4)
    features = raw_pixel_features(images, 2)
    assert features.shape == (2, 12, 2, 2)
    assert features[1, :, 0, 1].tolist() == images[1, :, 0:2, 2:4].reshape(-1).tolist()


def test_same_class_scores_on_perfect_features():
    labels = torch.randint(0, 3, (4, 6, 6), generator=torch.Generator().manual_seed(0))
    features = torch.nn.functional.one_hot(labels, 3).permute(0, 3, 1, 2).float()
    for within in (True, False):
        similarity, same = same_class_scores(features, labels, n_pairs=500, within_image=within)
        assert len(similarity) == 500
        assert np.array_equal(similarity > 0.5, same)
    result = same_class_separability(features, labels, n_pairs=500)
    assert result["auroc"] == pytest.approx(100.0)
    noise = same_class_separability(torch.randn(4, 3, 6, 6), labels, n_pairs=2000)
    assert 35 < noise["auroc"] < 65


def test_kmeans_segmentation_recovers_separable_classes():
    labels = torch.randint(0, 4, (6, 4, 4), generator=torch.Generator().manual_seed(1))
    features = torch.nn.functional.one_hot(labels, 4).permute(0, 3, 1, 2).float() + 0.01
    result = kmeans_segmentation(features, labels, 4)
    assert result["mIoU"] == pytest.approx(100.0) and result["predictions"].shape == (6, 4, 4)


def test_kmeans_baseline_with_crf_scores_the_same_clusters_refined():
    from pathlib import Path

    from course_lib.models.features import FeatureSet
    from course_lib.stego import StegoData, kmeans_baseline
    generator = torch.Generator().manual_seed(0)
    labels = torch.zeros(4, 16, 16, dtype=torch.long)
    labels[:, :, 8:] = 1                                            # left half class 0, right half class 1
    features = torch.nn.functional.one_hot(labels[:, ::4, ::4], 2).permute(0, 3, 1, 2).float()
    features = features + 0.3 * torch.rand(features.shape, generator=generator)
    images = [{"image": (labels[i] == 1).float().expand(3, 16, 16)} for i in range(4)]   # the halves differ in colour
    val = FeatureSet(features.half(), labels, Path("."))
    data = StegoData(None, val, val, images, ["a", "b"])
    scores = kmeans_baseline(data, crf=True, crf_workers=1)
    assert scores["mIoU"] > 50 and scores["mIoU_crf"] >= scores["mIoU"]
    assert set(scores) == {"mIoU", "accuracy", "mIoU_crf", "accuracy_crf"}
    assert kmeans_segmentation(features, labels, 2)["centres"].shape == (2, 2)


def test_toy_features_cache_keys_the_toy_world_version(tmp_path):
    from course_lib.models.features import toy_features
    cache = FeatureCache(tmp_path)
    v1 = toy_features("toy_vit", "scenes", "val", n_images=2, size=64, cache=cache)
    v2 = toy_features("toy_vit", "scenes", "val", n_images=2, size=64, cache=cache, version=2)
    # v2 scenes are other images: a cache keyed without the version would hand back v1's features
    assert not torch.equal(v1.features, v2.features)
