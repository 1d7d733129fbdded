"""PASS pixel-to-pixel alignment and deep-to-shallow supervision: sampling geometry, losses."""
import math

import pytest
import torch
import torch.nn.functional as F

from course_lib.luss.d2s import ShallowHead, deep_to_shallow_loss
from course_lib.luss.multicrop import CropSpec, MultiCropDataset, MultiCropWithBoxes, crop_resize_flip
from course_lib.luss.p2p import PixelToPixelHead, overlap_grids, pixel_contrast_loss, pixel_to_pixel_loss, sample_at
from course_lib.ssl.dino import cross_image_info_nce


pytestmark = pytest.mark.usefixtures("one_thread")


def smooth_image(height=60, width=80):
    """A smooth 3×H×W image (slow sinusoids): bilinear resampling barely changes it."""
    y, x = torch.meshgrid(torch.arange(height) + 0.5, torch.arange(width) + 0.5, indexing="ij")
    return torch.stack([torch.sin(x / 9), torch.cos(y / 7), torch.sin((x + y) / 11)])


def source_samples(image, xs, ys):
    """The image sampled (bilinear) at source pixel coordinates xs (G), ys (G) → 3×G×G."""
    height, width = image.shape[-2:]
    grid = torch.stack([(2 * xs / width - 1)[None, :].expand(len(ys), -1),
                        (2 * ys / height - 1)[:, None].expand(-1, len(xs))], dim=-1)
    return F.grid_sample(image[None], grid[None], align_corners=False)[0]


def test_grids_span_the_overlap_in_each_crops_coordinates():
    boxes_a = torch.tensor([[10.0, 20.0, 40.0, 30.0, 0.0]])
    boxes_b = torch.tensor([[30.0, 10.0, 40.0, 30.0, 0.0]])  # overlap: x 30..50, y 20..40
    grid_a, grid_b, overlap = overlap_grids(boxes_a, boxes_b, grid_size=7)
    assert grid_a.shape == (1, 7, 7, 2) and bool(overlap[0])
    # crop a: x 30..50 of 10..50 → u 0.5..1 → grid 0..1; y 20..40 of 20..50 → v 0..2/3 → grid -1..1/3
    assert grid_a[0, 0, 0].tolist() == pytest.approx([0.0, -1.0])
    assert grid_a[0, -1, -1].tolist() == pytest.approx([1.0, 1 / 3])
    assert grid_b[0, 0, 0].tolist() == pytest.approx([-1.0, -1 / 3])  # y 20 of 10..40 → v 1/3
    assert grid_b[0, -1, -1].tolist() == pytest.approx([0.0, 1.0])


@pytest.mark.parametrize("flip_a, flip_b", [(0, 0), (1, 0), (0, 1), (1, 1)])
def test_both_crops_see_the_same_source_pixels(flip_a, flip_b):
    image = smooth_image()
    boxes = torch.tensor([[4.0, 6.0, 48.0, 40.0, flip_a], [22.0, 14.0, 52.0, 44.0, flip_b]])
    crops = [crop_resize_flip(image, box, 64)[None] for box in boxes]
    grid_a, grid_b, overlap = overlap_grids(boxes[:1], boxes[1:], grid_size=7)
    samples_a, samples_b = sample_at(crops[0], grid_a)[0], sample_at(crops[1], grid_b)[0]
    xs, ys = torch.linspace(22, 52, 7), torch.linspace(14, 46, 7)
    expected = source_samples(image, xs, ys)
    inner = (slice(None), slice(1, -1), slice(1, -1))  # the outer points lie on a crop border (half a pixel off)
    assert bool(overlap[0])
    assert torch.allclose(samples_a[inner], expected[inner], atol=0.02)
    assert torch.allclose(samples_b[inner], expected[inner], atol=0.02)
    if flip_a != flip_b:  # a wrong flip would read mirrored columns
        assert not torch.allclose(samples_a[inner], samples_b.flip(-1)[inner], atol=0.02)


