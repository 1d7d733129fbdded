"""STEGO on an unlabelled folder (issue 18.2) and DINOv2 through STEGO's presets (18.3):
``python -m course_lib.stego.train --dataset folder:DIR`` end to end in the toy profile and as the full
profile's smoke run (random DINO / DINOv2 weights), then ``course_lib.segment`` on the run."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from course_lib.config import ConfigError
from course_lib.data.five_crop import five_crop
from course_lib.data.image_folder import UnlabelledImageFolder, folder_fingerprint
from course_lib.data.toyworld import ToyWorld
from course_lib.segment import segment_folder
from course_lib.stego.configs import OFFICIAL_CONFIGS, TOY_CONFIG, preset_note, stego_config
from course_lib.stego.evaluate import cluster_log_probs, probe_log_probs
from course_lib.stego.model import StegoModel
from course_lib.stego.train import main as train_main

from full_data_root import write_random_weights

pytestmark = pytest.mark.usefixtures("one_thread")


def write_photos(folder: Path, n: int, corrupt: bool = True) -> list[Path]:
    """``n`` toy-world scenes at varied sizes (JPEG and PNG, one greyscale), plus a corrupt ``broken.jpg``."""
    folder.mkdir(parents=True, exist_ok=True)
    world = ToyWorld("scenes", "train", n_images=n, size=96, seed=3)
    paths = []
    for i in range(n):
        image = Image.fromarray((world.render(i)[0] * 255).round().astype(np.uint8))
        image = image.resize((96 + 8 * (i % 4), 96 + 16 * (i % 3)))
        if i == 1:
            image = image.convert("L")
        path = folder / f"photo_{i:02d}.{'png' if i % 2 else 'JPG'}"
        image.save(path, format="PNG" if i % 2 else "JPEG")
        paths.append(path)
    if corrupt:
        (folder / "broken.jpg").write_bytes(b"not an image")
    return paths


@pytest.fixture
def env(tmp_path, monkeypatch):
    for name, value in (("COURSE_CACHE", str(tmp_path / "cache")), ("COURSE_DATA", str(tmp_path / "data")),
                        ("TQDM_DISABLE", "1")):
        monkeypatch.setenv(name, value)
    for name in ("COURSE_PROFILE", "COURSE_SMOKE"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def test_toy_folder_trains_without_labels_and_segments_with_cluster_names(env):
    photos = write_photos(env / "photos", 20)
    run = env / "run"
    metrics = train_main(["--dataset", f"folder:{env / 'photos'}", "--out", str(run), "--steps", "6",
                          "--batch-size", "4"])
    assert metrics["selection"].startswith("last step: no labels") and metrics["selected_step"] == 6
    assert metrics["classes"] is None and metrics["cluster_assignment"] is None
    assert not any("mIoU" in key or "accuracy" in key for key in metrics)
    assert [entry["file"] for entry in metrics["skipped"]] == ["broken.jpg"]
    assert (metrics["n_images"], metrics["n_train"], metrics["n_clusters"]) == (20, 20, 12)  # toy: no five-crop
    diagnostics = metrics["diagnostics"]
    assert len(diagnostics["cluster_shares"]) == 12 and sum(diagnostics["cluster_shares"]) == pytest.approx(1)
    assert 0 <= diagnostics["cluster_entropy"] <= 1 and -1 <= diagnostics["code_mean_cosine"] <= 1
    # the toy ViT is not DINO: the shifts are calibrated so that each b attracts the toy recipe's share
    assert metrics["shifts"] == "calibrated"
    for kind, share in zip(("self", "knn", "rand"), TOY_CONFIG.attracted_shares):
        assert diagnostics["attracted_shares"][kind] == pytest.approx(share, abs=0.01)
    assert metrics["shift_values"]["b_self"] != TOY_CONFIG.b_self
    assert all(record["linear"] == 0 for record in metrics["history"])
    saved = json.loads((run / "metrics.json").read_text())
    assert saved["diagnostics"] == diagnostics and StegoModel.load(run / "stego.pt").cluster_probe.n_classes == 12

    report = segment_folder(env / "photos", env / "segmented", run, crf=False)
    assert report.legend == [f"cluster {k}" for k in range(12)]
    assert [entry["file"] for entry in report.skipped] == ["broken.jpg"]
    for path in photos:
        with Image.open(path) as image, Image.open(env / "segmented" / f"{path.stem}.png") as ids:
            assert ids.size == image.size and np.array(ids).max() < 12


def test_official_shifts_and_cluster_count_are_flags(env):
    write_photos(env / "photos", 8, corrupt=False)
    metrics = train_main(["--dataset", f"folder:{env / 'photos'}", "--out", str(env / "run"), "--steps", "2",
                          "--batch-size", "4", "--shifts", "official", "--n-clusters", "5"])
    assert metrics["shift_values"] == {"b_self": TOY_CONFIG.b_self, "b_knn": TOY_CONFIG.b_knn,
                                       "b_rand": TOY_CONFIG.b_rand}
    assert metrics["n_clusters"] == 5 and len(metrics["diagnostics"]["cluster_shares"]) == 5


def test_folder_runs_refuse_what_needs_labels_and_labelled_runs_refuse_folder_flags(env):
    write_photos(env / "photos", 4, corrupt=False)
    for flags in (["--val-freq", "10"], ["--ablations"], ["--n-val", "3"]):
        with pytest.raises(ConfigError, match="label"):
            train_main(["--dataset", f"folder:{env / 'photos'}", "--print-config", *flags])
    with pytest.raises(ConfigError, match="--n-clusters is for --dataset folder:DIR"):
        train_main(["--n-clusters", "5", "--print-config"])
    with pytest.raises(ConfigError, match="no such folder"):
        train_main(["--dataset", f"folder:{env / 'missing'}", "--print-config"])
    with pytest.raises(ConfigError, match="do not fill one batch of 16"):  # 4 images, the toy batch of 16
        train_main(["--dataset", f"folder:{env / 'photos'}", "--out", str(env / "run")])


def test_the_cache_key_follows_the_folders_content(tmp_path):
    paths = write_photos(tmp_path / "a", 3, corrupt=False)
    key = folder_fingerprint(paths)
    assert folder_fingerprint(paths) == key and folder_fingerprint(paths[:2]) != key
    Image.new("RGB", (40, 30), (9, 9, 9)).save(paths[0].with_suffix(".tmp.jpg"), format="JPEG")
    paths[0].with_suffix(".tmp.jpg").replace(paths[0])  # same name, another image
    assert folder_fingerprint(paths) != key


def test_unlabelled_folder_five_crops_each_image_and_has_no_labels(tmp_path):
    paths = write_photos(tmp_path, 2, corrupt=False)
    dataset = UnlabelledImageFolder(paths, five_crop=True)
    assert len(dataset) == 10
    whole = torch.from_numpy(np.array(Image.open(paths[1]).convert("RGB"))).permute(2, 0, 1).float() / 255
    for crop in range(5):
        sample = dataset[5 + crop]
        expected, _ = five_crop(whole, torch.zeros(whole.shape[1:], dtype=torch.long))[crop]
        assert torch.equal(sample["image"], expected) and (sample["label"] == -1).all()


def test_cluster_log_probs_are_the_cluster_part_of_probe_log_probs():
    model = StegoModel(16, 5, TOY_CONFIG).eval()
    codes = torch.randn(2, TOY_CONFIG.code_dim, 3, 4)
    cluster, _ = probe_log_probs(model, codes, (12, 16))
    assert torch.equal(cluster_log_probs(model, codes, (12, 16)), cluster) and cluster.shape == (2, 5, 12, 16)


def test_dinov2_presets_reuse_the_dino_blocks_at_multiples_of_14():
    # no official DINOv2 block exists in mhamilton723/STEGO src/configs/train_config.yml (DINO v1 only)
    for backbone, stand_in in (("dinov2_vitb14", "dino_vitb8"), ("dinov2_vits14_reg", "dino_vits8")):
        config = stego_config("cocostuff27", backbone)
        official = OFFICIAL_CONFIGS["cocostuff27", stand_in]
        assert (config.b_rand, config.lambda_knn, config.backbone) == (official.b_rand, official.lambda_knn, backbone)
        assert (config.resolution, config.val_resolution) == (224, 322)
        assert "no official STEGO preset exists for DINOv2" in preset_note("cocostuff27", backbone)
    assert preset_note("cocostuff27", "dino_vitb8") is None
    with pytest.raises(ConfigError, match="--val-resolution 320 is not a multiple of dinov2_vitb14's patch size 14: "
                                          "use 308 or 322"):
        train_main(["--profile", "full", "--dataset", "cocostuff27", "--backbone", "dinov2_vitb14",
                    "--val-resolution", "320", "--print-config"])


@pytest.mark.parametrize("backbone, shifts, resolution", [("dino_vits8", "official", 64),
                                                          ("dinov2_vits14", "calibrated", 56)])
def test_full_profile_smoke_run_on_a_folder_then_segment(env, monkeypatch, backbone, shifts, resolution):
    write_random_weights(env / "cache" / "weights", dino_models=(backbone,), resnets=())
    photos = write_photos(env / "photos", 10)
    monkeypatch.setenv("COURSE_PROFILE", "full")
    monkeypatch.setenv("COURSE_SMOKE", "1")
    run = env / "run"
    metrics = train_main(["--dataset", f"folder:{env / 'photos'}", "--backbone", backbone, "--out", str(run)])
    config = json.loads((run / "config.json").read_text())
    assert (metrics["shifts"], config["stego"]["resolution"], config["stego"]["val_resolution"]) == \
        (shifts, resolution, resolution)
    assert (metrics["n_images"], metrics["n_train"], metrics["n_clusters"]) == (8, 40, 27)  # smoke: 8 images, 5 crops
    assert config["data"]["online"] is True and config["stego"]["five_crop"] is True
    assert (metrics["preset_note"] is None) == backbone.startswith("dino_")
    if shifts == "official":
        assert metrics["shift_values"]["b_rand"] == OFFICIAL_CONFIGS["cocostuff27", "dino_vits8"].b_rand
    assert list((env / "cache" / "stego" / "knn").rglob(f"folder_{metrics['fingerprint']}_n8_fivecrop_*"))
    report = segment_folder(env / "photos", env / "segmented", run, crf=False)
    assert len(report.images) == len(photos) and report.legend[26] == "cluster 26"


def test_full_profile_folder_of_fewer_five_crops_than_the_knn_table_width(env, monkeypatch):
    # 4 images x 5 crops = 20 items < the 30 neighbours STEGO keeps (pairs.TOP_K): the folder lesson's dry run
    # on the fake data root's 4 COCO val images; the tables keep all 20 instead of failing
    write_random_weights(env / "cache" / "weights", dino_models=("dino_vits8",), resnets=())
    write_photos(env / "photos", 4, corrupt=False)
    monkeypatch.setenv("COURSE_PROFILE", "full")
    monkeypatch.setenv("COURSE_SMOKE", "1")
    metrics = train_main(["--dataset", f"folder:{env / 'photos'}", "--out", str(env / "run")])
    assert (metrics["n_images"], metrics["n_train"]) == (4, 20) and metrics["selected_step"] == 2
