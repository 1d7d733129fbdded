"""STEGO's five-crop preparation: geometry, files on disk, the index, the loader and the CLI."""
from __future__ import annotations

import csv
import importlib
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
from PIL import Image

from course_lib.data.cocostuff import CocoStuff27
from course_lib.data.five_crop import (
    FIVE_CROP_POSITIONS,
    FiveCropDataset,
    decode_crop_label,
    encode_crop_label,
    five_crop,
    five_crop_boxes,
    five_crop_dataset,
    five_crop_dir,
    prepare_five_crop,
)
from course_lib.data.folders import DatasetNotFoundError
from course_lib.data.label_png import LabelEncodingError
from fake_datasets import make_cityscapes, make_cocostuff
from test_stego_train import make_stego_cocostuff

SCRIPT = Path(__file__).resolve().parents[1] / "data_scripts" / "five_crop.py"


@pytest.mark.parametrize("height, width", [(24, 32), (25, 33), (31, 18), (7, 7)])
def test_boxes_match_torchvision_five_crop(height, width):
    image = torch.arange(height * width, dtype=torch.int64).reshape(1, height, width)
    expected = TF.five_crop(image, [int(height * 0.5), int(width * 0.5)])
    for (top, left, h, w), reference in zip(five_crop_boxes(height, width), expected):
        assert torch.equal(image[:, top : top + h, left : left + w], reference)


def test_crops_tile_corners_and_centre_pixel_exactly():
    height, width = 25, 33
    image = torch.rand(3, height, width)
    label = torch.randint(-1, 27, (height, width))
    crops = five_crop(image, label)
    h, w = 12, 16  # int(25·0.5), int(33·0.5)
    origins = {"top_left": (0, 0), "top_right": (0, 17), "bottom_left": (13, 0), "bottom_right": (13, 17),
               "center": (6, 8)}  # centre: round(13/2) = 6 (round half to even), round(17/2) = 8
    for position, (image_crop, label_crop) in zip(FIVE_CROP_POSITIONS, crops):
        top, left = origins[position]
        assert torch.equal(image_crop, image[:, top : top + h, left : left + w])
        assert torch.equal(label_crop, label[top : top + h, left : left + w])


def test_label_encoding_is_label_plus_one():
    label = torch.tensor([[-1, 0], [26, 5]])
    stored = encode_crop_label(label)
    assert stored.dtype == np.uint8 and stored.tolist() == [[0, 1], [27, 6]]
    np.testing.assert_array_equal(decode_crop_label(stored), label.numpy())
    with pytest.raises(LabelEncodingError):
        encode_crop_label(torch.tensor([[255]]))


