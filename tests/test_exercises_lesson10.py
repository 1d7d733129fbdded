"""Lesson 10's exercise checks (each passes the notebook's solution, fails the stub and a plausible wrong answer), and
the lesson's helpers: the photo folder of lesson_data, the reveal, and course_lib.segment's label-free judgements."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from PIL import Image

from course_lib import lesson_data
from course_lib.config import ConfigError
from course_lib.evaluation import UnsupervisedMetrics
from course_lib.exercises import ExerciseNotDone, ExerciseWrong, lesson10
from course_lib.segment import SegmentReport, cluster_exemplars, folder_cluster_shares, read_labels, run_agreement
from course_lib.stego.folder import cluster_size_entropy
from course_lib.viz import own_images
from exercise_solutions import run_solution, stub as _stub

NOTEBOOK = "10_your_own_images.ipynb"


# ---------------------------------------------------------------- exercise 1: the cluster-size entropy


def _entropy():
    return run_solution(NOTEBOOK, 1, {"np": np})["size_entropy"]


def test_size_entropy_passes_the_solution(capsys):
    maps = [np.array([[0, 0], [1, 2]], np.uint8), np.full((3, 5), 1, np.uint8)]
    lesson10.check_size_entropy(_entropy(), maps, 4)
    assert "the lesson's 2 label PNGs (K = 4)" in capsys.readouterr().out


def test_size_entropy_fails_the_stub_nan_for_empty_clusters_and_other_normalisers():
    with pytest.raises(ExerciseNotDone):
        lesson10.check_size_entropy(_stub)

    def with_zeros(maps, k):                      # 0 · log 0 left in: NaN
        p = np.bincount(np.concatenate([m.ravel() for m in maps]), minlength=k) / sum(m.size for m in maps)
        with np.errstate(divide="ignore", invalid="ignore"):
            return float(-(p * np.log(p)).sum() / np.log(k))

    def non_empty_normaliser(maps, k):            # log of the clusters present, not log K
        counts = np.bincount(np.concatenate([m.ravel() for m in maps]), minlength=k)
        p = counts[counts > 0] / counts.sum()
        return float(-(p * np.log(p)).sum() / np.log(len(p)))

    def mean_per_image(maps, k):                  # each image's entropy, averaged
        return float(np.mean([_entropy()([m], k) for m in maps]))

    with pytest.raises(ExerciseWrong, match="NaN"):
        lesson10.check_size_entropy(with_zeros)
    for wrong in (non_empty_normaliser, mean_per_image):
        with pytest.raises(ExerciseWrong, match="off by"):
            lesson10.check_size_entropy(wrong)


def test_cluster_size_entropy_is_one_for_equal_sizes_and_ignores_empty_clusters():
    assert cluster_size_entropy([0.25] * 4) == pytest.approx(1.0)
    assert cluster_size_entropy([0.5, 0.5, 0.0, 0.0]) == pytest.approx(0.5)  # log 2 / log 4
    assert cluster_size_entropy([1.0, 0.0]) == 0.0 and cluster_size_entropy([1.0]) == 0.0


# ---------------------------------------------------------------- exercise 2: the reveal's Hungarian mIoU


def _miou():
    return run_solution(NOTEBOOK, 2, {"np": np})["hungarian_miou"]


def _reveal() -> UnsupervisedMetrics:
    generator = torch.Generator().manual_seed(3)
    labels = torch.randint(0, 5, (4, 20, 20), generator=generator)
    predictions = torch.where(torch.rand(4, 20, 20, generator=generator) < 0.7, (labels + 2) % 5,
                              torch.randint(0, 5, (4, 20, 20), generator=generator))
    metrics = UnsupervisedMetrics(5)
    metrics.update(predictions, labels)
    metrics.compute()
    return metrics


def test_hungarian_miou_passes_the_solution_and_reproduces_the_reveal(capsys):
    reveal = _reveal()
    lesson10.check_hungarian_miou(_miou(), reveal)
    assert f"{reveal.compute()['mIoU']:.1f} % (the reveal" in capsys.readouterr().out


def test_hungarian_miou_fails_the_stub_accuracy_argmax_and_no_matching():
    from scipy.optimize import linear_sum_assignment

    with pytest.raises(ExerciseNotDone):
        lesson10.check_hungarian_miou(_stub)

    def accuracy(stats):
        rows, columns = linear_sum_assignment(stats, maximize=True)
        return float(100 * stats[rows, columns].sum() / stats.sum())

    def argmax_mapping(stats):                     # clusters may share a class: not a matching
        iou = []
        for c in range(stats.shape[1]):
            mine = stats[:, c][stats.argmax(1) == c].sum()
            predicted = stats[stats.argmax(1) == c].sum()
            iou.append(mine / max(predicted + stats[:, c].sum() - mine, 1))
        return float(100 * np.mean(iou))

    def identity(stats):
        tp = np.diag(stats).astype(float)
        return float(100 * np.mean(tp / (stats.sum(0) + stats.sum(1) - tp)))

    for wrong in (accuracy, argmax_mapping, identity):
        with pytest.raises(ExerciseWrong):
            lesson10.check_hungarian_miou(wrong)


# ---------------------------------------------------------------- exercise 3: DINOv2's tokens


def _tokens():
    return run_solution(NOTEBOOK, 3)["tokens"]


def test_dinov2_tokens_passes_the_solution(capsys):
    assert run_solution(NOTEBOOK, 3)["n_attention_322"] == 534
    lesson10.check_dinov2_tokens(_tokens())
    assert "534 = 1 + 4 + 529" in capsys.readouterr().out


def test_dinov2_tokens_fails_the_stub_and_forgotten_registers_or_cls():
    with pytest.raises(ExerciseNotDone):
        lesson10.check_dinov2_tokens(_stub)
    with pytest.raises(ExerciseWrong, match="registers"):
        lesson10.check_dinov2_tokens(lambda h, w, p, r: ((h // p) * (w // p), 1 + (h // p) * (w // p)))
    with pytest.raises(ExerciseWrong, match="CLS"):
        lesson10.check_dinov2_tokens(lambda h, w, p, r: ((h // p) * (w // p), r + (h // p) * (w // p)))
    with pytest.raises(ExerciseWrong, match="patch tokens"):
        lesson10.check_dinov2_tokens(lambda h, w, p, r: ((h // 16) * (w // 16), 1 + r + (h // 16) * (w // 16)))


# ---------------------------------------------------------------- the lesson's helpers


def _report(folder, maps: dict[str, np.ndarray], k: int) -> SegmentReport:
    """A SegmentReport over label PNGs written to ``folder`` as segment_folder writes them (``maps``: image file
    name → H×W cluster ids)."""
    folder.mkdir(parents=True, exist_ok=True)
    images = []
    for name, ids in maps.items():
        stem = name.rsplit(".", 1)[0]
        Image.fromarray(ids.astype(np.uint8)).save(folder / f"{stem}.png")
        images.append({"file": name, "label": f"{stem}.png", "overlay": f"{stem}_overlay.jpg",
                       "height": ids.shape[0], "width": ids.shape[1],
                       "cluster_shares": (np.bincount(ids.ravel(), minlength=k) / ids.size).tolist()})
    return SegmentReport(folder, folder, folder, "toy_vit", 96, False, k, [f"cluster {i}" for i in range(k)], "cpu",
                         images=images)


def test_folder_shares_weigh_pixels_and_exemplars_rank_images(tmp_path):
    maps = {"small.jpg": np.zeros((2, 2), np.int64), "large.jpg": np.array([[1] * 6] * 2),
            "mixed.jpg": np.array([[0, 1], [1, 1]])}
    report = _report(tmp_path, maps, 3)
    np.testing.assert_allclose(folder_cluster_shares(report), [5 / 20, 15 / 20, 0])  # pooled, not a mean of images
    assert cluster_exemplars(report, per_cluster=2) == [["small.jpg", "mixed.jpg"], ["large.jpg", "mixed.jpg"], []]
    assert set(read_labels(report)) == {"small.jpg", "large.jpg", "mixed.jpg"}


def test_run_agreement_matches_renamed_clusters(tmp_path):
    generator = np.random.default_rng(0)
    maps = {f"p{i}.jpg": generator.integers(0, 4, size=(6, 8)) for i in range(3)}
    reference = _report(tmp_path / "a", maps, 4)
    renamed = _report(tmp_path / "b", {name: (ids + 1) % 4 for name, ids in maps.items()}, 4)
    assert run_agreement(reference, renamed) == pytest.approx(100.0)
    changed = {name: ids.copy() for name, ids in maps.items()}
    changed["p0.jpg"][0, :] = (changed["p0.jpg"][0, :] + 1) % 4         # 8 of 144 pixels moved to another cluster
    assert run_agreement(reference, _report(tmp_path / "c", changed, 4)) == pytest.approx(100 * 136 / 144)
    with pytest.raises(ConfigError, match="same K"):
        run_agreement(reference, _report(tmp_path / "d", maps, 5))


@pytest.fixture
def toy_lesson(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("COURSE_SMOKE", "1")
    monkeypatch.delenv("COURSE_PROFILE", raising=False)
    monkeypatch.chdir(tmp_path)
    return lesson_data.own_images_lesson()


def test_the_toy_photo_folder_has_the_awkward_files_and_is_written_once(toy_lesson):
    assert (toy_lesson.n_images, toy_lesson.steps, toy_lesson.backbone) == (16, 2, "toy_vit")
    photos = toy_lesson.photos()
    on_disk = sorted(path.name for path in photos.folder.iterdir())
    assert on_disk == sorted([*photos.files, lesson_data.BROKEN_PHOTO]) and len(photos.files) == 16
    modes = {}
    for name in photos.files:
        with Image.open(photos.folder / name) as image:
            modes[name] = image.mode
            assert image.size[::-1] == photos.hidden[name].shape
    assert modes["photo_05.png"] == "L" and modes["photo_07.png"] == "RGBA"
    assert (photos.hidden["photo_07.png"][:8] == -1).all() and (photos.hidden["photo_07.png"][8:-8, 8:-8] >= 0).all()
    assert len({photos.hidden[name].shape for name in photos.files}) == 4
    stamps = {path.name: path.stat().st_mtime_ns for path in photos.folder.iterdir()}
    again = toy_lesson.photos()
    assert {path.name: path.stat().st_mtime_ns for path in again.folder.iterdir()} == stamps
    assert all(np.array_equal(again.hidden[name], photos.hidden[name]) for name in photos.files)


def test_the_reveal_scores_the_hidden_labels(toy_lesson, tmp_path):
    photos = toy_lesson.photos()
    perfect = {name: np.where(labels < 0, 0, labels) for name, labels in photos.hidden.items()}
    scores = toy_lesson.reveal(_report(tmp_path / "segmented", perfect, 12), photos).compute()
    assert scores["mIoU"] == pytest.approx(100.0) and scores["accuracy"] == pytest.approx(100.0)
    perfect["photo_00.jpg"] = (perfect["photo_00.jpg"] + 1) % 12          # one image's clusters renamed
    scores = toy_lesson.reveal(_report(tmp_path / "renamed", perfect, 12), photos).compute()
    assert scores["accuracy"] < 100.0


def test_a_toy_backbone_name_other_than_the_toy_vit_is_refused(monkeypatch):
    monkeypatch.delenv("COURSE_PROFILE", raising=False)
    with pytest.raises(ConfigError, match="PROFILE = 'full'"):
        lesson_data.own_images_lesson("dinov2_vits14")


def test_the_full_branch_loads_the_clis_run_when_it_exists(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("COURSE_CACHE", str(tmp_path / "cache"))
    lesson = lesson_data.OwnImagesLesson("full", "dinov2_vits14", 200, 300, tmp_path / "work")
    photos = lesson_data.Photos(tmp_path / "work" / "photos", {}, [])
    assert lesson.run_dir() == tmp_path / "cache" / "runs" / "stego_folder_photos_dinov2_vits14"
    assert "--dataset folder:" in lesson.command(photos) and "--backbone dinov2_vits14" in lesson.command(photos)
    lesson.run_dir().mkdir(parents=True)
    (lesson.run_dir() / "stego.pt").write_bytes(b"")
    (lesson.run_dir() / "metrics.json").write_text('{"n_clusters": 27}')
    metrics, run = lesson.train(photos)  # no folder, no weights: only the finished run is read
    assert metrics == {"n_clusters": 27} and run == lesson.run_dir()
    assert "loading the full run" in capsys.readouterr().out


def test_the_lesson_figures_draw_from_what_segment_folder_wrote(tmp_path):
    maps = {"a.png": np.array([[0, 0, 1], [1, 2, 2]]), "b.png": np.array([[2, 2, 2], [0, 0, 0]])}
    report = _report(tmp_path / "segmented", maps, 3)
    report.images_dir = tmp_path / "photos"
    report.images_dir.mkdir()
    for name in maps:
        Image.new("RGB", (3, 2), (200, 10, 10)).save(report.images_dir / name)
        Image.new("RGB", (3, 2), (10, 200, 10)).save(report.out / f"{name[:-4]}_overlay.jpg")
    (report.images_dir / "broken.jpg").write_text("not an image")
    labels = read_labels(report)
    figures = [own_images.show_photos(report.images_dir, ["a.png", "broken.jpg"]),
               own_images.plot_cluster_shares({"one": [0.5, 0.3, 0.2]}),
               own_images.plot_cluster_shares({"seed 0": [0.5, 0.3, 0.2], "seed 1": [0.2, 0.2, 0.6]}),
               own_images.show_overlays(report, list(maps)),
               own_images.show_exemplars(report, labels, cluster_exemplars(report, 2), [0, 2],
                                         folder_cluster_shares(report)),
               own_images.show_reveal(report, labels, {"a.png": maps["a.png"], "b.png": -np.ones((2, 3), int)},
                                      [2, 0, 1], ["x", "y", "z"], list(maps))]
    texts = [text.get_text() for text in figures[0].axes[1].texts]
    assert texts and "unreadable" in texts[0]
    assert [tick.get_text() for tick in figures[1].axes[0].get_xticklabels()] == ["0", "1", "2"]
    assert "rank" in figures[2].axes[0].get_xlabel()
    plt.close("all")
