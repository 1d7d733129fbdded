"""PASS's full presets against the official code (LUSSeg/PASS): P2P sampling, initialisation, the attention
step's BatchNorm, the inference cap. Every pinned value cites the official file and line."""
import numpy as np
import pytest
import torch
from torch import nn

from course_lib.data import ToyWorld
from course_lib.evaluation.protocols import capped_prediction
from course_lib.luss.attention import AttentionConfig, load_attention_model, train_attention
from course_lib.luss.finetune import FinetuneConfig, SegmentationModel, predict_dataset
from course_lib.luss.multicrop import CropSpec
from course_lib.luss.p2p import NON_OVERLAP_GRID, overlap_grids, pixel_to_pixel_loss, sample_at
from course_lib.luss.pipeline import settings_for
from course_lib.luss.pretrain import PASSModel, PretrainConfig, load_pass_model, pass_losses, pretrain
from course_lib.models.resnet import build_resnet

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = PretrainConfig(arch="toy_resnet", hidden_mlp=32, feat_dim=16, nmb_prototypes=6,
                      crops=[CropSpec(32, 2, 0.3, 1.0), CropSpec(16, 2, 0.05, 0.3)], blur_sigma=(0.1, 0.5),
                      queue_length=0, epochs=1, batch_size=4, base_lr=0.1, freeze_prototypes_niters=1, seed=0)


def test_full_presets_pin_the_official_values():
    for subset in (50, 300, 919):
        s = settings_for(f"imagenet_s{subset}")
        assert s.pretrain.p2p_padding == "zeros"       # src/resnet.py:472 (grid_sample's default padding)
        assert s.pretrain.conv_init == s.attention.conv_init == s.finetune.conv_init == "kaiming_fan_out"  # :354-363
        assert s.attention.train_backbone_bn is True    # main_pixel_attention.py:196 model.train()
        assert s.finetune.infer_max_res == 1000         # inference.py:53 --max_res default 1000
    assert NON_OVERLAP_GRID == -2.0                     # src/multicropdataset.py:217-218
    toy = settings_for("toy")                            # the toy preset keeps the course's first behaviour
    assert (toy.pretrain.p2p_padding, toy.pretrain.conv_init, toy.attention.train_backbone_bn,
            toy.attention.conv_init, toy.finetune.conv_init) == ("border", "torch", False, "torch", "torch")


def test_checkpoints_saved_before_the_settings_existed_keep_their_behaviour():
    saved = {k: v for k, v in TINY.__dict__.items() if k not in ("p2p_padding", "conv_init")}
    assert (PretrainConfig.from_dict(saved).p2p_padding, PretrainConfig.from_dict(saved).conv_init) == ("border", "torch")
    assert AttentionConfig.from_dict({}).train_backbone_bn is False and FinetuneConfig.from_dict({}).conv_init == "torch"


def test_p2p_grid_and_zero_padding_on_a_hand_computed_case():
    # crop a = (0, 0, 4, 4), crop b = (2, 0, 4, 4): overlap x 2..4, y 0..4; G = 2 points per side.
    # In a's coordinates (src/multicropdataset.py:164-213) x = {0.5, 1} → {0, 1}, y = {0, 1} → {-1, 1}.
    boxes_a, boxes_b = torch.tensor([[0., 0, 4, 4, 0]]), torch.tensor([[2., 0, 4, 4, 0]])
    grid_a, _, overlap = overlap_grids(boxes_a, boxes_b, grid_size=2)
    assert bool(overlap[0]) and torch.allclose(grid_a[0], torch.tensor([[[0., -1], [1, -1]], [[0, 1], [1, 1]]]))
    features = torch.tensor([[[[1., 2], [3, 4]]]])       # 1×1×2×2
    # align_corners=False: x=0 → column 0.5 (half of each column), x=1 → column 1.5 (half column 1, half
    # outside); y=-1 → row -0.5, y=1 → row 1.5. With zero padding the outside halves read 0.
    zeros = sample_at(features, grid_a, padding="zeros")[0, 0]
    assert torch.allclose(zeros, torch.tensor([[0.75, 0.5], [1.75, 1.0]]))
    border = sample_at(features, grid_a, padding="border")[0, 0]
    assert torch.allclose(border, torch.tensor([[1.5, 2.0], [3.5, 4.0]]))


