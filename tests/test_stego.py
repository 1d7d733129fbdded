"""STEGO's building blocks on hand-checkable inputs: correspondences, centering, the loss, sampling,
kNN pairs, negatives, the head and the configurations."""
from __future__ import annotations

import math

import pytest
import torch

from course_lib.stego import (
    OFFICIAL_CONFIGS,
    StegoHead,
    cached_knn_table,
    correlation_loss,
    derangement,
    draw_positives,
    global_descriptors,
    knn_table,
    random_coordinates,
    sample_grid,
    spatial_centering,
    stego_config,
    stego_loss,
    tensor_correlation,
)


def grid(*vectors) -> torch.Tensor:
    """1×C×1×W map whose positions (left to right) are the given C-vectors."""
    return torch.tensor(vectors, dtype=torch.float32).T[None, :, None, :]


# ----------------------------------------------------------------------------- correspondences


def test_tensor_correlation_is_the_cosine_of_every_pair():
    a = grid([1.0, 0.0], [0.0, 3.0])
    b = grid([2.0, 0.0], [1.0, 1.0])
    correlation = tensor_correlation(a, b)
    assert correlation.shape == (1, 1, 2, 1, 2)
    s = 1 / math.sqrt(2)
    torch.testing.assert_close(correlation[0, 0, :, 0, :], torch.tensor([[1.0, s], [0.0, s]]))


def test_tensor_correlation_of_a_zero_vector_is_zero_not_nan():
    correlation = tensor_correlation(grid([0.0, 0.0]), grid([1.0, 2.0]))
    assert correlation.item() == 0.0


def test_tensor_correlation_rejects_mismatched_channels():
    with pytest.raises(ValueError, match="channel"):
        tensor_correlation(torch.zeros(1, 3, 2, 2), torch.zeros(1, 4, 2, 2))


def test_spatial_centering_removes_the_partner_mean_and_restores_the_global_mean():
    # anchor 0 sees partners (1, 1), anchor 1 sees (0, 0): per-anchor means 1 and 0, global mean 0.5
    correlation = torch.tensor([[1.0, 1.0], [0.0, 0.0]]).reshape(1, 1, 2, 1, 2)
    torch.testing.assert_close(spatial_centering(correlation), torch.full_like(correlation, 0.5))


def test_spatial_centering_restores_the_mean_of_the_whole_batch():
    # one pair per image: each loses its own value and gets the batch mean (0.2 + 0.6) / 2
    correlation = torch.tensor([0.2, 0.6]).reshape(2, 1, 1, 1, 1)
    torch.testing.assert_close(spatial_centering(correlation), torch.full_like(correlation, 0.4))


# ----------------------------------------------------------------------------- the loss

S = 1 / math.sqrt(2)
FEATS1, FEATS2 = grid([1.0, 0.0], [0.0, 1.0]), grid([1.0, 0.0], [1.0, 0.0])   # F = [[1, 1], [0, 0]]
CODES1, CODES2 = grid([1.0, 0.0], [0.0, 1.0]), grid([1.0, 0.0], [-1.0, 1.0])  # S = [[1, -s], [0, s]]
SHIFT = 0.25
# F - b = [[.75, .75], [-.25, -.25]];  centred: F^SC - b = .25 everywhere;  clamp(S) = [[1, 0], [0, s]]
EXPECTED = {
    (False, True): -(0.75 - 0.25 * S) / 4,
    (False, False): -(0.75 - 0.75 * S - 0.25 * S) / 4,
    (True, True): -(0.25 + 0.25 * S) / 4,
    (True, False): -(0.25 - 0.25 * S + 0.25 * S) / 4,
}


@pytest.mark.parametrize("pointwise,zero_clamp", list(EXPECTED))
def test_correlation_loss_by_hand(pointwise, zero_clamp):
    loss = correlation_loss(FEATS1, FEATS2, CODES1, CODES2, SHIFT, pointwise=pointwise, zero_clamp=zero_clamp)
    assert loss.dim() == 0
    assert loss.item() == pytest.approx(EXPECTED[pointwise, zero_clamp], abs=1e-6)


def test_correlation_loss_sends_gradient_to_the_codes_only_and_the_clamp_blocks_negative_pairs():
    feats1, feats2 = FEATS1.clone().requires_grad_(), FEATS2.clone().requires_grad_()
    codes2 = CODES2.clone().requires_grad_()
    correlation_loss(feats1, feats2, CODES1, codes2, SHIFT, pointwise=False, zero_clamp=True).backward()
    assert feats1.grad is None and feats2.grad is None
    # partner 1 ([-1, 1]) meets anchor 0 at S = -s (clamped, no gradient) and anchor 1 at S = +s with
    # F - b = -0.25 < 0: the loss pushes them apart, so the gradient is non-zero
    assert codes2.grad[0, :, 0, 1].abs().sum() > 0
    codes2.grad = None
    only_negative = grid([1.0, 0.0], [-1.0, 0.0])  # S = [[1, -1], [0, 0]]
    only_negative.requires_grad_()
    correlation_loss(FEATS1, FEATS2, CODES1, only_negative, SHIFT, pointwise=False, zero_clamp=True).backward()
    assert only_negative.grad[0, :, 0, 1].abs().sum() == 0


