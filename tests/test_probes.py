"""Probes on frozen features: linear probe, STEGO's cluster probe, mini-batch spherical k-means."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from course_lib.evaluation import UnsupervisedMetrics
from course_lib.evaluation.probes import (
    ClusterProbe,
    LinearProbe,
    MiniBatchSphericalKMeans,
    segmentation_cross_entropy,
)

N_CLASSES = 4


def separable_problem(n: int = 24, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Features N×8×8×8 where channel k is high on class-k cells (+ noise); labels N×16×16 (2×2 per cell)."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.randint(0, N_CLASSES, (n, 8, 8), generator=generator)
    features = 0.3 * torch.randn(n, 8, 8, 8, generator=generator)
    features[:, :N_CLASSES] += 2.0 * F.one_hot(coarse, 8).permute(0, 3, 1, 2)[:, :N_CLASSES]
    labels = coarse.repeat_interleave(2, 1).repeat_interleave(2, 2)
    return features, labels


def sphere_clusters(n_images: int = 6, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixels B×16×12×12 drawn around 5 orthogonal directions (tight, well separated); their ids B×12×12."""
    generator = torch.Generator().manual_seed(seed)
    directions = torch.eye(16)[:5] * 3.0
    ids = torch.randint(0, 5, (n_images, 12, 12), generator=generator)
    scale = 0.5 + torch.rand(n_images, 1, 12, 12, generator=generator)  # cosine ignores the norm
    features = (directions[ids].permute(0, 3, 1, 2) + 0.2 * torch.randn(n_images, 16, 12, 12,
                                                                         generator=generator)) * scale
    return features, ids


def hungarian_accuracy(predictions: torch.Tensor, ids: torch.Tensor, n: int) -> float:
    metrics = UnsupervisedMetrics(n)
    metrics.update(predictions, ids)
    return metrics.compute()["accuracy"]


def test_linear_probe_learns_a_separable_problem():
    features, labels = separable_problem()
    probe = LinearProbe(8, N_CLASSES, seed=0).fit(features, labels, epochs=30, lr=0.1, batch_size=24, device="cpu")
    assert probe.loss_history[-1] < probe.loss_history[0]
    test_features, test_labels = separable_problem(seed=1)
    predictions = probe.predict(test_features, size=16)
    assert predictions.shape == (24, 16, 16) and predictions.dtype == torch.long
    assert (predictions == test_labels).float().mean() > 0.95
    assert probe.predict(test_features).shape == (24, 8, 8)  # default: the feature size


def test_linear_probe_loss_ignores_invalid_labels():
    features, labels = separable_problem(n=2)
    probe = LinearProbe(8, N_CLASSES)
    labels[:, :4] = -1
    changed = labels.clone()
    changed[:, :4] = 1000  # out of 0..K-1: ignored too (ImageNet-S's ignore id)
    assert torch.equal(probe.loss(features, labels), probe.loss(features, changed))
    # the valid pixels alone give the same number
    logits = F.interpolate(probe(features), size=(16, 16), mode="bilinear", align_corners=False)
    valid = labels >= 0
    expected = F.cross_entropy(logits.permute(0, 2, 3, 1)[valid], labels[valid])
    assert probe.loss(features, labels).item() == pytest.approx(expected.item(), rel=1e-6)


def test_loss_without_valid_pixel_is_zero_not_nan():
    logits = torch.randn(1, 3, 4, 4, requires_grad=True)
    loss = segmentation_cross_entropy(logits, torch.full((1, 8, 8), -1))
    loss.backward()
    assert loss.item() == 0.0 and torch.isfinite(logits.grad).all()


def test_linear_probe_is_detached_from_the_backbone():
    features = torch.randn(2, 8, 4, 4, requires_grad=True)
    LinearProbe(8, 3).loss(features, torch.zeros(2, 4, 4, dtype=torch.long)).backward()
    assert features.grad is None


def test_cluster_probe_loss_is_stego_one_hot_loss():
    probe = ClusterProbe(3, 2, seed=0)
    with torch.no_grad():
        probe.clusters.copy_(torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]]))
    features = torch.tensor([[3.0, 0.0, 0.0], [1.0, 1.0, 0.0]]).T.reshape(1, 3, 1, 2)
    # pixel 1: cosines (1, 0) -> 1; pixel 2: cosines (1/√2, 1/√2) -> 1/√2; loss = -mean
    assert probe.loss(features).item() == pytest.approx(-(1 + 2 ** -0.5) / 2)
    assert probe.predict(features).tolist() == [[[0, 0]]]