def test_non_overlapping_crops_contribute_nothing():
    boxes_a = torch.tensor([[0.0, 0.0, 10.0, 10.0, 0.0], [0.0, 0.0, 10.0, 10.0, 0.0]])
    boxes_b = torch.tensor([[10.0, 0.0, 10.0, 10.0, 0.0], [5.0, 5.0, 10.0, 10.0, 1.0]])  # touching / overlapping
    *_, overlap = overlap_grids(boxes_a, boxes_b)
    assert overlap.tolist() == [False, True]
    torch.manual_seed(0)
    p_a, p_b, z_a, z_b = (torch.randn(2, 8, 7, 7, requires_grad=True) for _ in range(4))
    only_second = pixel_to_pixel_loss(p_a, p_b, z_a, z_b, overlap)
    assert only_second.item() == pytest.approx(pixel_to_pixel_loss(p_a[1:], p_b[1:], z_a[1:], z_b[1:],
                                                                   overlap[1:]).item())
    none = pixel_to_pixel_loss(p_a, p_b, z_a, z_b, torch.tensor([False, False]))
    none.backward()
    assert none.item() == 0 and not torch.isnan(p_a.grad).any() and p_a.grad.abs().sum() == 0


def test_p2p_loss_is_a_symmetric_negative_cosine_against_stopped_targets():
    torch.manual_seed(0)
    z_a, z_b = torch.randn(3, 4, 7, 7, requires_grad=True), torch.randn(3, 4, 7, 7, requires_grad=True)
    overlap = torch.ones(3, dtype=torch.bool)
    perfect = pixel_to_pixel_loss(2 * z_b.detach(), 3 * z_a.detach(), z_a, z_b, overlap)
    assert perfect.item() == pytest.approx(-1.0)
    p_a, p_b = torch.randn(3, 4, 7, 7, requires_grad=True), torch.randn(3, 4, 7, 7, requires_grad=True)
    loss = pixel_to_pixel_loss(p_a, p_b, z_a, z_b, overlap)
    assert loss.item() == pytest.approx(pixel_to_pixel_loss(p_b, p_a, z_b, z_a, overlap).item())
    loss.backward()
    assert z_a.grad is None and z_b.grad is None and p_a.grad is not None  # stop-gradient on the targets


def test_cross_image_info_nce_ignores_same_image_rows():
    anchors = F.normalize(torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]), dim=1)
    images = torch.tensor([0, 0, 1])
    # rows 0 and 1 are identical and from one image: neither is the other's negative, so each only competes
    # with image 1's row (cosine 0 at τ = 0.1); row 2 competes with both rows of image 0
    loss = cross_image_info_nce(anchors, anchors, images, temperature=0.1, n_samples=None)
    expected = (2 * math.log(1 + math.exp(-10.0)) + math.log(1 + 2 * math.exp(-10.0))) / 3
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    mixed = cross_image_info_nce(anchors, anchors, torch.tensor([0, 1, 2]), temperature=0.1, n_samples=None)
    assert mixed.item() == pytest.approx(2 * math.log(2) / 3, abs=1e-3)  # rows 0 and 1: a coin toss


def test_pixel_contrast_loss_rewards_matching_points_and_skips_non_overlapping_pairs():
    torch.manual_seed(0)
    z = torch.randn(4, 16, 7, 7)
    matched = pixel_contrast_loss(z, z.clone(), torch.ones(4, dtype=torch.bool), temperature=0.1)
    shuffled = pixel_contrast_loss(z, z.roll(1, dims=-1), torch.ones(4, dtype=torch.bool), temperature=0.1)
    assert matched.item() < 0.5 < shuffled.item()
    overlap = torch.tensor([True, True, False, False])
    torch.manual_seed(1)
    partial = pixel_contrast_loss(z, z.roll(1, dims=0), overlap)
    torch.manual_seed(1)
    assert partial.item() == pytest.approx(pixel_contrast_loss(z[:2], z.roll(1, dims=0)[:2], overlap[:2]).item())
    z_a = torch.randn(4, 16, 7, 7, requires_grad=True)
    none = pixel_contrast_loss(z_a, z, torch.tensor([True, False, False, False]))
    none.backward()
    assert none.item() == 0 and z_a.grad.abs().sum() == 0  # one image has no negatives: nothing to learn


