"""PASS pre-training (losses, checkpoints, resume) and the LUSS command line on a handful of toy images."""
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from fake_datasets import make_imagenet_s

from course_lib.data import ToyWorld
from course_lib.data.folders import DatasetNotFoundError
from course_lib.data.label_png import read_imagenet_s_png
from course_lib.evaluation.imagenet_s import METRIC_KEYS
from course_lib.luss.multicrop import CropSpec
from course_lib.luss.pipeline import apply_overrides, main, settings_for
from course_lib.luss.pretrain import PASSModel, PretrainConfig, load_pass_model, pass_losses, pretrain
from course_lib.luss.training import build_optimizer, lars_adapt_


pytestmark = pytest.mark.usefixtures("one_thread")


TINY = PretrainConfig(arch="toy_resnet", hidden_mlp=32, feat_dim=16, nmb_prototypes=6,
                      crops=[CropSpec(32, 2, 0.3, 1.0), CropSpec(16, 2, 0.05, 0.3)], blur_sigma=(0.1, 0.5),
                      queue_length=0, epochs=2, batch_size=4, base_lr=0.1, freeze_prototypes_niters=1, seed=0)


def test_pass_losses_combine_swav_d2s_and_p2p():
    torch.manual_seed(0)
    model = PASSModel.from_config(TINY)
    crops = [torch.randn(4, 3, 32, 32) for _ in range(2)] + [torch.randn(4, 3, 16, 16) for _ in range(2)]
    grid = torch.rand(4, 7, 7, 2) * 2 - 1
    outputs = model(crops, grid, grid)
    assert len(outputs["scores"]) == 4 and outputs["scores"][0].shape == (4, 6)
    losses = pass_losses(outputs, model.prototypes, torch.ones(4, dtype=torch.bool), TINY)
    assert all(torch.isfinite(v) for v in losses.values())
    assert losses["loss"].item() == pytest.approx((losses["swav"] + losses["d2s"]).item() / 2 + losses["p2p"].item())
    losses["loss"].backward()
    assert model.shallow_head.image_mlp[0].weight.grad is not None
    assert model.pixel_head.predictor[0].weight.grad is not None


def test_optional_pixel_contrast_term_adds_to_the_total():
    torch.manual_seed(0)
    config = PretrainConfig(**{**TINY.__dict__, "p2p_contrast_weight": 0.5})
    model = PASSModel.from_config(config)
    crops = [torch.randn(4, 3, 32, 32) for _ in range(2)] + [torch.randn(4, 3, 16, 16) for _ in range(2)]
    grid = torch.rand(4, 7, 7, 2) * 2 - 1
    losses = pass_losses(model(crops, grid, grid), model.prototypes, torch.ones(4, dtype=torch.bool), config)
    base = (losses["swav"] + losses["d2s"]) / 2 + losses["p2p"]
    assert losses["p2p_nce"].item() > 0
    assert losses["loss"].item() == pytest.approx((base + 0.5 * losses["p2p_nce"]).item())


@pytest.mark.parametrize("name", ["lars", "sgd", "adamw"])
def test_optimizers_train_and_unknown_names_are_refused(name):
    weight = torch.nn.Parameter(torch.ones(3))
    optimizer, lars_decay = build_optimizer([weight], name, lr=0.1, weight_decay=1e-4)
    assert (lars_decay is not None) == (name == "lars")
    (weight ** 2).sum().backward()
    if lars_decay is not None:
        lars_adapt_([weight], lars_decay)
    optimizer.step()
    assert (weight < 1).all()
    with pytest.raises(ValueError, match="unknown optimizer"):
        build_optimizer([weight], "adam_typo", lr=0.1, weight_decay=0.0)


def test_pretrain_checkpoints_and_resumes(tmp_path):
    images = ToyWorld("objects", "train", n_images=8, size=64)
    pretrain(TINY, images, tmp_path, device="cpu", max_steps=1)  # interrupted in its first epoch
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    assert state["epoch"] == 0 and len(state["history"]) == 1
    pretrain(TINY, images, tmp_path, device="cpu")  # resumes: redoes epoch 1, then epoch 2
    model, config, history = load_pass_model(tmp_path / "checkpoint.pt")
    assert config == TINY and len(history) == 1 + 2 * 2 and [h["epoch"] for h in history[1:]] == [0, 0, 1, 1]
    assert all(np.isfinite(h["loss"]) for h in history)
    before = model.state_dict()
    pretrain(TINY, images, tmp_path, device="cpu")  # finished: nothing more to do
    after, _, again = load_pass_model(tmp_path / "checkpoint.pt")
    assert len(again) == len(history) and all(torch.equal(before[k], v) for k, v in after.state_dict().items())


