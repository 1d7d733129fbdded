"""``python -m course_lib.segment``: a folder of your own images segmented with a trained STEGO run (issue 18.1).

The images are tiny and the run is the shipped toy STEGO run (toy ViT, 12 clusters, 96 px), so every
end-to-end call takes about a second.
"""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from course_lib import cli
from course_lib.config import ConfigError
from course_lib.segment import main, model_size, output_names, read_photo, segment_folder
from course_lib.stego.train import SHIPPED_RUNS, toy_run_dir

N_CLUSTERS = 12  # the toy run: the toy world's 12 scene classes
EXIF_ORIENTATION = 0x0112


@pytest.fixture(scope="module")
def shipped_run() -> Path:
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("COURSE_SMOKE", raising=False)
        return SHIPPED_RUNS / toy_run_dir().name


def _pixels(height: int, width: int, seed: int, channels: int = 3) -> np.ndarray:
    """Two textured halves, so that the image has more than one segment."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (height, width, channels), dtype=np.uint8)
    image[:, : width // 2] //= 4
    return image


def _write_folder(folder: Path) -> dict[str, tuple[int, int]]:
    """The test folder; returns the readable images' output name → (H, W) expected."""
    folder.mkdir()
    Image.fromarray(_pixels(37, 53, 0)).save(folder / "small.png")
    Image.fromarray(_pixels(120, 80, 1)).save(folder / "tall.jpg", quality=95)
    Image.fromarray(_pixels(50, 70, 2)[..., 0]).save(folder / "grey.png")  # mode L
    rgba = _pixels(64, 48, 3, channels=4)
    rgba[:20, :, 3] = 0
    Image.fromarray(rgba, mode="RGBA").save(folder / "alpha.png")
    palette = Image.fromarray(_pixels(40, 40, 4)).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    palette.save(folder / "palette.png")
    Image.fromarray(_pixels(45, 90, 5)).save(folder / "UPPER.JPG", quality=95)
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6  # stored 30 wide × 60 high, shown rotated: 60 wide × 30 high
    Image.fromarray(_pixels(60, 30, 6)).save(folder / "rotated.jpg", exif=exif, quality=95)
    Image.fromarray(_pixels(33, 44, 7)).save(folder / "same.jpg", quality=95)
    Image.fromarray(_pixels(55, 22, 8)).save(folder / "same.png")
    (folder / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a JPEG" * 3)
    (folder / "notes.txt").write_text("not an image, not a candidate")
    (folder / "nested").mkdir()
    Image.fromarray(_pixels(20, 20, 9)).save(folder / "nested" / "deep.png")  # not searched
    return {"small": (37, 53), "tall": (120, 80), "grey": (50, 70), "alpha": (64, 48), "palette": (40, 40),
            "UPPER": (45, 90), "rotated": (30, 60), "same_jpg": (33, 44), "same_png": (55, 22)}


def _cli(argv: list[str]) -> int:
    with pytest.raises(SystemExit) as stop:
        cli.run_cli(main, argv)
    return stop.value.code


@pytest.fixture(scope="module")
def segmented(tmp_path_factory, shipped_run):
    """The test folder segmented by the CLI (CRF in a process pool); returns (folder, out, expected sizes,
    exit status, stderr)."""
    root = tmp_path_factory.mktemp("segment")
    expected = _write_folder(root / "images")
    with pytest.MonkeyPatch.context() as patch:
        captured = []
        patch.setattr(sys, "stderr", _Tee(captured))
        code = _cli(["--images", str(root / "images"), "--out", str(root / "out"), "--run", str(shipped_run),
                     "--batch-size", "2", "--crf-workers", "2"])
    return root / "images", root / "out", expected, code, "".join(captured)


class _Tee:
    """A stderr stand-in that keeps what is written (module-scoped fixtures cannot use capsys)."""

    def __init__(self, sink: list[str]):
        self.sink = sink

    def write(self, text: str) -> int:
        self.sink.append(text)
        return len(text)

    def flush(self) -> None:
        pass


def test_every_readable_image_gets_a_label_png_at_its_own_size(segmented):
    _, out, expected, code, _ = segmented
    assert code == 0
    for name, (height, width) in expected.items():
        with Image.open(out / f"{name}.png") as label:
            assert label.mode == "L"
            ids = np.asarray(label)
        assert ids.shape == (height, width), name
        assert ids.max() < N_CLUSTERS
        with Image.open(out / f"{name}_overlay.jpg") as blended:
            assert blended.mode == "RGB" and blended.size == (width, height)
    assert len(np.unique(np.asarray(Image.open(out / "tall.png")))) > 1  # two textures: not one flat segment
    assert (out / "legend.png").stat().st_size > 0
    assert not (out / "deep.png").exists() and not (out / "notes.png").exists()
    assert not list(out.glob("*partial*"))  # every file renamed into place


def test_corrupt_file_is_named_and_skipped(segmented):
    _, out, expected, _, stderr = segmented
    assert "corrupt.jpg" in stderr
    report = json.loads((out / "segment.json").read_text())
    assert [entry["file"] for entry in report["skipped"]] == ["corrupt.jpg"]
    assert "not a readable image" in report["skipped"][0]["reason"]
    assert sorted(Path(entry["label"]).stem for entry in report["images"]) == sorted(expected)
    for entry in report["images"]:
        assert (entry["height"], entry["width"]) == expected[Path(entry["label"]).stem]
        assert len(entry["cluster_shares"]) == N_CLUSTERS and sum(entry["cluster_shares"]) == pytest.approx(1.0)
        assert entry["model_height"] % 8 == 0 and entry["model_width"] % 8 == 0
        assert min(entry["model_height"], entry["model_width"]) == 96  # the toy run's val_resolution
    assert report["n_clusters"] == N_CLUSTERS and report["resolution"] == 96 and report["crf"] is True
    # the shipped run's metrics hold the Hungarian assignment: the legend names the matched classes
    assert len(report["legend"]) == N_CLUSTERS and all(": " in name for name in report["legend"])


def test_same_stem_files_are_disambiguated_by_their_suffix(segmented):
    folder, out, _, _, _ = segmented
    report = json.loads((out / "segment.json").read_text())
    outputs = {entry["file"]: entry["label"] for entry in report["images"]}
    assert outputs["same.jpg"] == "same_jpg.png" and outputs["same.png"] == "same_png.png"
    assert not (out / "same.png").exists()
    assert outputs["small.png"] == "small.png"


def test_two_runs_give_identical_pngs(segmented, tmp_path, shipped_run):
    folder, out, expected, _, _ = segmented
    segment_folder(folder, tmp_path / "again", shipped_run, batch_size=2, crf_workers=1)
    for name in expected:
        assert (tmp_path / "again" / f"{name}.png").read_bytes() == (out / f"{name}.png").read_bytes(), name


def test_batching_by_size_gives_what_each_image_gets_alone(tmp_path, shipped_run):
    folder = tmp_path / "images"
    folder.mkdir()
    for index in range(3):  # one model size (96×96): one batch of 3 against three batches of 1
        Image.fromarray(_pixels(40 + index, 40 + index, index)).save(folder / f"{index}.png")
    segment_folder(folder, tmp_path / "batched", shipped_run, batch_size=3, crf=False)
    segment_folder(folder, tmp_path / "alone", shipped_run, batch_size=1, crf=False)
    for index in range(3):
        batched = np.asarray(Image.open(tmp_path / "batched" / f"{index}.png"))
        alone = np.asarray(Image.open(tmp_path / "alone" / f"{index}.png"))
        assert (batched == alone).mean() > 0.999


def test_empty_folder_exits_2_with_a_message(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no images here")
    done = subprocess.run([sys.executable, "-m", "course_lib.segment", "--images", str(tmp_path / "empty"),
                           "--out", str(tmp_path / "out")], capture_output=True, text=True,
                          env={**os.environ, "TQDM_DISABLE": "1"}, timeout=300)
    assert done.returncode == 2
    assert "holds no image file" in done.stderr and "Traceback" not in done.stderr


def test_folder_of_unreadable_files_exits_2_naming_them(tmp_path, capsys, shipped_run):
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    assert _cli(["--images", str(tmp_path / "images"), "--out", str(tmp_path / "out"), "--run", str(shipped_run)]) == 2
    assert "none of its 1 image files can be read" in capsys.readouterr().err


@pytest.mark.parametrize("contents, message", [
    ({}, "stego.pt is missing"),
    ({"checkpoint.pt": b"x"}, "the training has not finished"),
    ({"config.json": json.dumps({"luss": {}})}, "no 'stego' section"),
])
def test_run_that_is_not_a_stego_run_exits_2(tmp_path, capsys, contents, message):
    run = tmp_path / "run"
    run.mkdir()
    for name, value in contents.items():
        (run / name).write_bytes(value if isinstance(value, bytes) else value.encode())
    Image.fromarray(_pixels(20, 20, 0)).save(tmp_path / "a.png")
    assert _cli(["--images", str(tmp_path), "--out", str(tmp_path / "out"), "--run", str(run)]) == 2
    err = capsys.readouterr().err
    assert message in err and str(run) in err and "Traceback" not in err


def test_out_may_not_be_the_images_folder(tmp_path, capsys, shipped_run):
    Image.fromarray(_pixels(20, 20, 0)).save(tmp_path / "a.png")
    before = (tmp_path / "a.png").read_bytes()
    assert _cli(["--images", str(tmp_path), "--out", str(tmp_path), "--run", str(shipped_run)]) == 2
    assert "would replace your images" in capsys.readouterr().err
    assert (tmp_path / "a.png").read_bytes() == before


def test_run_trained_on_other_backbone_weights_is_refused(tmp_path, shipped_run):
    run = tmp_path / "run"
    shutil.copytree(shipped_run, run)
    metrics = json.loads((run / "metrics.json").read_text())
    metrics["backbone_key"] = "toy_vit-w000000000000"
    (run / "metrics.json").write_text(json.dumps(metrics))
    Image.fromarray(_pixels(20, 20, 0)).save(tmp_path / "a.png")
    with pytest.raises(ConfigError, match="retrained weights"):
        segment_folder(tmp_path, tmp_path / "out", run)


def test_config_json_gives_the_resolution_and_a_run_without_assignment_names_clusters(tmp_path, shipped_run):
    run = tmp_path / "run"
    run.mkdir()
    shutil.copyfile(shipped_run / "stego.pt", run / "stego.pt")  # no metrics.json: no Hungarian assignment
    stego = torch.load(run / "stego.pt", weights_only=True)["config"]
    (run / "config.json").write_text(json.dumps({"stego": {**stego, "val_resolution": 64}}))
    (tmp_path / "images").mkdir()
    Image.fromarray(_pixels(30, 60, 0)).save(tmp_path / "images" / "a.png")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "a.png").write_bytes(b"an older output")  # replaced
    report = segment_folder(tmp_path / "images", tmp_path / "out", run, crf=False)
    assert report.resolution == 64 and not report.crf
    assert (report.images[0]["model_height"], report.images[0]["model_width"]) == (64, 128)
    assert report.legend == [f"cluster {k}" for k in range(N_CLUSTERS)]
    assert np.asarray(Image.open(tmp_path / "out" / "a.png")).shape == (30, 60)


def test_default_run_is_the_shipped_toy_run(tmp_path, monkeypatch):
    monkeypatch.delenv("COURSE_SMOKE", raising=False)
    monkeypatch.setenv("COURSE_CACHE", str(tmp_path / "cache"))
    (tmp_path / "images").mkdir()
    Image.fromarray(_pixels(24, 32, 0)).save(tmp_path / "images" / "a.png")
    report = segment_folder(tmp_path / "images", tmp_path / "out", crf=False)
    assert report.run.name == toy_run_dir().name and report.backbone == "toy_vit"
    assert (report.run / "stego.pt").read_bytes() == (SHIPPED_RUNS / report.run.name / "stego.pt").read_bytes()


def test_read_photo_modes(tmp_path):
    rgba = np.zeros((4, 6, 4), dtype=np.uint8)
    rgba[:, :3] = (10, 20, 30, 255)  # left: opaque; right: transparent black
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "rgba.png")
    photo = read_photo(tmp_path / "rgba.png")
    assert photo.shape == (4, 6, 3) and photo.dtype == np.uint8
    assert (photo[:, :3] == (10, 20, 30)).all() and (photo[:, 3:] == 255).all()  # composited over white

    palette = Image.fromarray(np.array([[0, 1], [1, 0]], dtype=np.uint8), mode="P")
    palette.putpalette([200, 0, 0, 0, 0, 0])
    palette.save(tmp_path / "palette.png", transparency=1)
    assert read_photo(tmp_path / "palette.png").tolist() == [[[200, 0, 0], [255, 255, 255]],
                                                            [[255, 255, 255], [200, 0, 0]]]

    grey = np.array([[0, 128, 255]], dtype=np.uint8)
    Image.fromarray(grey, mode="L").save(tmp_path / "grey.png")
    assert (read_photo(tmp_path / "grey.png") == grey[..., None]).all()

    deep = np.array([[0, 257 * 100, 65535]], dtype=np.uint16)  # 16-bit greyscale: scaled, not clipped at 255
    Image.fromarray(deep).save(tmp_path / "deep.png")
    assert read_photo(tmp_path / "deep.png")[..., 0].tolist() == [[0, 100, 255]]

    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6
    Image.fromarray(_pixels(8, 5, 0)).save(tmp_path / "rotated.png", exif=exif)
    assert read_photo(tmp_path / "rotated.png").shape == (5, 8, 3)


def test_model_size_keeps_the_aspect_ratio_in_whole_patches():
    assert model_size(37, 53, 96, 8) == (96, 136)  # 53 · 96/37 = 137.5 → 17 patches
    assert model_size(480, 640, 320, 8) == (320, 424)  # 426.7 → 53 patches
    assert model_size(1, 1, 96, 8) == (96, 96)
    assert model_size(100, 100, 3, 8) == (8, 8)  # at least one patch


def test_output_names():
    files = [Path("a.jpg"), Path("a.png"), Path("b.png"), Path("legend.jpg")]
    assert output_names(files) == {Path("a.jpg"): "a_jpg", Path("a.png"): "a_png", Path("b.png"): "b",
                                   Path("legend.jpg"): "legend_jpg"}
    with pytest.raises(ConfigError, match="A.JPG, a.jpg"):  # the same outputs on a case-insensitive disk
        output_names([Path("A.JPG"), Path("a.jpg")])
