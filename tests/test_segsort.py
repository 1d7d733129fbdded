"""SegSort: grid initialisation, vMF clustering, segment ids, losses, retrieval, priors, networks."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from course_lib.evaluation import UnsupervisedMetrics
from course_lib.segsort import figures
from course_lib.segsort import (
    LabelFreeSegments,
    PrototypeMemory,
    ResNetEmbeddingNet,
    SegmentRetrieval,
    ToyEmbeddingNet,
    batch_segment_ids,
    build_embedding_net,
    embed,
    felzenszwalb_segments,
    grid_segments,
    knn_vote,
    load_embedding_net,
    location_features,
    purified_prototypes,
    read_segment_png,
    save_embedding_net,
    segment_prototypes,
    segment_purity,
    segment_sort_loss,
    segments_from_ucm,
    slic_segments,
    split_segments_by_class,
    superpixels,
    supervised_segment_sort_loss,
    vmf_cluster,
)
from course_lib.segsort.vmf import assign_to_nearest, mean_directions


def as_map(vectors: torch.Tensor) -> torch.Tensor:
    """H×W×D pixel vectors → 1×D×H×W embeddings."""
    return vectors.permute(2, 0, 1)[None].float()


def two_region_embeddings(n_images: int = 3, size: int = 12, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Embeddings B×8×size×size: a random vertical boundary, class 0 near e0 on the left, class 1 near e1
    on the right (+ small noise); labels B×size×size."""
    generator = torch.Generator().manual_seed(seed)
    columns = torch.arange(size)
    cuts = torch.randint(3, size - 3, (n_images,), generator=generator)
    labels = (columns[None, None, :] >= cuts[:, None, None]).long().expand(-1, size, -1).contiguous()
    embeddings = F.one_hot(labels, 8).permute(0, 3, 1, 2).float()
    return embeddings + 0.05 * torch.randn(embeddings.shape, generator=generator), labels


# ----------------------------------------------------------------------------- vMF clustering
def test_grid_segments_is_a_row_major_grid_with_ceil_cells():
    grid = grid_segments(5, 24, 24)
    assert grid.shape == (24, 24) and grid.dtype == torch.int64
    assert torch.equal(torch.unique(grid), torch.arange(25))
    assert (grid[:5, :5] == 0).all() and (grid[:5, 5:10] == 1).all() and (grid[5:10, :5] == 5).all()
    assert (grid[20:, 20:] == 24).all() and (grid == 24).sum() == 16       # ceil(24/5) = 5: last cell 4×4
    assert torch.equal(grid_segments((2, 3), 4, 6), torch.tensor([[0, 0, 1, 1, 2, 2]] * 2 + [[3, 3, 4, 4, 5, 5]] * 2))
    # a grid finer than the map leaves ids unused (those clusters start empty)
    assert torch.unique(grid_segments(5, 3, 3)).tolist() == [0, 1, 2, 5, 6, 7, 10, 11, 12]
    with pytest.raises(ValueError):
        grid_segments(0, 4, 4)


def test_location_features_span_zero_to_one():
    position = location_features(3, 5)
    assert position.shape == (2, 3, 5)
    assert torch.allclose(position[0, :, 0], torch.tensor([0.0, 0.5, 1.0]))
    assert torch.allclose(position[1, 0], torch.linspace(0, 1, 5))


def test_empty_clusters_give_zero_prototypes_and_are_never_chosen():
    points = torch.tensor([[[-1.0, 0.0], [0.0, -1.0]]])               # 1 image, 2 points, both far from e0
    prototypes, counts = mean_directions(points, torch.tensor([[0, -1]]), 3)
    assert torch.isfinite(prototypes).all() and counts.tolist() == [[1, 0, 0]]
    assert torch.equal(prototypes[0, 1], torch.zeros(2))               # empty: the zero vector, not NaN
    # the zero vector would win (similarity 0 > -1) if empty clusters were not masked
    centre = torch.tensor([[[1.0, 0.0], [0.0, 0.0], [0.0, 0.0]]])
    assert assign_to_nearest(points, centre, torch.tensor([[1, 0, 0]])).tolist() == [[0, 0]]


