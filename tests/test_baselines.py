import numpy as np
import pytest
import torch

from course_lib.evaluation import UnsupervisedMetrics, noisy_oracle


def _miou(predictions, labels, n_classes):
    metrics = UnsupervisedMetrics(n_classes)
    metrics.update(torch.from_numpy(predictions), torch.from_numpy(labels))
    return metrics.compute()["mIoU"]


def test_noise_free_oracle_is_a_permutation_of_the_truth():
    labels = np.random.default_rng(0).integers(0, 5, (3, 20, 20))
    predictions = noisy_oracle(labels, 5, noise=0.0)
    assert not np.array_equal(predictions, labels)  # ids shuffled
    assert _miou(predictions, labels, 5) == pytest.approx(100.0)


def test_more_noise_scores_lower_and_ignore_becomes_a_class():
    labels = np.repeat(np.arange(4), 400).reshape(4, 20, 20)
    labels[:, :2] = -1
    scores = [_miou(noisy_oracle(labels, 4, noise=n, block=4, seed=1), labels, 4) for n in (0.1, 0.5, 0.9)]
    assert scores[0] > scores[1] > scores[2]
    predictions = noisy_oracle(labels, 4, noise=0.0, permute=False)
    assert predictions.min() >= 0 and np.array_equal(predictions[:, 2:], labels[:, 2:])
    with pytest.raises(ValueError, match="noise"):
        noisy_oracle(labels, 4, noise=1.5)


def test_fixed_ids_keep_their_meaning():
    labels = np.random.default_rng(2).integers(0, 6, (2, 16, 16))
    predictions = noisy_oracle(labels, 6, noise=0.0, fixed_ids=1, seed=3)
    assert np.array_equal(predictions == 0, labels == 0)
    assert not np.array_equal(predictions, labels)