def test_correlation_loss_rejects_grids_of_different_sizes():
    with pytest.raises(ValueError, match="grid"):
        correlation_loss(torch.rand(2, 3, 4, 4), torch.rand(2, 3, 4, 4), torch.rand(2, 5, 3, 3),
                         torch.rand(2, 5, 4, 4), 0.1)


def test_stego_loss_combines_the_three_terms_with_the_weights():
    config = stego_config("toy", lambda_self=0.5, lambda_knn=2.0, lambda_rand=3.0)
    signal, signal_pos = torch.randn(4, 6, 5, 5), torch.randn(4, 6, 5, 5)
    codes, codes_pos = torch.randn(4, 3, 5, 5), torch.randn(4, 3, 5, 5)
    terms = stego_loss(signal, signal_pos, codes, codes_pos, config, torch.Generator().manual_seed(0))
    again = stego_loss(signal, signal_pos, codes, codes_pos, config, torch.Generator().manual_seed(0))
    assert set(terms) == {"self", "knn", "rand", "total"}
    torch.testing.assert_close(terms["total"], 0.5 * terms["self"] + 2.0 * terms["knn"] + 3.0 * terms["rand"])
    torch.testing.assert_close(terms["total"], again["total"])


def test_stego_self_term_of_identical_codes_and_features():
    # codes equal to the features: S = F, so the centred, clamped self term is -mean(clamp(F) (F^SC - b))
    config = stego_config("toy", b_self=0.0)
    feats = torch.rand(2, 4, 3, 3)  # non-negative: every cosine >= 0, clamp inactive
    terms = stego_loss(feats, feats, feats, feats, config, torch.Generator().manual_seed(1))
    assert terms["self"].item() < 0


# ----------------------------------------------------------------------------- sampling


def test_sample_grid_reads_corners_centre_and_clamps_at_the_border():
    maps = torch.arange(9, dtype=torch.float32).reshape(1, 1, 3, 3)  # row-major 0..8
    coordinates = torch.tensor([[[[-1.0, -1.0], [1.0, -1.0], [0.0, 0.0], [-1.0, 1.0], [3.0, 0.0]]]])
    values = sample_grid(maps, coordinates)[0, 0, 0]
    # (x, y): top-left 0, top-right 2, centre 4, bottom-left 6, far right of the middle row clamps to 5
    torch.testing.assert_close(values, torch.tensor([0.0, 2.0, 4.0, 6.0, 5.0]))


def test_sample_grid_interpolates_bilinearly_between_cell_centres():
    maps = torch.tensor([[[[0.0, 10.0]]]])
    value = sample_grid(maps, torch.tensor([[[[0.5, 0.0]]]]))  # 3/4 of the way from the left centre
    assert value.item() == pytest.approx(7.5)


def test_random_coordinates_are_uniform_in_the_square_and_reproducible():
    first = random_coordinates(3, 11, torch.Generator().manual_seed(0))
    second = random_coordinates(3, 11, torch.Generator().manual_seed(0))
    assert first.shape == (3, 11, 11, 2)
    assert first.min() >= -1 and first.max() <= 1 and first.min() < -0.9 and first.max() > 0.9
    torch.testing.assert_close(first, second)


# ----------------------------------------------------------------------------- pairs


def test_knn_table_ranks_neighbours_by_cosine_with_the_image_first():
    vectors = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.6, 0.8]]), dim=1)
    table = knn_table(vectors, k=3)
    assert table[:, 0].tolist() == [0, 1, 2, 3]
    assert table[0].tolist() == [0, 1, 3] and table[2].tolist() == [2, 3, 1]


def test_global_descriptors_are_unit_spatial_means():
    features = torch.zeros(2, 2, 2, 2)
    features[0, 0] = 3.0
    features[1, 1, 0, 0] = 4.0
    torch.testing.assert_close(global_descriptors(features), torch.tensor([[1.0, 0.0], [0.0, 1.0]]))


def test_draw_positives_come_from_ranks_one_to_num_neighbors_never_the_image_itself():
    n = 40
    table = knn_table(global_descriptors(torch.randn(n, 8, 2, 2)), k=30)
    indices = torch.arange(n).repeat(50)
    positives = draw_positives(table, indices, num_neighbors=7, generator=torch.Generator().manual_seed(0))
    assert (positives != indices).all()
    allowed = table[indices, 1:8]
    assert (allowed == positives[:, None]).any(1).all()
    assert len({(i, p) for i, p in zip(indices.tolist(), positives.tolist())}) > 5 * n  # several ranks drawn


