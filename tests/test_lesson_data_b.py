"""Lessons 05–08's per-profile choices (course_lib.lesson_data): sizes, folders, and a clear stop without data."""
import pytest

from course_lib import config, lesson_data
from course_lib.data import DatasetNotFoundError


@pytest.fixture
def env(monkeypatch, tmp_path):
    monkeypatch.setenv("COURSE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("COURSE_DATA", str(tmp_path / "empty"))
    monkeypatch.delenv("COURSE_SMOKE", raising=False)
    return monkeypatch


@pytest.mark.parametrize("profile, smoke, size, checks, suffix", [
    ("toy", False, 256, True, ""), ("toy", True, 4, False, "_smoke"),
    ("full", False, 2000, False, "_full"), ("full", True, 4, False, "_full_smoke")])
def test_sizes_checks_and_work_dirs(env, profile, smoke, size, checks, suffix):
    env.setenv("COURSE_PROFILE", profile)
    if smoke:
        env.setenv("COURSE_SMOKE", "1")
    assert lesson_data.lesson_size(256, 2000) == size
    assert lesson_data.checks_apply() is checks
    assert lesson_data.work_dir("lesson05") == config.cache_dir() / f"lesson05{suffix}"


def test_lessons_name_the_real_datasets_and_the_cli_run_folders(env):
    env.setenv("COURSE_PROFILE", "full")
    passes, segsort = lesson_data.pass_lesson(), lesson_data.segsort_lesson()
    assert (passes.dataset, passes.arch, passes.image_size) == ("imagenet_s50", "resnet18", 224)
    assert passes.run_dir == config.default_run_dir("pass", "imagenet_s50", "resnet18")
    assert "ImageNet-S50" in passes.data and "VOC 2012" in segsort.data
    assert segsort.run_dir == config.default_run_dir("segsort", "voc2012", "resnet101")
    assert len(segsort.classes) == 21
    assert "29.2" in passes.paper_report() and "luss pipeline" in passes.paper_report()
    toy = lesson_data.pass_lesson("toy")
    assert (toy.dataset, toy.image_size) == ("toy", None)


def test_smoke_settings_fit_a_few_images(env):
    env.setenv("COURSE_PROFILE", "full")
    env.setenv("COURSE_SMOKE", "1")
    settings = lesson_data.pass_lesson().settings(3)
    assert settings.pretrain.batch_size == 3 and settings.finetune.batch_size == 3
    assert max(c.size for c in settings.pretrain.crops) <= 64


def test_full_profile_without_data_stops_with_the_fetch_command(env):
    env.setenv("COURSE_PROFILE", "full")
    for load in (lambda: lesson_data.pass_lesson().images("train", 4),
                 lambda: lesson_data.segsort_lesson().split("train", 4),
                 lambda: lesson_data.evaluation_scenes(4)):
        with pytest.raises(DatasetNotFoundError, match="data_scripts"):
            load()