def test_vmf_cluster_with_more_clusters_than_pixels_is_finite():
    embeddings = torch.ones(2, 4, 3, 3)                                # constant: most clusters empty
    labels, history = vmf_cluster(embeddings, grid=5, iterations=10, return_history=True)
    assert labels.shape == (2, 3, 3) and len(history) == 11
    assert labels.min() >= 0 and labels.max() < 25
    ids, _, _ = batch_segment_ids(labels)
    assert torch.isfinite(segment_prototypes(embeddings, ids)).all()


def test_vmf_cluster_finds_the_regions_and_is_batched():
    embeddings, labels = two_region_embeddings()
    segments = vmf_cluster(embeddings, grid=(1, 2), iterations=10)
    for image in range(len(labels)):       # two clusters, each one region (the grid starts at the middle)
        assert torch.equal(segments[image], labels[image]) or torch.equal(segments[image], 1 - labels[image])
    one_by_one = torch.cat([vmf_cluster(embeddings[i:i + 1], grid=5) for i in range(len(embeddings))])
    assert torch.equal(vmf_cluster(embeddings, grid=5), one_by_one)
    first = vmf_cluster(embeddings, 5, 10, return_history=True)[1][0]
    assert torch.equal(first[0], grid_segments(5, 12, 12))                # iteration 0 is the grid


def test_vmf_cluster_leaves_invalid_pixels_out():
    embeddings, _ = two_region_embeddings(n_images=1)
    valid = torch.ones(1, 12, 12, dtype=torch.bool)
    valid[0, :, :2] = False
    segments = vmf_cluster(embeddings, grid=3, valid=valid)
    assert (segments[~valid] == -1).all() and (segments[valid] >= 0).all()
    with pytest.raises(ValueError):
        vmf_cluster(embeddings, valid=valid[0])


def test_batch_segment_ids_never_collide_across_images():
    segments = torch.tensor([[[0, 0], [3, -1]], [[0, 3], [3, 7]]])     # both images use ids 0 and 3
    ids, image_index, local_id = batch_segment_ids(segments)
    assert ids.tolist() == [[[0, 0], [1, -1]], [[2, 3], [3, 4]]]
    assert image_index.tolist() == [0, 0, 1, 1, 1] and local_id.tolist() == [0, 3, 0, 3, 7]
    with pytest.raises(ValueError, match="ignored"):
        batch_segment_ids(torch.full((1, 2, 2), -1))


def test_segment_prototypes_are_normalised_sums_of_unit_embeddings():
    vectors = torch.tensor([[[3.0, 0.0], [0.0, 1.0]], [[0.0, -2.0], [5.0, 5.0]]])   # 2×2 pixels, D = 2
    ids = torch.tensor([[[0, 0], [1, -1]]])
    prototypes = segment_prototypes(as_map(vectors), ids)
    assert torch.allclose(prototypes, torch.tensor([[1.0, 1.0], [0.0, -1.0]]) / torch.tensor([[math.sqrt(2)], [1.0]]))


# ----------------------------------------------------------------------------- losses
def test_unsupervised_loss_on_a_hand_checkable_two_segment_case():
    # segment A: pixels (1, 0) and (0, 1) → μ_A = (1, 1)/√2; segment B: pixel (-1, 0) → μ_B = (-1, 0)
    vectors = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]])   # 1×3 pixels
    segments = torch.tensor([[[0, 0, 1]]])
    kappa, r = 2.0, 1 / math.sqrt(2)
    nll = lambda own, other: -math.log(math.exp(kappa * own) / (math.exp(kappa * own) + math.exp(kappa * other)))
    expected = (nll(r, -1.0) + nll(r, 0.0) + nll(1.0, -r)) / 3
    loss = segment_sort_loss(as_map(vectors), segments, concentration=kappa)
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_unsupervised_loss_counts_other_images_as_negatives_and_is_stable():
    embeddings = torch.randn(2, 4, 5, 5, requires_grad=True)
    segments = torch.zeros(2, 5, 5, dtype=torch.long)       # one region per image, same local id
    loss = segment_sort_loss(embeddings, segments, concentration=1000.0)
    assert torch.isfinite(loss) and loss.item() > 0         # the other image's region is a negative
    loss.backward()
    assert torch.isfinite(embeddings.grad).all() and embeddings.grad.abs().sum() > 0
    single = segment_sort_loss(embeddings[:1], segments[:1])
    assert single.item() == pytest.approx(0.0, abs=1e-6)    # only its own region: probability 1


