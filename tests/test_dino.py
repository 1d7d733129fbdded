"""DINO objective pieces and the toy-backbone trainer (tiny run + resume)."""
import json
import math

import pytest
import torch

from course_lib.models import load_backbone, toy_vit_path
from course_lib.ssl.dino import (
    DINOConfig,
    DINOHead,
    DINOLoss,
    MultiCrop,
    cosine_schedule,
    load_toy_vit,
    train_dino,
)


def test_dino_loss_matches_hand_computation():
    loss_fn = DINOLoss(out_dim=3, n_global=2, teacher_temp=0.5, student_temp=1.0, center_momentum=0.9)
    t1, t2 = torch.tensor([[1.0, 0.0, 0.0]]), torch.tensor([[0.0, 2.0, 0.0]])
    s = [torch.tensor([[0.0, 1.0, 0.0]]), torch.tensor([[1.0, 0.0, 0.0]]), torch.tensor([[0.0, 0.0, 1.0]])]
    p1, p2 = torch.softmax(t1 / 0.5, -1), torch.softmax(t2 / 0.5, -1)

    def ce(p, logits):
        return -(p * torch.log_softmax(logits, -1)).sum()

    # pairs (teacher view, student view) with different indices: (0,1) (0,2) (1,0) (1,2)
    expected = (ce(p1, s[1]) + ce(p1, s[2]) + ce(p2, s[0]) + ce(p2, s[2])) / 4
    assert loss_fn(s, [t1, t2]).item() == pytest.approx(expected.item(), rel=1e-6)
    # the centre moved towards the teacher's batch mean: 0.1 × mean([t1; t2])
    torch.testing.assert_close(loss_fn.center, 0.1 * torch.tensor([[0.5, 1.0, 0.0]]))


def test_centering_is_applied_to_the_teacher():
    loss_fn = DINOLoss(out_dim=2, teacher_temp=1.0, student_temp=1.0)
    loss_fn.center.fill_(0.0)
    loss_fn.center[0, 0] = 100.0  # a huge centre on class 0 flips the teacher's target to class 1
    teacher = [torch.tensor([[1.0, 0.0]])] * 2
    good = loss_fn([torch.tensor([[0.0, 5.0]])] * 2, teacher).item()
    loss_fn.center.fill_(0.0)
    loss_fn.center[0, 0] = 100.0
    bad = loss_fn([torch.tensor([[5.0, 0.0]])] * 2, teacher).item()
    assert good < bad


def test_head_last_layer_is_weight_normalised():
    head = DINOHead(8, 16, hidden_dim=12, bottleneck_dim=4)
    with torch.no_grad():
        head.last_layer.mul_(50.0)  # scaling the raw weights changes nothing
    out = head(torch.randn(5, 8))
    assert out.shape == (5, 16) and out.abs().max() <= 1.0 + 1e-5  # cosine logits


def test_multicrop_sizes():
    crops = MultiCrop(global_size=32, local_size=16, n_local=3)(torch.rand(3, 64, 64))
    assert [tuple(c.shape) for c in crops] == [(3, 32, 32)] * 2 + [(3, 16, 16)] * 3


def test_cosine_schedule_warmup_and_end():
    assert cosine_schedule(1.0, 0.0, 0, 100, warmup=10) == 0.0
    assert cosine_schedule(1.0, 0.0, 10, 100, warmup=10) == pytest.approx(1.0)
    assert cosine_schedule(1.0, 0.0, 55, 100, warmup=10) == pytest.approx(0.5)
    assert cosine_schedule(1.0, 0.0, 100, 100, warmup=10) == pytest.approx(0.0, abs=1e-12)
    assert math.isclose(cosine_schedule(0.99, 1.0, 0, 50), 0.99)


def test_tiny_training_run_resumes(tmp_path, capsys):
    config = DINOConfig(embed_dim=24, depth=1, num_heads=2, out_dim=32, n_train_images=8, image_size=64,
                        global_size=32, local_size=16, n_local=1, img_size=32, batch_size=4, epochs=1,
                        warmup_epochs=0)
    train_dino(config, tmp_path, device="cpu")
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1] and math.isfinite(log[0]["loss"])
    first = load_toy_vit(tmp_path / "toy_vit.pt")
    config.epochs = 2
    train_dino(config, tmp_path, device="cpu")
    assert "resumed from checkpoint.pt at epoch 1" in capsys.readouterr().out
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2]
    second = load_toy_vit(tmp_path / "toy_vit.pt")
    assert not torch.equal(first.norm.weight, second.norm.weight) or not torch.equal(
        first.blocks[0].attn.qkv.weight, second.blocks[0].attn.qkv.weight)


def test_shipped_toy_backbone_loads_offline():
    assert toy_vit_path().exists()
    assert toy_vit_path().stat().st_size < 5_000_000
    model = load_backbone("toy_vit")
    features = model.patch_features(torch.zeros(2, 3, 96, 96))
    assert features.shape == (2, model.embed_dim, 12, 12) and torch.isfinite(features).all()
    random = load_backbone("toy_vit", random_init=True)
    assert not torch.equal(random.pos_embed, model.pos_embed)


def ramp_view(image, box, size=8):
    from torchvision.transforms.v2 import functional as TF
    top, left, h, w, flip = [int(v) for v in box]
    crop = TF.resized_crop(image, top, left, h, w, [size, size], antialias=False)
    return crop.flip(-1) if flip else crop


