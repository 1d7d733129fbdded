import warnings

import numpy as np
import pytest
import torch

from course_lib.evaluation import UnsupervisedMetrics


def test_perfect_permuted_clustering_scores_100():
    labels = torch.randint(0, 5, (4, 16, 16), generator=torch.Generator().manual_seed(0))
    permutation = torch.tensor([3, 0, 4, 1, 2])
    metrics = UnsupervisedMetrics(5)
    metrics.update(permutation[labels], labels)
    result = metrics.compute()
    assert result["mIoU"] == pytest.approx(100.0)
    assert result["accuracy"] == pytest.approx(100.0)
    # cluster c was produced from class k with permutation[k] == c
    assert torch.equal(result["assignment"][permutation], torch.arange(5))
    assert torch.equal(metrics.map_clusters(permutation[labels]), labels)


def test_hand_computed_iou_and_ignore():
    labels = torch.tensor([0, 0, 1, 1, 1, -1, 2])
    preds = torch.tensor([1, 1, 0, 0, 1, 0, 5])  # 5 is out of range, dropped as in STEGO
    metrics = UnsupervisedMetrics(3)
    metrics.update(preds, labels)
    with pytest.warns(RuntimeWarning, match="1 of 6 labelled pixels"):
        result = metrics.compute()
    # matching: cluster 1 -> class 0, cluster 0 -> class 1; class 2 has no valid pixel
    # class 0: tp 2, fp 1, fn 0 -> 2/3; class 1: tp 2, fp 0, fn 1 -> 2/3; class 2 undefined
    assert result["mIoU"] == pytest.approx(100 * 2 / 3)
    assert result["accuracy"] == pytest.approx(100 * 4 / 5)
    assert np.isnan(result["iou"][2])


def test_identity_mode_does_not_permute():
    labels = torch.tensor([0, 1, 2, 0])
    metrics = UnsupervisedMetrics(3, hungarian=False)
    metrics.update(torch.tensor([1, 0, 2, 1]), labels)
    assert metrics.compute()["mIoU"] == pytest.approx(100 / 3)


def test_extra_clusters_pool_unmatched_rows():
    labels = torch.tensor([0, 0, 1, 1])
    preds = torch.tensor([0, 0, 1, 2])  # cluster 2 is dropped (>= n_classes), as in STEGO
    metrics = UnsupervisedMetrics(2, extra_clusters=1)
    metrics.update(preds, labels)
    result = metrics.compute()
    assert result["accuracy"] == pytest.approx(100.0)
    assert result["assignment"].tolist() == [0, 1, -1]


def test_bad_inputs_raise_clear_errors():
    metrics = UnsupervisedMetrics(3)
    with pytest.raises(ValueError, match="before any valid pixel"):
        metrics.compute()
    with pytest.raises(ValueError, match="same shape"):
        metrics.update(torch.zeros(3, dtype=torch.long), torch.zeros(4, dtype=torch.long))
    with pytest.raises(TypeError, match="integer"):
        metrics.update(torch.zeros(3), torch.zeros(3, dtype=torch.long))


def test_constant_prediction_scores_the_majority_class_only():
    labels = torch.tensor([0] * 6 + [1] * 3 + [2] * 1)
    metrics = UnsupervisedMetrics(3)
    metrics.update(torch.zeros_like(labels), labels)
    result = metrics.compute()
    # one cluster matched to class 0 (6 of 10 pixels): IoU 6/10, the other classes 0
    assert result["accuracy"] == pytest.approx(60.0)
    assert result["mIoU"] == pytest.approx(100 * (6 / 10) / 3)


def test_ids_above_255_and_classes_absent_from_predictions():
    n_classes = 300
    labels = torch.tensor([0, 256, 299, 299])
    preds = torch.tensor([256, 0, 299, 299])
    metrics = UnsupervisedMetrics(n_classes)
    metrics.update(preds, labels)
    result = metrics.compute()
    assert result["mIoU"] == pytest.approx(100.0)  # only the 3 present classes have a defined IoU
    assert result["assignment"][256] == 0 and result["assignment"][0] == 256
    assert sum(not np.isnan(v) for v in result["iou"]) == 3


def test_accumulates_over_batches_and_devices_like_one_update():
    generator = torch.Generator().manual_seed(1)
    labels = torch.randint(-1, 4, (6, 8, 8), generator=generator)
    preds = torch.randint(0, 4, (6, 8, 8), generator=generator)
    whole, parts = UnsupervisedMetrics(4), UnsupervisedMetrics(4)
    whole.update(preds, labels)
    for p, l in zip(preds.split(2), labels.split(2)):
        parts.update(p, l)
    assert torch.equal(whole.stats, parts.stats)
    assert whole.compute()["mIoU"] == pytest.approx(parts.compute()["mIoU"])


def test_predictions_outside_every_cluster_warn_once_with_their_count():
    labels = torch.tensor([0, 0, 1, 1, -1])
    preds = torch.tensor([0, 9, 9, -3, 7])  # one usable pixel; 7 lies on an unlabelled pixel and is not counted
    metrics = UnsupervisedMetrics(2)
    metrics.update(preds, labels)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first, second = metrics.compute(), metrics.compute()
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(messages) == 1 and "3 of 4 labelled pixels" in messages[0] and "0..1" in messages[0]
    # STEGO's numbers are kept: only the one in-range pixel is scored
    assert first["mIoU"] == second["mIoU"] == pytest.approx(100.0)
    assert metrics.n_out_of_range == 3 and metrics.n_labelled == 4
    metrics.reset()
    assert metrics.n_out_of_range == 0


def test_extra_clusters_are_cluster_ids_and_do_not_warn():
    metrics = UnsupervisedMetrics(2, extra_clusters=2)
    metrics.update(torch.tensor([0, 1, 2, 3]), torch.tensor([0, 1, 1, 0]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        metrics.compute()
    metrics.update(torch.tensor([4]), torch.tensor([0]))
    with pytest.warns(RuntimeWarning, match=r"1 of 5 labelled pixels .* outside the cluster ids 0..3"):
        metrics.compute()