@pytest.mark.parametrize("estimator", ["cluster_probe", "kmeans"])
def test_clusterers_recover_separated_clusters_and_are_seeded(estimator):
    features, ids = sphere_clusters()

    def fit(seed: int):
        if estimator == "cluster_probe":
            return ClusterProbe(16, 5, seed=seed).fit(features, epochs=10, batch_size=2, seed=seed, device="cpu")
        return MiniBatchSphericalKMeans(5, batch_size=128, epochs=5, seed=seed).fit(features)

    model = fit(0)
    predictions = model.predict(features)
    assert predictions.shape == ids.shape
    assert hungarian_accuracy(predictions, ids, 5) == pytest.approx(100.0)
    assert torch.equal(predictions, fit(0).predict(features))
    assert model.predict(features, size=(24, 30)).shape == (6, 24, 30)
    # 3× bilinear upsampling: output pixel 3i + 1 sits exactly on input pixel i
    upsampled = model.predict(features, size=36)
    assert torch.equal(upsampled[:, 1::3, 1::3], predictions)


def test_kmeans_different_seeds_differ_only_by_a_permutation():
    features, _ = sphere_clusters()
    a = MiniBatchSphericalKMeans(5, batch_size=128, seed=0).fit(features).predict(features)
    b = MiniBatchSphericalKMeans(5, batch_size=128, seed=3).fit(features).predict(features)
    assert hungarian_accuracy(a, b, 5) == pytest.approx(100.0)


def test_kmeans_with_more_clusters_than_distinct_points_never_nan():
    points = torch.tensor([[1.0, 0.0], [0.0, 1.0]]).repeat(50, 1)
    for init in ("k-means++", "random"):
        kmeans = MiniBatchSphericalKMeans(4, batch_size=16, epochs=3, init=init, seed=0).fit(points)
        assert torch.isfinite(kmeans.cluster_centers_).all()
        assert torch.allclose(kmeans.cluster_centers_.norm(dim=1), torch.ones(4))
        predictions = kmeans.predict(points)
        assert len(set(predictions[::2].tolist())) == 1 and predictions[0] != predictions[1]
    # zero vectors (e.g. padding) do not make NaN either
    assert torch.isfinite(MiniBatchSphericalKMeans(2).fit(torch.zeros(10, 3)).cluster_centers_).all()
    probe = ClusterProbe(3, 2)
    assert torch.isfinite(probe.loss(torch.zeros(1, 3, 2, 2)))


def test_kmeans_reseeds_a_cluster_that_got_no_point():
    # three exact directions: a random start that puts two centres on one direction ties them, the
    # second gets no point, is moved onto an uncovered direction and captures it
    points = torch.eye(3)[torch.tensor([0] * 60 + [1] * 30 + [2] * 30)]
    reseeded = []
    for seed in range(6):
        kmeans = MiniBatchSphericalKMeans(3, batch_size=32, epochs=4, init="random", seed=seed).fit(points)
        assert hungarian_accuracy(kmeans.predict(points), points.argmax(1), 3) == pytest.approx(100.0)
        assert kmeans.counts_.sum() == len(points)
        reseeded.append(kmeans.n_reseeded_)
    assert max(reseeded) > 0


def test_clear_errors():
    features, labels = separable_problem(n=2)
    with pytest.raises(ValueError, match="channels"):
        LinearProbe(5, 3).predict(features)
    with pytest.raises(ValueError, match="B×C×h×w"):
        LinearProbe(8, 3).predict(features[0])
    with pytest.raises(ValueError, match="2 feature maps but 1 label maps"):
        LinearProbe(8, 3).fit(features, labels[:1], epochs=1)
    with pytest.raises(TypeError, match="integer"):
        LinearProbe(8, 3).loss(features, labels.float())
    with pytest.raises(RuntimeError, match="fit"):
        MiniBatchSphericalKMeans(2).predict(features)
    with pytest.raises(ValueError, match="cannot make"):
        MiniBatchSphericalKMeans(5).fit(torch.randn(3, 2))