def test_non_overlapping_pairs_count_with_cosine_zero_as_the_official_loss():
    boxes_a = torch.tensor([[0., 0, 4, 4, 0], [0, 0, 4, 4, 0]])
    boxes_b = torch.tensor([[0., 0, 4, 4, 1], [10, 10, 4, 4, 0]])   # the second pair does not overlap
    grid_a, grid_b, overlap = overlap_grids(boxes_a, boxes_b, grid_size=3, outside=NON_OVERLAP_GRID)
    assert overlap.tolist() == [True, False] and (grid_a[1] == -2).all() and (grid_b[1] == -2).all()
    features = torch.rand(2, 5, 4, 4) + 0.1
    z_a, z_b = sample_at(features, grid_a, "zeros"), sample_at(features, grid_b, "zeros")
    assert z_a[1].abs().sum() == 0 and z_b[1].abs().sum() == 0     # sampled outside the map
    p_a, p_b = z_b.clone(), z_a.clone()                              # perfect predictions where there is a target
    p_a[1], p_b[1] = 1.0, 1.0                                        # the predictor's output of a zero input
    official = pixel_to_pixel_loss(p_a, p_b, z_a, z_b)               # main_pretrain.py:340-348, a mean over all: (1 + 0) / 2
    assert official.item() == pytest.approx(-0.5, abs=1e-5)
    assert pixel_to_pixel_loss(p_a, p_b, z_a, z_b, overlap).item() == pytest.approx(-1.0, abs=1e-5)  # toy: skipped
    zeros_config = PretrainConfig(**{**TINY.__dict__, "p2p_padding": "zeros"})
    border_config = PretrainConfig(**{**TINY.__dict__, "p2p_padding": "border"})
    outputs = {"embeddings": [torch.nn.functional.normalize(torch.randn(2, 16), dim=1)] * 2,
               "scores": [torch.randn(2, 6)] * 2, "p2p": (z_a, z_b, p_a, p_b)}
    prototypes = PASSModel.from_config(TINY).prototypes
    assert pass_losses(outputs, prototypes, overlap, zeros_config)["p2p"].item() == pytest.approx(-0.5, abs=1e-5)
    assert pass_losses(outputs, prototypes, overlap, border_config)["p2p"].item() == pytest.approx(-1.0, abs=1e-5)


def _conv_std(conv: nn.Conv2d) -> float:
    return float(conv.weight.detach().std())


def test_every_conv_gets_kaiming_fan_out_as_the_official_resnet_py():
    torch.manual_seed(0)
    config = PretrainConfig(**{**TINY.__dict__, "hidden_mlp": 256})
    official = PASSModel.from_config(config)                       # conv_init "kaiming_fan_out" (src/resnet.py:354-358)
    default = PASSModel.from_config(PretrainConfig(**{**config.__dict__, "conv_init": "torch"}))
    first = official.pixel_head.projection[0]                      # Conv2d(128, 256, 1): fan-out 256
    assert _conv_std(first) == pytest.approx((2 / 256) ** 0.5, rel=0.05)
    assert _conv_std(default.pixel_head.projection[0]) == pytest.approx((1 / 128) ** 0.5 / 3 ** 0.5, rel=0.05)
    shallow = official.shallow_head.pixel_mlp[0]
    assert _conv_std(shallow) == pytest.approx((2 / shallow.out_channels) ** 0.5, rel=0.1)
    for module in official.modules():                              # BN weight 1, bias 0 (:359-363), momentum 0.1
        if isinstance(module, nn.BatchNorm2d):
            assert module.momentum == 0.1
            if module.affine:
                assert (module.weight == 1).all() and (module.bias == 0).all()   # zero_init_residual False (:169)