def test_prepare_writes_crops_index_and_loader_reads_them(tmp_path):
    make_cocostuff(tmp_path, "val", n_images=2, size=(25, 33))
    source = CocoStuff27(tmp_path, "val")
    out_dir = prepare_five_crop("cocostuff27", "val", root=tmp_path, jpeg_quality=100)
    assert out_dir == five_crop_dir("cocostuff27", tmp_path) == tmp_path / "cropped" / "cocostuff27_five_crop_0.5"
    assert sorted(p.name for p in (out_dir / "img" / "val").iterdir()) == sorted(f"{k}.jpg" for k in range(10))

    with open(out_dir / "index" / "val.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    assert [int(r["k"]) for r in rows] == list(range(10))
    assert rows[7]["source_name"] == source.names[1] and rows[7]["position"] == "bottom_left"
    assert (int(rows[7]["top"]), int(rows[7]["left"]), int(rows[7]["height"]), int(rows[7]["width"])) == (13, 0, 12, 16)

    crops = FiveCropDataset("cocostuff27", "val", root=tmp_path)
    assert len(crops) == 10 and crops.classes == CocoStuff27.classes
    for index in range(2):
        sample = source[index]
        for position, (image_crop, label_crop) in enumerate(five_crop(sample["image"], sample["label"])):
            k = 5 * index + position
            with Image.open(out_dir / "label" / "val" / f"{k}.png") as png:
                assert png.mode == "L"
                np.testing.assert_array_equal(np.asarray(png), label_crop.numpy() + 1)
            loaded = crops[k]
            assert torch.equal(loaded["label"], label_crop)
            assert (loaded["image"] - image_crop).abs().mean() < 0.01  # JPEG, quality 100
            assert loaded["meta"]["source_name"] == source.names[index]
            assert loaded["meta"]["position"] == FIVE_CROP_POSITIONS[position]
            assert loaded["meta"]["name"] == f"{source.names[index]}_{FIVE_CROP_POSITIONS[position]}"


def test_prepare_resumes_and_index_marks_completion(tmp_path):
    make_cityscapes(tmp_path, "val", per_city=1, size=(16, 32))
    out_dir = prepare_five_crop("cityscapes27", "val", root=tmp_path)
    first = (out_dir / "label" / "val" / "3.png").read_bytes()
    (out_dir / "label" / "val" / "3.png").unlink()
    (out_dir / "index" / "val.csv").unlink()
    with pytest.raises(DatasetNotFoundError, match="did not finish"):
        FiveCropDataset("cityscapes27", "val", root=tmp_path)
    prepare_five_crop("cityscapes27", "val", root=tmp_path)
    assert (out_dir / "label" / "val" / "3.png").read_bytes() == first
    assert len(FiveCropDataset("cityscapes27", "val", root=tmp_path)) == 10


def test_prepare_with_worker_processes_gives_the_same_index(tmp_path):
    make_cocostuff(tmp_path, "val", n_images=3, size=(20, 20))
    out_dir = prepare_five_crop("cocostuff27", "val", root=tmp_path, num_workers=2)
    labels = [np.asarray(Image.open(out_dir / "label" / "val" / f"{k}.png")) for k in range(15)]
    source = CocoStuff27(tmp_path, "val")
    assert np.array_equal(labels[14], five_crop(source[2]["image"], source[2]["label"])[4][1].numpy() + 1)


def test_unknown_dataset_is_refused(tmp_path):
    with pytest.raises(ValueError, match="cityscapes27"):
        prepare_five_crop("voc", "train", root=tmp_path)


def load_cli():
    spec = importlib.util.spec_from_file_location("five_crop_cli", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli_prepares_and_reports_a_missing_dataset(tmp_path, capsys):
    cli = load_cli()
    assert cli.main(["--dataset", "cocostuff27", "--split", "train", "--data-dir", str(tmp_path)]) == 2
    assert "python data_scripts/get_cocostuff.py" in capsys.readouterr().err
    make_stego_cocostuff(tmp_path, "train", n_images=1)
    args = ["--dataset", "cocostuff27", "--split", "train", "--data-dir", str(tmp_path), "--num-workers", "0"]
    assert cli.main(args) == 0
    assert len(FiveCropDataset("cocostuff27", "train", root=tmp_path)) == 5


def test_five_crop_dataset_prepares_once_and_keeps_a_first_n_subset_apart(tmp_path, monkeypatch):
    with pytest.raises(DatasetNotFoundError, match="get_cocostuff.py"):  # no source: stops before writing
        five_crop_dataset("cocostuff27", "train", root=tmp_path)
    assert not (tmp_path / "cropped").exists()
    make_stego_cocostuff(tmp_path, "train", n_images=3, size=(24, 32))
    first = five_crop_dataset("cocostuff27", "train", root=tmp_path, n_images=2)
    assert len(first) == 10 and first.source_indices[-1] == 1
    assert first.image_paths[0].startswith(str(five_crop_dir("cocostuff27", tmp_path, n_images=2)))
    assert not five_crop_dir("cocostuff27", tmp_path).exists()  # a subset is never the whole set's folder
    whole = five_crop_dataset("cocostuff27", "train", root=tmp_path, n_images=8)  # more than there are: all
    assert len(whole) == 15 and (five_crop_dir("cocostuff27", tmp_path) / "index" / "train.csv").is_file()

    def refuse(*args, **kwargs):
        raise AssertionError("prepared again")

    monkeypatch.setattr(importlib.import_module("course_lib.data.five_crop"), "prepare_five_crop", refuse)
    again = five_crop_dataset("cocostuff27", "train", root=tmp_path)
    assert again.names == whole.names
    torch.testing.assert_close(again[7]["image"], whole[7]["image"])
