"""The semi-supervised protocol's full recipe against LUSSeg/ImageNetSegModel (every value cites its file and line)."""
import pytest
import torch
import torch.nn.functional as F

from course_lib.evaluation.protocols import (SEMI_SUPERVISED_PRESETS, SemiSupervisedConfig, SemiSupervisedNet, _loss,
                                             backbone_layers, layer_decay_groups, layer_id, semi_supervised_config,
                                             semi_supervised_finetune, warmup_cosine_lr)
from course_lib.models.resnet import build_resnet
from course_lib.models.vit import VisionTransformer

pytestmark = pytest.mark.usefixtures("one_thread")


def test_full_recipe_pins_the_readme_values():
    vit, resnet, toy = (SEMI_SUPERVISED_PRESETS[k] for k in ("vit", "resnet", "toy"))
    # README.md:14-25: --batch_size 32 on 8 GPUs, --accum_iter 1, --epochs 100, --blr 5e-4, --layer_decay 0.50,
    # --weight_decay 0.05; main_segfinetune.py:309-310 lr = blr * 256 / 256
    assert (vit.mode, vit.epochs, vit.batch_size, vit.blr, vit.absolute_lr) == ("finetune", 100, 256, 5e-4, 5e-4)
    assert (vit.layer_decay, vit.weight_decay) == (0.50, 0.05)
    assert (vit.warmup_epochs, vit.min_lr) == (5, 1e-6)                   # main_segfinetune.py:125-134
    assert (vit.crop_size, vit.crop_scale) == (224, (0.14, 1.0))          # util/datasets.py:41-44
    assert (vit.loss_upsample, vit.head_upsample) == (2, 1)               # engine_segfinetune.py:61-64
    assert (vit.eval_short_side, vit.max_res) == (256, 1000)              # util/datasets.py:56; main_segfinetune.py:61-65
    assert vit.fresh_final_norm                                           # models/models_vit.py:31-32
    # MODEL_ZOO.md, PASS ResNet-50 D32: --layer_decay 0.4 --weight_decay 0.0005; models_resnet.py:272 ×2 in forward
    assert (resnet.layer_decay, resnet.weight_decay, resnet.head_upsample, resnet.epochs) == (0.4, 5e-4, 2, 100)
    assert (toy.mode, toy.epochs, toy.lr) == ("head", 30, 5e-3)           # the head-only toy variant
    assert semi_supervised_config("toy") is toy
    assert semi_supervised_config("full", build_resnet("resnet18")) is resnet
    assert semi_supervised_config("full", VisionTransformer(16, 32, 2, 2)) is vit


def test_layers_are_imagenetsegmodels():
    resnet = build_resnet("resnet50")                                     # models_resnet.py:164: Σ blocks + 1
    assert backbone_layers(resnet) == 3 + 4 + 6 + 3 + 1
    assert [layer_id(resnet, n) for n in ("conv1.weight", "bn1.bias", "layer1.0.conv1.weight",
                                          "layer3.2.conv1.weight", "layer4.2.bn3.weight")] == [0, 0, 1, 3 + 4 + 2 + 1, 16]
    vit = VisionTransformer(16, 32, 12, 2)                                # models_vit.py:29 and :108-115
    assert backbone_layers(vit) == 13
    assert [layer_id(vit, n) for n in ("cls_token", "pos_embed", "patch_embed.proj.weight", "blocks.0.norm1.weight",
                                       "blocks.11.mlp.fc2.bias", "norm.weight")] == [0, 0, 0, 1, 12, 13]