def test_split_segments_by_class_splits_mixed_segments():
    segments = torch.tensor([[[0, 0, 0, 1]], [[0, 0, 1, 1]]])
    labels = torch.tensor([[[2, 2, 5, 5]], [[2, -1, 2, 2]]])
    ids, classes = split_segments_by_class(segments, labels)
    assert ids.tolist() == [[[0, 0, 1, 2]], [[3, -1, 4, 4]]]
    assert classes.tolist() == [2, 5, 5, 2, 2]


def test_supervised_loss_uses_the_leave_one_out_numerator():
    # segments A, B of class 0 (pixels e0 and e1), C of class 1 (pixel -e0); κ = 2
    vectors = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]])
    segments, labels = torch.tensor([[[0, 1, 2]]]), torch.tensor([[[0, 0, 1]]])
    kappa = 2.0
    e = math.exp
    pixel_a = -math.log(e(0.0) / (e(0.0) + e(-kappa)))        # numerator: B only (A left out); negatives: C
    pixel_b = -math.log(e(0.0) / (e(0.0) + e(0.0)))           # numerator: A; negatives: C
    pixel_c = -math.log(e(kappa) / (e(kappa) + e(-kappa) + e(0.0)))  # alone in its class: its own segment
    loss = supervised_segment_sort_loss(as_map(vectors), segments, labels, concentration=kappa)
    assert loss.item() == pytest.approx((pixel_a + pixel_b + pixel_c) / 3, rel=1e-5)


def test_supervised_loss_memory_keeps_two_batches_of_prototypes():
    embeddings, labels = two_region_embeddings(n_images=2, size=8)
    segments = vmf_cluster(embeddings, grid=2)
    memory = PrototypeMemory(n_banks=2)
    first = supervised_segment_sort_loss(embeddings, segments, labels, memory=memory)
    n_prototypes = len(memory)
    assert n_prototypes > 0 and len(memory.banks) == 1
    second = supervised_segment_sort_loss(embeddings, segments, labels, memory=memory)
    assert second.item() != pytest.approx(first.item())     # the remembered prototypes enter the softmax
    for _ in range(3):
        supervised_segment_sort_loss(embeddings, segments, labels, memory=memory)
    assert len(memory.banks) == 2 and len(memory) == 2 * n_prototypes
    restored = PrototypeMemory()
    restored.load_state_dict(memory.state_dict())
    assert len(restored) == len(memory)


# ----------------------------------------------------------------------------- retrieval
def test_purified_prototypes_keep_the_majority_class_pixels_only():
    vectors = torch.tensor([[[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]]])
    ids = torch.tensor([[[0, 0, 0, 0, 1]]])
    labels = torch.tensor([[[3, 3, 3, 1, -1]]])           # segment 1 has no labelled pixel: dropped
    prototypes, classes, kept = purified_prototypes(as_map(vectors), ids, labels, n_classes=4)
    assert classes.tolist() == [3] and kept.tolist() == [0]
    assert torch.allclose(prototypes, torch.tensor([[1.0, 0.0]]))  # the class-1 pixel is left out