def test_presets_follow_the_paper():
    s50, s300, s919 = (settings_for(f"imagenet_s{n}") for n in (50, 300, 919))
    assert (s50.pretrain.arch, s50.pretrain.epochs, s50.tau) == ("resnet18", 200, 0.41)
    assert [(c.size, c.number) for c in s50.pretrain.crops] == [(224, 2), (96, 6)]
    assert (s300.pretrain.arch, s300.pretrain.epochs, s300.tau, s919.tau) == ("resnet50", 100, 0.40, 0.37)
    assert s50.attention.base_lr == 6.0 and s300.attention.base_lr == 0.6 and s919.finetune.num_classes == 919
    for preset in (s50, s300, s919):  # PASS itself: LARS, SwAV's colour jitter, no contrastive P2P term
        assert (preset.pretrain.optimizer, preset.pretrain.jitter_p, preset.pretrain.recolour_p,
                preset.pretrain.p2p_contrast_weight) == ("lars", 0.8, 0.0, 0.0)
    with pytest.raises(ValueError, match="unknown setting"):
        apply_overrides(settings_for("toy"), ["pretrain.no_such_thing=1"])


def test_full_profile_without_data_names_the_fetch_command(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_DATA", str(tmp_path / "nothing"))
    with pytest.raises(DatasetNotFoundError, match="python data_scripts/get_imagenet_s.py"):
        main(["pretrain", "--dataset", "imagenet_s50", "--work-dir", str(tmp_path / "work")])
    assert not (tmp_path / "work" / "config.json").exists()


TINY_PIPELINE = ["--set", "toy_images=[16,8]", "--set", "pretrain.batch_size=4", "--set", "pretrain.epochs=1",
                 "--set", "attention.batch_size=4", "--set", "attention.epochs=1", "--set", "attention.queue_length=8",
                 "--set", "finetune.batch_size=4", "--set", "finetune.epochs=1", "--set", "kmeans_restarts=2",
                 "--device", "cpu"]


def test_tiny_pipeline_end_to_end(tmp_path, capsys):
    work = tmp_path / "work"
    assert main(["pipeline", "--profile", "toy", "--work-dir", str(work), *TINY_PIPELINE]) == 0
    out = capsys.readouterr().out
    assert "fine-tuning - pseudo-labels" in out and "masks*" in out
    summary = json.loads((work / "metrics.json").read_text())
    assert set(summary["training"]) == {"pretrain", "attention", "finetune"} and len(summary["seconds"]) == 6
    assert json.loads((work / "config.json").read_text())["settings"]["toy_images"] == [16, 8]
    for key in ("finetuned", "pseudo_labels", "baseline_no_attention", "constant_other"):
        assert set(summary[key]) == set(METRIC_KEYS)
    assert set(summary["mask_mIoU"]) == {"finetuned", "pseudo_labels", "baseline_no_attention"}
    assert all(0 <= value <= 100 for value in summary["mask_mIoU"].values())
    tau = json.loads((work / "labels" / "tau.json").read_text())
    assert tau["tau"] == tau["tau_sweep"] and len(tau["curve"]) == len(settings_for("toy").tau_grid)
    gt_files = sorted((work / "data" / "validation-segmentation").glob("*/*.png"))
    predictions = sorted((work / "predictions" / "validation").glob("*/*.png"))
    assert len(gt_files) == len(predictions) == 8
    assert read_imagenet_s_png(predictions[0]).shape == read_imagenet_s_png(gt_files[0]).shape
    assert len(list((work / "labels" / "train").glob("*/*.png"))) == 16
    # the evaluator's command line scores the written predictions exactly as the pipeline did
    out = work / "cli.json"
    subprocess.run([sys.executable, "-m", "course_lib.evaluation.imagenet_s", "evaluate",
                    "--predict-dir", str(work / "predictions" / "validation"),
                    "--gt-dir", str(work / "data" / "validation-segmentation"), "--num-classes", "10",
                    "--match", str(work / "predictions" / "validation_match.json"), "--json", str(out)],
                   check=True, capture_output=True)
    assert json.loads(out.read_text())["mIoU"] == pytest.approx(summary["finetuned"]["mIoU"])


def test_shipped_checkpoints_export_and_install(tmp_path, monkeypatch):
    from course_lib.luss import assets
    from course_lib.luss.attention import load_attention_model
    work = tmp_path / "work"
    for step in ("pretrain", "attention"):
        assert main([step, "--profile", "toy", "--work-dir", str(work), *TINY_PIPELINE]) == 0
    out = assets.export_toy_run(work, "python -m course_lib.luss pipeline --profile toy", tmp_path / "pass_toy.pt")
    record = json.loads(out.with_suffix(".json").read_text())
    assert record["command"].startswith("python -m course_lib.luss") and record["pretrain"]["epochs"] == 1
    shipped = torch.load(out, weights_only=False)
    assert set(shipped) == {"pretrain", "attention"} and "optimizer" not in shipped["pretrain"]
    monkeypatch.setattr(assets, "TOY_CHECKPOINT", out)
    paths = assets.install_toy_checkpoints(tmp_path / "installed")
    model, history = load_attention_model(paths["attention"])
    assert len(history) == len(shipped["attention"]["history"])
    assert model.attention.bias.shape[1] == model.backbone.out_channels


def test_imagenet_s_layout_end_to_end(tmp_path, capsys):
    """The full-scale path (ImageNetS folders under COURSE_DATA, short-side resizing, centre crops for the
    clustering, a fixed τ) on a fake ImageNet-S50 with a tiny network."""
    make_imagenet_s(tmp_path / "data", 50, "train", used_classes=range(1, 51), size=(72, 90))
    make_imagenet_s(tmp_path / "data", 50, "validation", used_classes=(1, 2, 3), per_class=2, size=(60, 70))
    tiny = ["pretrain.arch=toy_resnet", "pretrain.hidden_mlp=32", "pretrain.feat_dim=16",
            "pretrain.nmb_prototypes=60", "pretrain.crops=[[32,2,0.3,1.0],[16,2,0.05,0.3]]", "pretrain.epochs=1",
            "pretrain.batch_size=8", "pretrain.queue_length=0", "pretrain.workers=0", "attention.crops=[[32,2,0.3,1.0]]",
            "attention.epochs=1", "attention.batch_size=8", "attention.queue_length=16", "attention.workers=0",
            "finetune.crop_size=32", "finetune.epochs=1", "finetune.batch_size=8", "finetune.workers=0",
            "finetune.infer_short_side=48", "cluster_short_side=48", "cluster_crop=40", "label_short_side=48",
            "kmeans_restarts=1"]
    args = ["pipeline", "--dataset", "imagenet_s50", "--data-root", str(tmp_path / "data"),
            "--work-dir", str(tmp_path / "work"), "--device", "cpu"]
    assert main(args + [item for setting in tiny for item in ("--set", setting)]) == 0
    summary = json.loads((tmp_path / "work" / "metrics.json").read_text())
    saved = json.loads((tmp_path / "work" / "config.json").read_text())
    assert summary["tau"] == 0.41 and saved["settings"]["pretrain"]["arch"] == "toy_resnet"
    assert summary["constant_other"]["f_measure"] == 0
    predictions = sorted((tmp_path / "work" / "predictions" / "validation").glob("*/*.png"))
    assert len(predictions) == 6 and read_imagenet_s_png(predictions[0]).shape == (60, 70)  # full resolution
    assert len(list((tmp_path / "work" / "labels" / "train").glob("*/*.png"))) == 50


def test_the_three_training_steps_run_under_bf16_autocast_with_float32_losses():
    """The forward passes of pre-training, attention and fine-tuning under bf16 autocast (CPU here, as the
    training loop does on CUDA): bf16 scores, float32 codes and losses, and gradients back to the weights."""
    from course_lib.luss.attention import AttentionModel
    from course_lib.luss.finetune import SegmentationModel, segmentation_loss
    from course_lib.ssl.swav import SwAVQueue, swapped_prediction_loss, swav_codes

    torch.manual_seed(0)
    config = PretrainConfig(**{**TINY.__dict__, "p2p_contrast_weight": 1.0})
    model = PASSModel.from_config(config).train()
    crops = [torch.randn(4, 3, 32, 32) for _ in range(2)] + [torch.randn(4, 3, 16, 16) for _ in range(2)]
    grid = torch.rand(4, 7, 7, 2) * 2 - 1
    queue = SwAVQueue(2, 8, config.feat_dim)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        outputs = model(crops, grid, grid)
        losses = pass_losses(outputs, model.prototypes, torch.ones(4, dtype=torch.bool), config, queue)
    assert outputs["scores"][0].dtype == torch.bfloat16
    assert all(value.dtype == torch.float32 and torch.isfinite(value) for value in losses.values())
    losses["loss"].backward()
    assert torch.isfinite(model.backbone.conv1.weight.grad).all()
    attention = AttentionModel.from_pass_model(model).train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        embeddings, scores = attention([torch.randn(4, 3, 32, 32), torch.randn(4, 3, 32, 32)])
        codes = swav_codes(embeddings, scores, attention.prototypes, (0, 1), queue)
        loss = swapped_prediction_loss(scores, codes, (0, 1))
    assert codes[0].dtype == loss.dtype == torch.float32
    loss.backward()
    assert attention.attention.bias.grad is not None
    segmenter = SegmentationModel(model.backbone, 3).train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = segmentation_loss(segmenter(torch.randn(4, 3, 32, 32)), torch.randint(-1, 4, (4, 32, 32)), 0.5)
    assert loss.dtype == torch.float32
    loss.backward()
    assert torch.isfinite(segmenter.classifier.weight.grad).all()