def test_layer_decay_groups_scale_lr_and_skip_weight_decay_on_1d_parameters():
    net = SemiSupervisedNet(build_resnet("resnet18"), 512, 51)
    groups = layer_decay_groups(net, weight_decay=0.05, layer_decay=0.5)  # util/lr_decay.py:30-43
    by_param = {id(p): g for g in groups for p in g["params"]}
    conv1, bn1, head = net.backbone.conv1.weight, net.backbone.bn1.weight, net.head.weight
    assert by_param[id(conv1)]["lr_scale"] == 0.5 ** 9 and by_param[id(conv1)]["weight_decay"] == 0.05
    assert by_param[id(bn1)]["weight_decay"] == 0.0 and by_param[id(net.head.bias)]["weight_decay"] == 0.0
    assert by_param[id(head)]["lr_scale"] == 1.0
    assert sum(len(g["params"]) for g in groups) == len(list(net.parameters()))
    vit_net = SemiSupervisedNet(VisionTransformer(16, 32, 2, 2), 32, 3)
    vit_groups = {id(p): g for g in layer_decay_groups(vit_net, 0.05, 0.5) for p in g["params"]}
    assert vit_groups[id(vit_net.backbone.pos_embed)]["weight_decay"] == 0.0   # timm's no_weight_decay


def test_learning_rate_warms_up_then_follows_a_half_cosine():
    config = SEMI_SUPERVISED_PRESETS["vit"]                                # util/lr_sched.py:10-17
    assert warmup_cosine_lr(config, 0) == 0 and warmup_cosine_lr(config, 2.5) == pytest.approx(2.5e-4)
    assert warmup_cosine_lr(config, 5) == pytest.approx(5e-4)
    assert warmup_cosine_lr(config, 52.5) == pytest.approx((5e-4 + 1e-6) / 2)
    assert warmup_cosine_lr(config, 100) == pytest.approx(1e-6)


def test_loss_upsamples_the_logits_twice_and_resizes_the_labels_nearest():
    torch.manual_seed(0)
    logits, labels = torch.randn(2, 3, 4, 5), torch.randint(-1, 3, (2, 16, 20))
    up = F.interpolate(logits, scale_factor=2, mode="bilinear", align_corners=False)     # engine_segfinetune.py:61-64
    targets = F.interpolate(labels[:, None].double(), size=(8, 10), mode="nearest")[:, 0].long()  # :65-68
    assert _loss(logits, labels, 2).item() == pytest.approx(F.cross_entropy(up, targets, ignore_index=-1).item())
    assert _loss(logits, torch.full((2, 16, 20), -1), 2).item() == 0.0


class _Labelled(torch.utils.data.Dataset):
    def __len__(self):
        return 6

    def __getitem__(self, index):
        generator = torch.Generator().manual_seed(index)
        return {"image": torch.rand(3, 48, 56, generator=generator),
                "label": torch.randint(-1, 3, (48, 56), generator=generator)}


def test_finetune_trains_the_whole_network_and_predicts_at_full_resolution():
    backbone = build_resnet("toy_resnet")
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    config = SemiSupervisedConfig(epochs=1, batch_size=4, crop_size=32, head_upsample=2, layer_decay=0.4)
    net = semi_supervised_finetune(backbone, _Labelled(), 3, config, device="cpu")
    assert len(net.loss_history) == 2 and all(torch.isfinite(torch.tensor(net.loss_history)))
    assert not torch.equal(before["layer1.0.conv1.weight"], net.backbone.state_dict()["layer1.0.conv1.weight"])
    assert net.predict(torch.rand(2, 3, 48, 56), short_side=32).shape == (2, 48, 56)
    vit = VisionTransformer(8, 32, 2, 2)
    torch.nn.init.constant_(vit.norm.weight, 3.0)
    semi_supervised_finetune(vit, _Labelled(), 3, SemiSupervisedConfig(epochs=1, batch_size=6, crop_size=32),
                             device="cpu", max_steps=0)
    assert (vit.norm.weight == 1).all()                                   # a fresh final norm (models_vit.py:31-32)
    with pytest.raises(ValueError, match="mode='finetune'"):
        semi_supervised_finetune(build_resnet("toy_resnet"), _Labelled(), 3, SEMI_SUPERVISED_PRESETS["toy"])