@pytest.mark.parametrize("student_flip,teacher_flip", [(0, 0), (1, 0), (0, 1), (1, 1)])
def test_corresponding_grid_finds_the_same_image_location(student_flip, teacher_flip):
    from course_lib.ssl.dino import corresponding_grid
    ys, xs = torch.meshgrid(torch.arange(96.0), torch.arange(96.0), indexing="ij")
    image = torch.stack([xs, ys, torch.zeros_like(xs)])  # each pixel holds its own coordinates
    student = torch.tensor([[5.0, 30.0, 60.0, 50.0, student_flip]])
    teacher = torch.tensor([[20.0, 10.0, 70.0, 80.0, teacher_flip]])
    grid, valid = corresponding_grid(student, teacher, (8, 8))
    sampled = torch.nn.functional.grid_sample(ramp_view(image, teacher[0])[None], grid, align_corners=False,
                                              padding_mode="border")[0]
    expected = ramp_view(image, student[0])
    assert valid.sum() == 48  # student rows 0-1 (y < 20) lie above the teacher crop
    inner = valid[0] & (grid[0].abs() <= 1 - 1 / 8).all(-1)  # between the teacher's outer patch centres
    torch.testing.assert_close(sampled[:2, inner], expected[:2, inner], atol=1e-3, rtol=0)
    # within half a teacher patch of its border the target is the border patch's (clamped)
    assert (sampled[:2, valid[0]] - expected[:2, valid[0]]).abs().max() <= 70 / 8 / 2


def test_dense_loss_ignores_non_overlapping_crops():
    from course_lib.ssl.dino import DenseDINOLoss
    loss_fn = DenseDINOLoss(out_dim=4)
    student = [torch.randn(1, 4, 4, requires_grad=True) for _ in range(2)]
    teacher = [torch.randn(1, 4, 4) for _ in range(2)]
    apart = torch.tensor([[[0.0, 0.0, 20.0, 20.0, 0.0], [50.0, 50.0, 20.0, 20.0, 0.0]]])
    loss = loss_fn(student, teacher, apart)
    assert loss.item() == 0.0
    same = torch.tensor([[[0.0, 0.0, 20.0, 20.0, 0.0], [0.0, 0.0, 20.0, 20.0, 0.0]]])
    assert loss_fn(student, teacher, same).item() > 0


def test_native_scale_crops_keep_pixels_unresized():
    image = torch.randint(0, 256, (3, 96, 96), dtype=torch.uint8)
    crop = MultiCrop(global_size=64, local_size=32, n_local=1, jitter_p=0.0, grayscale_p=0.0, blur=False,
                     native_scale=True)
    views, boxes = crop.with_boxes(image)
    for view, (top, left, h, w, flip) in zip(views, boxes.long().tolist()):
        assert (h, w) == (64, 64)
        original = image[:, top:top + 64, left:left + 64]
        expected = original.flip(-1) if flip else original
        if not torch.equal(view, expected):  # only the second global view may be solarised (p 0.2)
            assert torch.equal(view, torch.where(expected >= 128, 255 - expected, expected))


def test_random_recolour_keeps_texture_and_drops_colour():
    from course_lib.data.transforms import RandomRecolour
    torch.manual_seed(0)
    grey = torch.rand(32, 32)
    red = torch.stack([grey, 0.2 * grey, 0.1 * grey]) * 255
    out = torch.stack([RandomRecolour(1.0)(red.round().to(torch.uint8)).float() for _ in range(20)])
    luminance = (out * torch.tensor([0.299, 0.587, 0.114])[:, None, None]).sum(1)       # 20×32×32
    # each recolouring is a monotone (or inverted) function of the input's grey levels …
    order = grey.flatten().argsort()
    steps = luminance.flatten(1)[:, order].diff(dim=1)
    monotone = ((steps >= -2).float().mean(1) > 0.95) | ((steps <= 2).float().mean(1) > 0.95)
    assert monotone.all()
    # … while the mean colour varies from one recolouring to the next
    assert out.mean((2, 3)).std(0).min() > 10
    assert torch.equal(RandomRecolour(0.0)(red.to(torch.uint8)), red.to(torch.uint8))


def test_patch_contrast_loss_rewards_matching_locations():
    from course_lib.ssl.dino import PatchContrastLoss
    torch.manual_seed(0)
    loss_fn = PatchContrastLoss(embed_dim=16, proj_dim=16, n_samples=10_000)
    with torch.no_grad():  # identity projector, so the tokens themselves are compared
        loss_fn.proj[0].weight.copy_(torch.eye(256, 16)); loss_fn.proj[0].bias.zero_()
        loss_fn.proj[2].weight.copy_(torch.eye(16, 256)); loss_fn.proj[2].bias.zero_()
        loss_fn.proj[1] = torch.nn.Identity()
    boxes = torch.tensor([[0.0, 0.0, 32.0, 32.0, 0.0], [0.0, 0.0, 32.0, 32.0, 0.0]]).expand(4, 2, 5)
    tokens = torch.randn(4, 16, 16)
    matched = loss_fn([tokens, tokens], boxes)
    shuffled = loss_fn([tokens, tokens[:, torch.randperm(16)]], boxes)
    assert matched < shuffled
    apart = torch.tensor([[0.0, 0.0, 16.0, 16.0, 0.0], [40.0, 40.0, 16.0, 16.0, 0.0]]).expand(4, 2, 5)
    assert loss_fn([tokens, tokens], apart).item() == 0.0