def test_knn_vote_takes_the_majority_of_the_k_nearest():
    bank = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.8, 0.2], [0.0, 1.0], [0.1, 0.9]])
    bank_classes = torch.tensor([2, 2, 0, 1, 1])
    queries = torch.tensor([[1.0, 0.05], [0.05, 1.0]])
    assert knn_vote(queries, bank, bank_classes, n_classes=3, k=3).tolist() == [2, 1]
    assert knn_vote(queries, bank, bank_classes, n_classes=3, k=1).tolist() == [2, 1]
    with pytest.raises(ValueError):
        knn_vote(queries, bank, bank_classes, n_classes=3, k=6)


def test_segment_retrieval_and_label_free_variant_label_two_regions():
    train_embeddings, train_labels = two_region_embeddings(n_images=6, seed=0)
    val_embeddings, val_labels = two_region_embeddings(n_images=4, seed=1)
    retrieval = SegmentRetrieval(n_classes=2, k=3, grid=2, batch_size=4).fit(train_embeddings, train_labels)
    assert len(retrieval.bank) == len(retrieval.bank_classes) == len(retrieval.bank_image) > 6
    assert retrieval.bank_image.max() == 5
    predictions = retrieval.predict(val_embeddings)
    assert (predictions == val_labels).float().mean() > 0.95
    label_free = LabelFreeSegments(n_clusters=2, grid=2, batch_size=4).fit(train_embeddings)
    metrics = UnsupervisedMetrics(2)
    metrics.update(label_free.predict(val_embeddings), val_labels)
    assert metrics.compute()["accuracy"] > 95
    upsampled = retrieval.predict(val_embeddings, size=(24, 24))
    assert upsampled.shape == (4, 24, 24)


def test_segment_retrieval_add_counts_images_across_calls():
    embeddings, labels = two_region_embeddings(n_images=4)
    labels[1] = -1                                           # an image without labels is skipped
    retrieval = SegmentRetrieval(n_classes=2, k=1, grid=2)
    retrieval.add(embeddings[:2], labels[:2]).add(embeddings[2:], labels[2:])
    assert sorted(set(retrieval.bank_image.tolist())) == [0, 2, 3] and retrieval.n_images == 4
    with pytest.raises(RuntimeError):
        SegmentRetrieval(2).classify(torch.ones(1, 8))


# ----------------------------------------------------------------------------- priors
def test_superpixels_have_contiguous_ids():
    rng = np.random.default_rng(0)
    image = np.zeros((32, 32, 3))
    image[:, 16:] = 1.0
    image += 0.02 * rng.standard_normal(image.shape)
    for segments in (felzenszwalb_segments(image), slic_segments(image, n_segments=4)):
        assert segments.shape == (32, 32) and segments.dtype == np.int64
        assert np.array_equal(np.unique(segments), np.arange(segments.max() + 1))
        assert len(np.intersect1d(segments[:, :15], segments[:, 17:])) == 0     # the edge is respected
    batch = superpixels(torch.from_numpy(np.stack([image, image[:, ::-1]])).permute(0, 3, 1, 2).float())
    assert batch.shape == (2, 32, 32)
    with pytest.raises(ValueError):
        superpixels(batch.float(), method="hed")


def test_segment_purity_counts_pixels_in_their_segments_majority():
    segments, labels = torch.tensor([[[0, 0, 0, 1, 1]]]), torch.tensor([[[2, 2, 1, 1, -1]]])
    assert segment_purity(segments, labels) == pytest.approx(0.75)       # the ignored pixel does not count
    assert segment_purity(labels.clamp(min=0), labels) == 1.0


def test_segments_from_ucm_and_region_pngs(tmp_path):
    ucm = np.zeros((9, 9))
    ucm[4, :] = ucm[:, 4] = 0.8                              # a cross: four regions
    regions = segments_from_ucm(ucm, threshold=0.5)
    assert regions.max() == 3 and (regions >= 0).all()
    assert len({regions[0, 0], regions[0, 8], regions[8, 0], regions[8, 8]}) == 4
    assert len(np.unique(segments_from_ucm(ucm, threshold=0.9))) == 1
    path = tmp_path / "regions.png"
    Image.fromarray((regions * 1000).astype(np.uint16)).save(path)
    assert np.array_equal(read_segment_png(path), regions)
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "rgb.png")
    with pytest.raises(ValueError, match="single-channel"):
        read_segment_png(tmp_path / "rgb.png")


