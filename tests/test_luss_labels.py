"""PASS pixel attention and label generation: shapes and initialisation, k-means, 'other', τ."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from course_lib.luss.attention import AttentionModel, PixelAttention
from course_lib.luss.d2s import image_mlp
from course_lib.luss.labels import (apply_threshold, cluster_ids, kmeans, mask_scores, otsu_threshold,
                                    pooled_embeddings, raw_label_maps, tau_sweep, unsupervised_scores)
from course_lib.data import normalize
from course_lib.models.resnet import build_resnet
from course_lib.ssl.swav import Prototypes


pytestmark = pytest.mark.usefixtures("one_thread")


def test_pixel_attention_shapes_and_initialisation():
    attention = PixelAttention(16)
    assert attention.bias.shape == (1, 16, 1, 1) and torch.all(attention.bias == 0)
    x_hat = F.normalize(torch.randn(3, 16, 10, 12), dim=1)
    a = attention(x_hat)
    assert a.shape == (3, 16, 10, 12) and (a > 0).all() and (a < 1).all()
    # BN in training mode centres the logits of every channel: with b = 0 the attention starts around 1/2
    assert a.mean(dim=(0, 2, 3)).sub(0.5).abs().max() < 0.05


def toy_attention_model():
    torch.manual_seed(0)
    backbone = build_resnet("toy_resnet")
    return AttentionModel(backbone, image_mlp(backbone.out_channels, 32, 8), Prototypes(8, 5), upsample=4)


def test_attention_model_freezes_backbone_and_head():
    model = toy_attention_model().train()
    assert not model.backbone.training and model.projection_head.training and model.attention.training
    trainable = {name.split(".")[0] for name, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"attention", "prototypes"}
    features, attention = model.maps(torch.randn(2, 3, 48, 64))
    assert features.shape == attention.shape == (2, 128, 24, 32)  # stride 8, upsampled ×4
    embeddings, scores = model([torch.randn(2, 3, 48, 48), torch.randn(2, 3, 48, 48)])
    assert len(embeddings) == 2 and embeddings[0].shape == (2, 8) and scores[1].shape == (2, 5)
    scores[0].sum().backward()
    assert all(p.grad is None for p in model.backbone.parameters())
    assert model.attention.bias.grad is not None


def test_pooled_embeddings_weight_by_attention():
    features = torch.zeros(1, 2, 2, 2)
    features[0, 0, 0, 0], features[0, 1, 1, 1] = 1.0, 1.0  # channel 0 at one pixel, channel 1 at another
    attention = torch.zeros(1, 2, 2, 2)
    attention[0, :, 0, 0] = 1.0  # attend only to the first pixel
    assert torch.allclose(pooled_embeddings(features, attention), torch.tensor([[1.0, 0.0]]))
    assert torch.allclose(pooled_embeddings(features), torch.tensor([[2 ** -0.5, 2 ** -0.5]]))


def test_kmeans_finds_separated_clusters_and_keeps_the_best_restart():
    generator = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    points = torch.cat([c + 0.1 * torch.randn(30, 2, generator=generator) for c in centres])
    result = kmeans(points, 3, restarts=3, seed=1, backend="torch")
    truth = torch.arange(3).repeat_interleave(30)
    assert all(len(set(result.assignments[truth == c].tolist())) == 1 for c in range(3))
    assert len(set(result.assignments.tolist())) == 3 and result.inertia < 90 * 0.03
    again = kmeans(points, 3, restarts=3, seed=1, backend="torch")
    assert torch.equal(again.assignments, result.assignments)  # seeded: deterministic


def test_kmeans_never_returns_nan_and_rejects_bad_input():
    points = torch.tensor([[1.0, 0.0]] * 5 + [[0.0, 1.0]])  # only 2 distinct points for 3 clusters
    result = kmeans(points, 3, restarts=2, seed=0, backend="torch")
    assert torch.isfinite(result.centroids).all()
    with pytest.raises(ValueError, match="clusters"):
        kmeans(points, 7, backend="torch")
    with pytest.raises(ValueError, match="finite"):
        kmeans(torch.tensor([[float("nan"), 0.0]] * 3), 2, backend="torch")


def test_cluster_ids_are_nearest_centroids_by_cosine_from_one():
    features = torch.tensor([[[[3.0, 0.0]], [[0.1, 2.0]]]])  # B=1, C=2, h=1, w=2
    centroids = torch.tensor([[0.0, 5.0], [1.0, 0.0]])
    assert cluster_ids(features, centroids).tolist() == [[[2, 1]]]


def test_other_where_the_mean_attention_is_below_tau():
    ids = torch.tensor([[1, 2], [3, 1]])
    attention = torch.tensor([[0.1, 0.5], [0.3, 0.9]])
    assert apply_threshold(ids, attention, 0.3).tolist() == [[0, 2], [3, 1]]
    assert apply_threshold(ids.numpy(), attention.numpy(), 0.6).tolist() == [[0, 0], [0, 1]]
    assert apply_threshold(ids, None, 0.6) is ids  # no attention (the baseline): no 'other'


def test_raw_label_maps_have_image_size_and_ids_from_one():
    model = toy_attention_model().eval()
    ids, attention = raw_label_maps(model, torch.randn(2, 3, 40, 48), torch.randn(4, 128), (40, 48))
    assert ids.shape == attention.shape == (2, 40, 48)
    assert ids.min() >= 1 and ids.max() <= 4 and (attention > 0).all() and (attention < 1).all()


def test_otsu_separates_two_modes():
    generator = torch.Generator().manual_seed(0)
    values = torch.cat([0.2 + 0.03 * torch.randn(3000, generator=generator),
                        0.7 + 0.05 * torch.randn(1000, generator=generator)])
    assert 0.3 < otsu_threshold(values) < 0.6


def synthetic_objects(n=20, size=16, k=4):
    """Images with one square object of category 1 + i mod k on 'other'; ā high on the object;
    cluster ids that equal (category mod k) + 1, i.e. a permutation of the categories."""
    gt, ids, attention = [], [], []
    for i in range(n):
        category = 1 + i % k
        label = np.zeros((size, size), np.int64)
        label[4:10, 4:10] = category
        gt.append(label)
        ids.append(np.full((size, size), category % k + 1))
        attention.append(np.where(label > 0, 0.8, 0.2))
    return gt, ids, attention


def test_tau_sweep_peaks_where_other_is_right():
    gt, ids, attention = synthetic_objects()
    curve = tau_sweep(list(zip(ids, attention, gt)), 4, [0.1, 0.5, 0.9])
    assert [row["tau"] for row in curve] == [0.1, 0.5, 0.9]
    assert curve[1]["mIoU"] == pytest.approx(100.0)  # between the two attention levels: perfect after matching
    assert curve[0]["mIoU"] < 50 and curve[2]["mIoU"] < 50  # no 'other' / nothing but 'other'
    direct, match = unsupervised_scores([apply_threshold(i, a, 0.5) for i, a in zip(ids, attention)], gt, 4)
    assert direct["mIoU"] == pytest.approx(100.0) and match == {0: 0, 1: 4, 2: 1, 3: 2, 4: 3}


def test_mask_scores_ignore_the_cluster_ids_but_not_the_masks():
    gt, ids, attention = synthetic_objects()
    scrambled = [np.where(label > 0, 1, 0) for label in gt]      # right masks, one cluster for every image
    assert mask_scores(scrambled, gt, 4)["mIoU"] == pytest.approx(100.0)
    assert unsupervised_scores(scrambled, gt, 4)[0]["mIoU"] < 50
    too_big = [np.where(a > 0, 1, 0) for a in attention]          # every pixel foreground
    assert mask_scores(too_big, gt, 4)["mIoU"] < 50
    with pytest.raises(ValueError, match="no category"):
        mask_scores([gt[0]], [np.zeros_like(gt[0])], 4)


def test_folder_evaluation_with_the_mask_transform_equals_mask_scores(tmp_path):
    from functools import partial
    from course_lib.data.label_png import write_imagenet_s_png
    from course_lib.evaluation.imagenet_s import evaluate_folders
    from course_lib.luss.labels import foreground_as_true_category
    gt, ids, attention = synthetic_objects(n=8)
    predictions = [apply_threshold(i, np.roll(a, 2, axis=1), 0.5) for i, a in zip(ids, attention)]  # shifted masks
    for index, (prediction, label) in enumerate(zip(predictions, gt)):
        write_imagenet_s_png(tmp_path / "pred" / "c" / f"{index}.png", prediction)
        write_imagenet_s_png(tmp_path / "gt" / "c" / f"{index}.png", label)
    from_folders = evaluate_folders(tmp_path / "pred", tmp_path / "gt", 4, workers=1,
                                    transform=partial(foreground_as_true_category, num_classes=4))
    assert from_folders == pytest.approx(mask_scores(predictions, gt, 4))
    assert 0 < from_folders["mIoU"] < 100


def test_category_probe_pools_over_the_object_and_scores_in_percent():
    from course_lib.luss.probe import category_probe, pooled_features
    torch.manual_seed(0)
    backbone = build_resnet("toy_resnet")
    images, labels = torch.rand(2, 3, 32, 32), torch.zeros(2, 32, 32, dtype=torch.long)
    labels[0, :16, :16] = 3                                     # object: the top-left quarter of image 0
    labels[1] = 5                                               # object: all of image 1
    objects, whole = pooled_features(backbone, images, labels)
    with torch.no_grad():
        features = backbone(normalize(images))
    assert np.allclose(objects[1], whole[1], atol=1e-5)         # the object covers image 1
    assert np.allclose(objects[0], features[0, :, :2, :2].mean(dim=(1, 2)).numpy(), atol=1e-5)
    scores = category_probe(backbone, n_train=30, n_val=20)
    assert set(scores) == {"probe_object", "probe_image", "nmi_object", "nmi_image"}
    assert all(0 <= value <= 100 for value in scores.values())