def test_cached_knn_table_is_computed_once_and_checked(tmp_path):
    features = torch.randn(12, 4, 3, 3)
    calls = []

    def descriptors():
        calls.append(1)
        return global_descriptors(features)

    first = cached_knn_table(tmp_path / "knn.npy", 12, descriptors, k=30)
    second = cached_knn_table(tmp_path / "knn.npy", 12, descriptors, k=30)
    assert first.shape == (12, 12) and len(calls) == 1
    torch.testing.assert_close(first, second)
    with pytest.raises(ValueError, match="delete it"):
        cached_knn_table(tmp_path / "knn.npy", 13, descriptors)


@pytest.mark.parametrize("size", [2, 3, 5, 16])
def test_derangement_is_a_permutation_without_fixed_points(size):
    generator = torch.Generator().manual_seed(size)
    seen = set()
    for _ in range(200):
        sigma = derangement(size, generator)
        assert sorted(sigma.tolist()) == list(range(size))
        assert (sigma != torch.arange(size)).all()
        seen.add(tuple(sigma.tolist()))
    assert len(seen) >= {2: 1, 3: 2, 5: 10, 16: 100}[size]  # random, not one fixed shift


def test_derangement_needs_two_images():
    with pytest.raises(ValueError, match="at least 2"):
        derangement(1)


# ----------------------------------------------------------------------------- head


def test_head_sums_a_linear_and_a_nonlinear_branch_each_with_its_own_dropout():
    head = StegoHead(in_channels=6, code_dim=70).eval()
    dropouts = [m for m in head.modules() if isinstance(m, torch.nn.Dropout2d)]
    assert len(dropouts) == 3 and all(m.p == 0.1 for m in dropouts)
    features = torch.randn(2, 6, 4, 5)
    codes = head(features)
    assert codes.shape == (2, 70, 4, 5)
    torch.testing.assert_close(codes, head.linear(features) + head.nonlinear(features))
    signal, same_codes = head(features, with_signal=True)
    torch.testing.assert_close(signal, features)  # eval mode: no dropout
    torch.testing.assert_close(same_codes, codes)


def test_head_dropout_zeroes_whole_channels_in_training():
    head = StegoHead(in_channels=64, code_dim=8, dropout=0.5).train()
    torch.manual_seed(0)
    signal, _ = head(torch.ones(3, 64, 4, 4), with_signal=True)
    per_channel = signal.flatten(2)
    assert ((per_channel == 0).all(-1) | (per_channel == 2.0).all(-1)).all()  # dropped or scaled by 1/(1-p)
    assert (per_channel == 0).all(-1).any()


def test_head_rejects_features_of_the_wrong_width():
    with pytest.raises(ValueError, match="B×6×h×w"):
        StegoHead(6)(torch.zeros(1, 5, 2, 2))


# ----------------------------------------------------------------------------- configurations


def test_official_configs_hold_the_published_values():
    coco_s = OFFICIAL_CONFIGS["cocostuff27", "dino_vits8"]
    assert (coco_s.lambda_rand, coco_s.b_rand, coco_s.lambda_knn, coco_s.b_knn, coco_s.lambda_self, coco_s.b_self) \
        == (0.63, 0.66, 0.25, 0.02, 0.67, 0.08)
    coco_b = OFFICIAL_CONFIGS["cocostuff27", "dino_vitb8"]
    assert (coco_b.lambda_knn, coco_b.b_knn, coco_b.lambda_self, coco_b.b_self, coco_b.b_rand) == (1.0, 0.2, 0.1, 0.12, 1.0)
    assert OFFICIAL_CONFIGS["cityscapes27", "dino_vitb8"].lambda_self == 1.0
    assert sorted(OFFICIAL_CONFIGS) == [("cityscapes27", "dino_vitb8"), ("cocostuff27", "dino_vitb8"),
                                        ("cocostuff27", "dino_vits8")]  # no Potsdam: no loader for its .mat tiles
    for config in OFFICIAL_CONFIGS.values():
        assert (config.code_dim, config.lr, config.probe_lr, config.feature_samples, config.neg_samples,
                config.num_neighbors) == (70, 5e-4, 5e-3, 11, 5, 7)


def test_stego_config_overrides_and_errors():
    assert stego_config("cocostuff27", "dino_vits16").b_rand == 0.66  # ViT-S/8 block, backbone replaced
    assert stego_config("toy", steps=7).steps == 7
    with pytest.raises(ValueError, match="no STEGO config"):
        stego_config("ade20k")
    with pytest.raises(ValueError, match="batch_size"):
        stego_config("toy", batch_size=1)
