"""Normalisation and joint (image, label) transforms."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
from PIL import Image

from course_lib.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    CenterCrop,
    Compose,
    RandomCrop,
    RandomHorizontalFlip,
    Resize,
    denormalize,
    normalize,
)


def position_pair(height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """An image whose pixels encode their (row, col) and a label holding the pixel's flat index."""
    rows = torch.arange(height, dtype=torch.float32)[:, None].expand(height, width) / height
    cols = torch.arange(width, dtype=torch.float32)[None, :].expand(height, width) / width
    image = torch.stack([rows, cols, torch.full_like(rows, 0.5)])
    label = torch.arange(height * width, dtype=torch.int64).reshape(height, width)
    return image, label


def test_normalize_matches_imagenet_statistics_and_inverts():
    mean_image = torch.tensor(IMAGENET_MEAN).view(3, 1, 1).expand(3, 4, 5)
    assert torch.allclose(normalize(mean_image), torch.zeros(3, 4, 5), atol=1e-6)
    one = normalize(torch.ones(3, 2, 2))
    assert torch.allclose(one[:, 0, 0], (1 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD))
    batch = torch.rand(2, 3, 6, 7)
    assert torch.allclose(denormalize(normalize(batch)), batch, atol=1e-6)
    assert torch.allclose(normalize(batch)[1], normalize(batch[1]))


def test_normalize_rejects_wrong_inputs():
    with pytest.raises(ValueError, match="3×H×W"):
        normalize(torch.rand(4, 8, 8))
    with pytest.raises(TypeError, match="uint8"):
        normalize(torch.zeros(3, 8, 8, dtype=torch.uint8))


def test_resize_short_side_label_matches_pil_nearest():
    image, label = position_pair(24, 40)
    label = label % 251  # fits a uint8 PIL image
    resized_image, resized_label = Resize(12)(image, label)
    assert resized_image.shape == (3, 12, 20) and resized_label.shape == (12, 20)
    assert resized_label.dtype == torch.int64
    pil = Image.fromarray(label.numpy().astype(np.uint8)).resize((20, 12), Image.NEAREST)
    np.testing.assert_array_equal(resized_label.numpy(), np.asarray(pil))
    # bilinear image: a smooth ramp stays a ramp within a small tolerance of torchvision's antialiased resize
    reference = TF.resize(image, [12, 20], interpolation=TF.InterpolationMode.BILINEAR, antialias=True)
    assert torch.allclose(resized_image, reference, atol=1e-5)


def test_resize_keeps_aspect_on_portrait_images_and_accepts_pairs():
    image, label = position_pair(40, 30)
    assert Resize(15)(image, label)[0].shape == (3, 20, 15)
    assert Resize((7, 9))(image, label)[1].shape == (7, 9)


def test_label_ignore_values_survive_resize():
    label = torch.full((10, 10), -1, dtype=torch.int64)
    label[:5] = 919
    _, resized = Resize(20)(torch.rand(3, 10, 10), label)
    assert set(resized.unique().tolist()) == {-1, 919}


@pytest.mark.parametrize("height, width, size", [(25, 33, (12, 16)), (24, 32, (10, 10)), (9, 9, (4, 4))])
def test_center_crop_matches_torchvision(height, width, size):
    image, label = position_pair(height, width)
    cropped_image, cropped_label = CenterCrop(size)(image, label)
    assert torch.equal(cropped_image, TF.center_crop(image, list(size)))
    assert torch.equal(cropped_label, TF.center_crop(label[None], list(size))[0])


def test_random_crop_keeps_image_and_label_aligned_and_is_reproducible():
    image, label = position_pair(20, 30)
    crops = [RandomCrop(8, generator=torch.Generator().manual_seed(s))(image, label) for s in (1, 1, 2)]
    for cropped_image, cropped_label in crops:
        top, left = divmod(int(cropped_label[0, 0]), 30)
        assert torch.equal(cropped_label, label[top : top + 8, left : left + 8])
        assert torch.equal(cropped_image, image[:, top : top + 8, left : left + 8])
    assert torch.equal(crops[0][1], crops[1][1])


def test_crop_larger_than_image_is_a_clear_error():
    image, label = position_pair(10, 10)
    with pytest.raises(ValueError, match="resize"):
        RandomCrop(12)(image, label)
    with pytest.raises(ValueError, match="resize"):
        CenterCrop(12)(image, label)


def test_horizontal_flip_flips_both_or_neither():
    image, label = position_pair(6, 8)
    flipped_image, flipped_label = RandomHorizontalFlip(p=1.0)(image, label)
    assert torch.equal(flipped_label, label.flip(-1)) and torch.equal(flipped_image, image.flip(-1))
    same_image, same_label = RandomHorizontalFlip(p=0.0)(image, label)
    assert torch.equal(same_label, label) and torch.equal(same_image, image)


def test_mismatched_pair_is_refused():
    with pytest.raises(ValueError, match="does not match"):
        Resize(8)(torch.rand(3, 10, 12), torch.zeros(10, 11, dtype=torch.int64))


def test_compose_applies_in_order():
    image, label = position_pair(30, 40)
    out_image, out_label = Compose([Resize(20), CenterCrop(16), RandomHorizontalFlip(p=1.0)])(image, label)
    expected_image, expected_label = CenterCrop(16)(*Resize(20)(image, label))
    assert torch.equal(out_label, expected_label.flip(-1)) and torch.equal(out_image, expected_image.flip(-1))
