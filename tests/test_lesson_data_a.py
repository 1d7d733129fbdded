"""course_lib.lesson_data, lessons 00–04: what each lesson runs on per profile, and the full profile's data paths
on a data root in the official layouts (tests/full_data_root.py) with random weights."""
from __future__ import annotations

import json
import math

import pytest

from course_lib import config, lesson_data
from course_lib.config import CourseError
from full_data_root import make_full_data_root


@pytest.fixture
def toy(monkeypatch):
    monkeypatch.setenv("COURSE_PROFILE", "toy")
    monkeypatch.delenv("COURSE_SMOKE", raising=False)


@pytest.fixture(scope="module")
def fake_root(tmp_path_factory):
    base = tmp_path_factory.mktemp("lesson_data_a")
    make_full_data_root(base / "data", base / "cache")
    return base / "data", base / "cache"


@pytest.fixture
def full_smoke(monkeypatch, fake_root, tmp_path):
    data, cache = fake_root
    monkeypatch.setenv("COURSE_PROFILE", "full")
    monkeypatch.setenv("COURSE_SMOKE", "1")
    monkeypatch.setenv("COURSE_DATA", str(data))
    monkeypatch.setenv("COURSE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("COURSE_DEVICE", "cpu")
    monkeypatch.setenv("TQDM_DISABLE", "1")
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "weights").symlink_to(cache / "weights")
    return data


def test_toy_profile_keeps_the_lessons_sizes(toy):
    spec = lesson_data.correspondence_lesson(200)
    assert (spec.dataset, spec.n_images, spec.resolution, spec.backbone) == ("toy", 200, 96, "toy_vit")
    assert spec.cache_name == "toy_scenes_n200"          # the cache entry the toy lesson always used
    assert spec.data_name == "toy world (scenes, val)" and spec.toy_checks and spec.patch_purity == 0.75
    stego = lesson_data.stego_lesson(1000, 200)
    from course_lib.stego import TOY_CONFIG
    assert stego.config() == TOY_CONFIG and not stego.full
    assert stego.data_name == "toy world (scenes, train 1000 · val 200)"
    world = spec.load()
    assert len(world) == 200 and world.num_classes == 12


def test_full_profile_uses_cocostuff_vits8_at_the_papers_resolutions(monkeypatch):
    monkeypatch.setenv("COURSE_PROFILE", "full")
    monkeypatch.delenv("COURSE_SMOKE", raising=False)
    spec = lesson_data.correspondence_lesson(200)
    assert (spec.dataset, spec.n_images, spec.resolution, spec.backbone) == ("cocostuff27", 200, 320, "dino_vits8")
    assert spec.data_name == "CocoStuff-27 (val)" and not spec.toy_checks
    assert lesson_data.dino_lesson(4).resolution == 224
    stego = lesson_data.stego_lesson(1000, 200)
    cfg = stego.config()
    assert (cfg.dataset, cfg.backbone, cfg.five_crop, cfg.resolution, cfg.val_resolution) == \
        ("cocostuff27", "dino_vits8", True, 224, 320)
    assert (cfg.b_self, cfg.b_knn, cfg.b_rand) == (0.08, 0.02, 0.66)   # the official ViT-S/8 block
    assert stego.run_dir() == config.default_run_dir("stego", "cocostuff27", "dino_vits8")
    assert stego.cli_command().endswith("--dataset cocostuff27 --backbone dino_vits8")


def test_smoke_shrinks_both_profiles(monkeypatch):
    monkeypatch.setenv("COURSE_SMOKE", "1")
    monkeypatch.setenv("COURSE_PROFILE", "toy")
    assert (lesson_data.correspondence_lesson(200).n_images, lesson_data.correspondence_lesson(200).resolution) == (8, 64)
    assert lesson_data.stego_lesson(1000, 200).train.n_images == 16   # a batch of 16 fits
    assert lesson_data.smoke_cap(200) == 16 and not lesson_data.correspondence_lesson().toy_checks
    monkeypatch.setenv("COURSE_PROFILE", "full")
    spec = lesson_data.correspondence_lesson(200)
    assert (spec.n_images, spec.resolution) == (4, 64) and spec.patch_purity == 0.0


def test_empty_data_root_stops_with_the_fetch_command(monkeypatch, tmp_path):
    monkeypatch.setenv("COURSE_PROFILE", "full")
    monkeypatch.setenv("COURSE_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("COURSE_CACHE", str(tmp_path / "cache"))
    with pytest.raises(CourseError, match="python data_scripts/get_cocostuff.py"):
        lesson_data.correspondence_lesson().load()
    assert lesson_data.welcome_data_name() == "toy world + no real dataset on disk"
    with pytest.raises(CourseError) as error:
        lesson_data.welcome_datasets()
    assert all(f"data_scripts/get_{name}.py" in str(error.value)
               for name in ("cocostuff", "cityscapes", "imagenet_s", "voc"))
    with pytest.raises(CourseError, match="python data_scripts/get_cocostuff.py"):
        lesson_data.stego_lesson().start()   # before any backbone or feature work


def test_full_smoke_data_on_the_official_layouts(full_smoke, one_thread):
    spec = lesson_data.correspondence_lesson(200)
    images = spec.load()
    assert len(images) == 4 and images.num_classes == 27
    assert images[0]["image"].shape == (3, 64, 64) and images[0]["label"].shape == (64, 64)
    with pytest.raises(IndexError):
        images[4]
    assert "CocoStuff-27" in lesson_data.welcome_data_name()
    assert set(lesson_data.welcome_datasets()) == set(lesson_data.OFFICIAL_VAL_IMAGES)

    stego = lesson_data.stego_lesson(1000, 200)
    backbone = stego.start()
    data = stego.prepare(backbone)
    n_crops = 5 * len(stego.train.load())
    assert tuple(data.source.features.shape) == (n_crops, 384, 8, 8)        # five crops at 64 px, ViT-S/8
    assert tuple(data.source.table.shape) == (n_crops, n_crops)              # kNN over the few crops
    assert data.source.table[:, 0].tolist() == list(range(n_crops))          # each crop is its own nearest
    assert tuple(data.val.features.shape) == (4, 384, 8, 8) and len(data.val_flipped) == 4
    assert stego.cli_run() is None

    run, folder = stego.short_run(data, steps=50)
    assert run["config"]["steps"] == 2                                       # smoke: at most 2 steps
    assert (folder / "stego.pt").is_file() and run["n_val"] == 4 and run["ablations"] == []
    for key in ("cluster_mIoU", "linear_mIoU", "baseline_kmeans_mIoU"):
        assert 0.0 <= run[key] <= 100.0

    run_dir = stego.run_dir()       # a CLI run in the standard folder is found and preferred
    run_dir.mkdir(parents=True)
    (run_dir / "stego.pt").write_bytes((folder / "stego.pt").read_bytes())
    (run_dir / "metrics.json").write_text(json.dumps({"cluster_mIoU": 1.0}))
    assert stego.cli_run() == {"cluster_mIoU": 1.0}


def test_paper_table_puts_the_measured_rows_under_the_papers():
    table = lesson_data.paper_table({"this lesson": {"mIoU": 12.34, "accuracy": 40.0}})
    assert list(table.index)[-1] == "this lesson" and table.loc["this lesson", "mIoU"] == 12.3
    assert table.loc["paper: ViT-S/8, cluster probe + CRF", "mIoU"] == 24.5
    assert math.isnan(table.loc["paper: ViT-S/8, cluster probe + CRF", "accuracy"])