def _pretrained(tmp_path, images):
    pretrain(TINY, images, tmp_path / "pretrain", device="cpu", max_steps=1)
    return tmp_path / "pretrain" / "checkpoint.pt"


ATTENTION = AttentionConfig(crops=[CropSpec(32, 2, 0.3, 1.0)], blur_sigma=(0.1, 0.5), queue_length=0, epochs=1,
                            batch_size=4, base_lr=0.1, seed=0)


def test_attention_step_reestimates_the_backbone_bn_statistics_and_saves_them(tmp_path):
    images = ToyWorld("objects", "train", n_images=8, size=64)
    checkpoint = _pretrained(tmp_path, images)
    pretrained = load_pass_model(checkpoint)[0].backbone.state_dict()
    runs = {}
    for official in (True, False):
        config = AttentionConfig(**{**ATTENTION.__dict__, "train_backbone_bn": official})
        out = tmp_path / f"attention_{official}"
        train_attention(config, checkpoint, images, out, device="cpu", max_steps=2)
        runs[official] = torch.load(out / "checkpoint.pt", weights_only=True)["model"]
        model, _ = load_attention_model(out / "checkpoint.pt")   # what cluster and labels use
        assert not model.backbone.training
        assert torch.equal(model.backbone.bn1.running_mean, runs[official]["backbone.bn1.running_mean"])
    for name in ("bn1.running_mean", "bn1.running_var", "layer4.0.bn2.running_var"):
        assert not torch.allclose(runs[True][f"backbone.{name}"], pretrained[name])     # re-estimated (official)
        assert torch.equal(runs[False][f"backbone.{name}"], pretrained[name])           # toy: pre-training's
    for name, value in pretrained.items():                                              # the weights stay frozen
        if not name.endswith(("running_mean", "running_var", "num_batches_tracked")):
            assert torch.equal(runs[True][f"backbone.{name}"], value), name


def test_capped_prediction_follows_inference_py():
    torch.manual_seed(0)
    logits = torch.randn(1, 4, 3, 5)
    for size, rule, inner in (((15, 12), "height", (10, 8)), ((8, 20), "height", (10, 25)),
                              ((8, 20), "longer", (4, 10)), ((15, 12), "longer", (10, 8))):
        expected = torch.nn.functional.interpolate(logits, inner, mode="bilinear", align_corners=False).argmax(1, True)
        expected = torch.nn.functional.interpolate(expected.float(), size, mode="nearest")[:, 0].long()
        assert torch.equal(capped_prediction(logits, size, max_res=10, rule=rule), expected), (size, rule)
    plain = torch.nn.functional.interpolate(logits, (10, 10), mode="bilinear", align_corners=False).argmax(1)
    assert torch.equal(capped_prediction(logits, (10, 10), max_res=10), plain)   # H·W = max_res² is not above it
    with pytest.raises(ValueError, match="rule"):
        capped_prediction(logits, (10, 10), rule="shorter")


def test_predictions_of_images_above_1000_squared_pixels_go_through_the_cap():
    torch.manual_seed(0)
    model = SegmentationModel(build_resnet("toy_resnet"), num_classes=5).eval()
    image = torch.rand(3, 1100, 1000)
    dataset = [{"image": image, "label": torch.zeros(1100, 1000, dtype=torch.long), "meta": {"name": "a/b"}}]
    capped = predict_dataset(model, dataset, short_side=64, batch_size=1)[0]
    from course_lib.luss.data import resize_short_side
    from course_lib.data import normalize
    with torch.no_grad():
        logits = model(normalize(resize_short_side(image[None], 64)))
    expected = capped_prediction(logits, (1100, 1000), 1000, rule="height")[0].numpy()
    uncapped = torch.nn.functional.interpolate(logits, (1100, 1000), mode="bilinear", align_corners=False).argmax(1)[0]
    assert np.array_equal(capped, expected) and not np.array_equal(capped, uncapped.numpy())
    assert np.array_equal(predict_dataset(model, dataset, short_side=64, batch_size=1, max_res=None)[0], uncapped.numpy())