def test_pixel_head_shapes():
    head = PixelToPixelHead(16, 32, 8)
    features = torch.randn(2, 16, 5, 5)
    grids = overlap_grids(torch.tensor([[0.0, 0, 10, 10, 0]] * 2), torch.tensor([[3.0, 3, 10, 10, 1]] * 2))
    z_a, z_b, p_a, p_b = head(features, features, grids[0], grids[1])
    assert z_a.shape == z_b.shape == p_a.shape == p_b.shape == (2, 8, 7, 7)


def test_multicrop_dataset_returns_crops_boxes_and_grids():
    dataset = [{"image": torch.rand(3, 40, 50)} for _ in range(2)]
    crops = MultiCropDataset(dataset, MultiCropWithBoxes([CropSpec(32, 2, 0.3, 1.0), CropSpec(16, 3, 0.05, 0.2)]))
    torch.manual_seed(0)
    item = crops[0]
    assert [c.shape[-1] for c in item["crops"]] == [32, 32, 16, 16, 16]
    assert item["boxes"].shape == (5, 5) and item["grid_a"].shape == (7, 7, 2)
    x, y, w, h, flip = item["boxes"].T
    assert (x >= 0).all() and (y >= 0).all() and (x + w <= 50).all() and (y + h <= 40).all()
    assert set(flip.tolist()) <= {0.0, 1.0}


def test_deep_to_shallow_predicts_the_other_crops_codes():
    codes = [torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])]
    right = [torch.tensor([[0.0, 10.0]]), torch.tensor([[10.0, 0.0]])]  # crop 1's shallow → crop 0's code
    wrong = [right[1], right[0]]
    assert deep_to_shallow_loss(right, codes).item() < 1e-6 < deep_to_shallow_loss(wrong, codes).item()
    expected = -math.log(torch.softmax(torch.tensor([0.0, 10.0]) / 0.1, 0)[1].item())
    assert deep_to_shallow_loss(right, codes).item() == pytest.approx(expected, abs=1e-6)


def test_shallow_head_embeds_on_the_unit_sphere():
    head = ShallowHead(12, 32, 8)
    embeddings = head(torch.randn(4, 12, 6, 6))
    assert embeddings.shape == (4, 8)
    assert torch.allclose(embeddings.norm(dim=1), torch.ones(4), atol=1e-5)


def test_pixel_losses_are_float32_for_bf16_inputs_even_under_autocast():
    """A bf16 forward pass (autocast on CUDA) must not reach the losses' cosines, products and
    log-softmax: each returns float32 and equals the float32 computation of the same inputs."""
    from course_lib.luss.finetune import segmentation_loss

    generator = torch.Generator().manual_seed(0)
    z_a, z_b, p_a, p_b = (torch.randn(4, 8, 3, 3, generator=generator).bfloat16().requires_grad_() for _ in range(4))
    overlap = torch.tensor([True, True, False, True])
    shallow = [torch.randn(4, 6, generator=generator).bfloat16() for _ in range(2)]
    codes = [torch.softmax(torch.randn(4, 6, generator=generator), dim=1) for _ in range(2)]
    logits = torch.randn(2, 4, 5, 5, generator=generator).bfloat16()
    labels = torch.randint(-1, 4, (2, 10, 10), generator=generator)
    cases = {
        "p2p": lambda f: pixel_to_pixel_loss(f(p_a), f(p_b), f(z_a), f(z_b), overlap),
        "p2p_nce": lambda f: pixel_contrast_loss(f(z_a), f(z_b), overlap, n_samples=None),
        "d2s": lambda f: deep_to_shallow_loss([f(s) for s in shallow], codes),
        "segmentation": lambda f: segmentation_loss(f(logits), labels, 0.5),
    }
    for name, loss_of in cases.items():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mixed = loss_of(lambda t: t)
        assert mixed.dtype == torch.float32, name
        assert torch.equal(mixed, loss_of(lambda t: t.float())), name
    with torch.autocast("cpu", dtype=torch.bfloat16):
        pixel_contrast_loss(z_a, z_b, overlap, n_samples=None).backward()
    assert z_a.grad.dtype == torch.bfloat16 and torch.isfinite(z_a.grad.float()).all()