# ----------------------------------------------------------------------------- networks
def test_toy_network_gives_unit_embeddings_at_stride_four(tmp_path):
    net = build_embedding_net("toy", embedding_dim=16, seed=3)
    assert isinstance(net, ToyEmbeddingNet) and sum(p.numel() for p in net.parameters()) < 500_000
    embeddings = embed(net, torch.rand(3, 3, 64, 48), batch_size=2)
    assert embeddings.shape == (3, 16, 16, 12)
    assert torch.allclose(embeddings.norm(dim=1), torch.ones(3, 16, 12), atol=1e-5)
    assert torch.equal(build_embedding_net("toy", 16, seed=3).head.weight, net.head.weight)   # seeded
    save_embedding_net(net, tmp_path / "net.pt", {"arch": "toy", "embedding_dim": 16})
    loaded, config = load_embedding_net(tmp_path / "net.pt")
    assert config["embedding_dim"] == 16 and not loaded.training
    assert torch.allclose(embed(loaded, torch.ones(1, 3, 64, 64)), embed(net, torch.ones(1, 3, 64, 64)))
    with pytest.raises(FileNotFoundError, match="course_lib.segsort.train"):
        load_embedding_net(tmp_path / "missing.pt")


def test_resnet_network_is_dilated_to_stride_eight():
    net = build_embedding_net("resnet50", embedding_dim=8, seed=0)
    assert isinstance(net, ResNetEmbeddingNet)
    embeddings = embed(net, torch.rand(1, 3, 64, 80))
    assert embeddings.shape == (1, 8, 8, 10)
    assert torch.allclose(embeddings.norm(dim=1), torch.ones(1, 8, 10), atol=1e-5)
    with pytest.raises(ValueError):
        build_embedding_net("resnet18")


# ----------------------------------------------------------------------------- figures
def test_figures_draw_and_the_explorer_switches_frames():
    import matplotlib.pyplot as plt

    image = torch.rand(3, 32, 32)
    history = [torch.zeros(8, 8, dtype=torch.long), (torch.arange(8)[None, :] >= 4).long().expand(8, 8)]
    drawn = figures.outlined(image, history[1])
    assert drawn.shape == (32, 32, 3) and not np.allclose(drawn, image.permute(1, 2, 0).numpy())
    assert np.allclose(figures.outlined(image, history[0]), image.permute(1, 2, 0).numpy())   # one segment: no edge
    slider, picture = figures.sorting_explorer(image, history).children
    last = picture.value
    slider.value = 0
    assert picture.value != last
    masks = [(image, torch.ones(32, 32, dtype=torch.bool), 1, 0.9)]
    for fig in (figures.plot_vmf_on_circle(), figures.plot_sorting_frames(image, history, (0, 1)),
                figures.plot_priors(image[None], torch.zeros(1, 32, 32, dtype=torch.long), {"grid": history[1][None]}),
                figures.plot_segment_softmax({"net": np.array([0.2, 0.8])}, own=1),
                figures.plot_retrieval(image, torch.ones(32, 32, dtype=torch.bool), masks, ["a", "b"], predicted=1)):
        assert fig.axes
        plt.close(fig)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_clustering_and_loss_run_on_cuda():
    embeddings, labels = two_region_embeddings()
    embeddings, labels = embeddings.cuda().requires_grad_(), labels.cuda()
    segments = vmf_cluster(embeddings, grid=2)
    assert segments.is_cuda
    segment_sort_loss(embeddings, segments).backward()
    supervised_segment_sort_loss(embeddings, segments, labels, memory=PrototypeMemory())
