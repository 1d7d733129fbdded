"""Real-dataset loaders on tiny fakes written in the real layouts and encodings (tests/fake_datasets.py)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from course_lib.data.cityscapes import Cityscapes27
from course_lib.data.cocostuff import CocoStuff27
from course_lib.data.five_crop import FiveCropDataset
from course_lib.data.folders import DatasetLayoutError, DatasetNotFoundError
from course_lib.data.imagenet_s import ImageNetS, read_imagenet_s_categories
from course_lib.data.label_maps import (
    COCOSTUFF27_CLASSES,
    COCOSTUFF27_FIRST_STUFF,
    COCOSTUFF_FINE_TO_COARSE27,
    CITYSCAPES27_CLASSES,
    VOC_CLASSES,
)
from course_lib.data.label_png import LabelEncodingError, write_imagenet_s_png
from course_lib.data.transforms import CenterCrop
from course_lib.data.voc import VOC2012
from fake_datasets import (
    fake_wnids,
    make_cityscapes,
    make_cocostuff,
    make_imagenet_s,
    make_imagenet_s_toy_layout,
    make_voc,
    write_imagenet_s_folder,
)

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference" / "imagenet_s"


def assert_sample_contract(sample: dict, index: int, name: str) -> None:
    image, label, meta = sample["image"], sample["label"], sample["meta"]
    assert image.dtype == torch.float32 and image.ndim == 3 and image.shape[0] == 3
    assert 0.0 <= float(image.min()) and float(image.max()) <= 1.0
    assert label.dtype == torch.int64 and tuple(label.shape) == tuple(image.shape[1:])
    assert meta["index"] == index and meta["name"] == name
    assert isinstance(meta["image_path"], str) and Path(meta["image_path"]).is_file()
    assert isinstance(meta["label_path"], str)


# --- CocoStuff-27 ------------------------------------------------------------------------------------

# A few fine ids whose coarse class is known from the COCO-Stuff label list (0-based stuffthingmaps ids).
KNOWN_COARSE = {
    0: "person", 2: "vehicle", 17: "animal", 61: "furniture", 91: "textile",  # banner
    105: "sky", 156: "sky", 147: "water", 123: "plant", 181: "solid",  # clouds, sky-other, river, grass, wood
}


def test_cocostuff_maps_fine_ids_to_27_classes_pixel_by_pixel(tmp_path):
    fake = make_cocostuff(tmp_path, "val", n_images=2)
    ds = CocoStuff27(root=tmp_path, split="val")
    assert len(ds) == 2 and ds.names == fake.names  # the curated list's order
    for index, raw in enumerate(fake.raw_labels):
        sample = ds[index]
        assert_sample_contract(sample, index, fake.names[index])
        label = sample["label"].numpy()
        assert (label[raw == 255] == -1).all() and (raw == 255).any()
        for fine in np.unique(raw[raw != 255]):
            assert (label[raw == fine] == COCOSTUFF_FINE_TO_COARSE27[fine]).all()
            assert COCOSTUFF27_CLASSES[label[raw == fine][0]] == KNOWN_COARSE[int(fine)]
        assert sample["meta"]["label_path"] == str(fake.label_paths[index])


def test_cocostuff_table_structure():
    assert len(COCOSTUFF_FINE_TO_COARSE27) == 182 and len(set(COCOSTUFF27_CLASSES)) == 27
    things, stuff = COCOSTUFF_FINE_TO_COARSE27[:91], COCOSTUFF_FINE_TO_COARSE27[91:]
    assert set(things) == set(range(COCOSTUFF27_FIRST_STUFF)) and set(stuff) == set(range(12, 27))


def test_cocostuff_train_and_val_lists_are_separate_files(tmp_path):
    train = make_cocostuff(tmp_path, "train", n_images=3, seed=5)
    val = make_cocostuff(tmp_path, "val", n_images=2, seed=1)
    assert CocoStuff27(tmp_path, "train").names == train.names
    assert CocoStuff27(tmp_path, "val").names == val.names
    with pytest.raises(ValueError, match="split"):
        CocoStuff27(tmp_path, "test")


def test_cocostuff_rejects_values_outside_the_stuffthingmaps_encoding(tmp_path):
    fake = make_cocostuff(tmp_path, "val", n_images=1)
    bad = fake.raw_labels[0].copy()
    bad[0, 0] = 200
    Image.fromarray(bad.astype(np.uint8)).save(fake.label_paths[0])
    with pytest.raises(LabelEncodingError, match="200"):
        CocoStuff27(tmp_path, "val")[0]


def test_cocostuff_rejects_an_rgb_label(tmp_path):
    fake = make_cocostuff(tmp_path, "val", n_images=1)
    Image.fromarray(np.zeros((24, 32, 3), np.uint8)).save(fake.label_paths[0])
    with pytest.raises(LabelEncodingError, match=str(fake.label_paths[0])):
        CocoStuff27(tmp_path, "val")[0]


def test_image_without_its_label_names_the_missing_file(tmp_path):
    fake = make_cocostuff(tmp_path, "val", n_images=2)
    fake.label_paths[1].unlink()
    with pytest.raises(DatasetLayoutError, match=fake.names[1]) as error:
        CocoStuff27(tmp_path, "val")
    assert str(fake.label_paths[1]) in str(error.value) and "1 of 2" in str(error.value)
    assert "python data_scripts/get_cocostuff.py" in str(error.value)


def test_root_none_reads_course_data(tmp_path, monkeypatch):
    fake = make_cocostuff(tmp_path, "val", n_images=1)
    monkeypatch.setenv("COURSE_DATA", str(tmp_path))
    assert CocoStuff27(split="val").names == fake.names


def test_transform_and_collation(tmp_path):
    make_cocostuff(tmp_path, "val", n_images=2, size=(24, 32))
    ds = CocoStuff27(tmp_path, "val", transform=CenterCrop(16))
    batch = next(iter(DataLoader(ds, batch_size=2)))
    assert batch["image"].shape == (2, 3, 16, 16) and batch["label"].shape == (2, 16, 16)
    assert batch["meta"]["index"].tolist() == [0, 1] and len(batch["meta"]["name"]) == 2


# --- Cityscapes-27 -----------------------------------------------------------------------------------

def test_cityscapes_label_ids_shift_by_7_and_void_is_ignored(tmp_path):
    fake = make_cityscapes(tmp_path, "val", cities=("bochum", "aachen"), per_city=1)
    ds = Cityscapes27(tmp_path, "val")
    assert ds.names == fake.names and [s.split("_")[0] for s in ds.names] == ["aachen", "bochum"]
    sample = ds[0]
    assert_sample_contract(sample, 0, fake.names[0])
    assert sample["meta"]["city"] == "aachen"
    raw, label = fake.raw_labels[0], sample["label"].numpy()
    assert (label[raw < 7] == -1).all() and (raw < 7).any()
    assert (label[raw == 7] == 0).all() and (label[raw == 33] == 26).all()
    assert (label[raw == 26] == 19).all() and CITYSCAPES27_CLASSES[19] == "car"
    assert CITYSCAPES27_CLASSES[0] == "road" and CITYSCAPES27_CLASSES[26] == "bicycle"


def test_cityscapes_rejects_an_rgb_label(tmp_path):
    fake = make_cityscapes(tmp_path, "val", per_city=1)
    Image.fromarray(np.zeros((16, 32, 3), np.uint8)).save(fake.label_paths[0])
    with pytest.raises(LabelEncodingError, match=str(fake.label_paths[0])):
        Cityscapes27(tmp_path, "val")[0]


# --- ImageNet-S --------------------------------------------------------------------------------------

def test_imagenet_s_decodes_ids_above_255_and_ignore(tmp_path):
    # class 300 = R 44 + 256·G 1 and 919 = R 151 + 256·G 3: a uint8 decode would give wrong ids
    fake = make_imagenet_s(tmp_path, subset=919, used_classes=(300, 919), extra_ids=(256, 511))
    ds = ImageNetS(919, "validation", root=tmp_path)
    assert ds.classes[0] == "other" and len(ds.classes) == 920 and ds.names == fake.names
    for index, raw in enumerate(fake.raw_labels):
        sample = ds[index]
        assert_sample_contract(sample, index, fake.names[index])
        label = sample["label"].numpy()
        expected = np.where(raw == 1000, -1, raw)
        np.testing.assert_array_equal(label, expected)
        assert {300, 919} & set(np.unique(label).tolist()) and (label == 511).any()
        assert sample["meta"]["labelled"] is True
    categories = [ds[i]["meta"]["category"] for i in range(len(ds))]
    assert categories == [300, 919]


def test_imagenet_s_train_is_unlabelled_with_its_category(tmp_path):
    make_imagenet_s(tmp_path, subset=50, split="train", used_classes=(3, 7), per_class=2)
    ds = ImageNetS(50, "train", root=tmp_path)
    assert len(ds) == 4
    sample = ds[2]
    assert (sample["label"] == -1).all() and sample["meta"]["labelled"] is False
    assert sample["meta"]["category"] == 7 and sample["meta"]["label_path"] == ""
    assert ds.classes[7] == sample["meta"]["name"].split("/")[0]


def test_imagenet_s_train_semi_reads_its_labels(tmp_path):
    fake = make_imagenet_s(tmp_path, subset=50, split="train-semi", used_classes=(50,))
    sample = ImageNetS(50, "train-semi", root=tmp_path)[0]
    np.testing.assert_array_equal(sample["label"].numpy(), np.where(fake.raw_labels[0] == 1000, -1, fake.raw_labels[0]))


def test_imagenet_s_rejects_a_single_channel_label(tmp_path):
    fake = make_imagenet_s(tmp_path, subset=50, used_classes=(1,))
    Image.fromarray(np.ones((20, 24), np.uint8)).save(fake.label_paths[0])
    with pytest.raises(LabelEncodingError, match=str(fake.label_paths[0])):
        ImageNetS(50, "validation", root=tmp_path)[0]


def test_imagenet_s_rejects_ids_of_another_subset(tmp_path):
    fake = make_imagenet_s(tmp_path, subset=50, used_classes=(1,))
    write_imagenet_s_png(fake.label_paths[0], np.full((20, 24), 300))
    with pytest.raises(LabelEncodingError, match="300"):
        ImageNetS(50, "validation", root=tmp_path)[0]


def test_imagenet_s_reads_the_toy_world_layout(tmp_path):
    fake = make_imagenet_s_toy_layout(tmp_path / "toy", classes=("circle", "square", "triangle"))
    ds = ImageNetS(split="validation", subset_dir=tmp_path / "toy")
    assert ds.classes == ["other", "circle", "square", "triangle"] and ds.names == fake.names
    assert [ds[i]["meta"]["category"] for i in range(3)] == [1, 2, 3]
    np.testing.assert_array_equal(ds[1]["label"].numpy(), np.where(fake.raw_labels[1] == 1000, -1, fake.raw_labels[1]))


def test_imagenet_s_folder_outside_the_categories_is_an_error(tmp_path):
    write_imagenet_s_folder(tmp_path / "toy", ["a", "b"], used_classes=(1, 2))
    (tmp_path / "toy" / "categories.txt").write_text("a\n")
    with pytest.raises(ValueError, match="'b' is not a category"):
        ImageNetS(split="validation", subset_dir=tmp_path / "toy")


@pytest.mark.parametrize("subset", [50, 300, 919])
def test_imagenet_s_category_files(tmp_path, subset):
    """The official category files when /work/shared/reference is present, else fake lists."""
    official = REFERENCE / "categories" / f"ImageNetS_categories_im{subset}.txt"
    if official.is_file():
        categories = read_imagenet_s_categories(official)
        assert len(categories) == subset and categories == sorted(categories)
        assert all(c.startswith("n") and len(c) == 9 for c in categories)
        assert categories[0] == {50: "n01443537", 300: "n01440764", 919: "n01440764"}[subset]
    else:
        categories = fake_wnids(subset)
    fake = make_imagenet_s(tmp_path, subset=subset, categories=categories, used_classes=(1, subset))
    ds = ImageNetS(subset, "validation", root=tmp_path)
    assert ds.classes == ["other", *categories] and len(ds.classes) == subset + 1
    assert ds.names == fake.names and ds[len(ds) - 1]["meta"]["category"] == subset


def test_imagenet_s_subset_must_match_its_category_file(tmp_path):
    make_imagenet_s(tmp_path, subset=50, categories=fake_wnids(50))
    wrong = tmp_path / "im300.txt"
    wrong.write_text("\n".join(fake_wnids(300)))
    with pytest.raises(ValueError, match="300 categories but subset=50"):
        ImageNetS(50, "validation", root=tmp_path, categories_file=wrong)


# --- PASCAL VOC 2012 ---------------------------------------------------------------------------------

def test_voc_palette_png_gives_indices_not_colours(tmp_path):
    fake = make_voc(tmp_path, "val", n_images=2)
    with Image.open(fake.label_paths[0]) as png:
        assert png.mode == "P"
    ds = VOC2012(tmp_path, "val")
    assert ds.names == fake.names and len(VOC_CLASSES) == 21 and VOC_CLASSES[15] == "person"
    sample = ds[0]
    assert_sample_contract(sample, 0, fake.names[0])
    raw, label = fake.raw_labels[0], sample["label"].numpy()
    np.testing.assert_array_equal(label, np.where(raw == 255, -1, raw))
    assert (raw == 255).any() and (label[raw == 15] == 15).all()


@pytest.mark.parametrize("list_with_paths", [False, True])
def test_voc_train_aug_reads_segmentation_class_aug(tmp_path, list_with_paths):
    fake = make_voc(tmp_path, "train_aug", n_images=3, list_with_paths=list_with_paths)
    ds = VOC2012(tmp_path, "train_aug")
    assert ds.names == fake.names and len(ds) == 3
    assert "SegmentationClassAug" in ds[2]["meta"]["label_path"]
    np.testing.assert_array_equal(ds[2]["label"].numpy(), np.where(fake.raw_labels[2] == 255, -1, fake.raw_labels[2]))


def test_voc_rejects_a_colour_label(tmp_path):
    fake = make_voc(tmp_path, "train", n_images=1)
    with Image.open(fake.label_paths[0]) as png:
        png.convert("RGB").save(fake.label_paths[0])
    with pytest.raises(LabelEncodingError, match=str(fake.label_paths[0])):
        VOC2012(tmp_path, "train")[0]


# --- missing datasets name their command -------------------------------------------------------------

@pytest.mark.parametrize(
    "load, command",
    [
        (lambda root: CocoStuff27(root, "train"), "python data_scripts/get_cocostuff.py"),
        (lambda root: Cityscapes27(root, "val"), "python data_scripts/get_cityscapes.py --from-dir DIR"),
        (lambda root: ImageNetS(50, "validation", root=root),
         "python data_scripts/get_imagenet_s.py --imagenet-dir DIR --subset 50"),
        (lambda root: ImageNetS(919, "train", root=root),
         "python data_scripts/get_imagenet_s.py --imagenet-dir DIR --subset 919"),
        (lambda root: VOC2012(root, "train_aug"), "python data_scripts/get_voc.py"),
        (lambda root: FiveCropDataset("cityscapes27", "train", root=root),
         "python data_scripts/five_crop.py --dataset cityscapes27 --split train"),
    ],
)
def test_missing_dataset_names_its_command(tmp_path, load, command):
    with pytest.raises(DatasetNotFoundError) as error:
        load(tmp_path)
    assert isinstance(error.value, FileNotFoundError)
    assert command in str(error.value) and str(tmp_path) in str(error.value)


def test_missing_split_or_list_names_the_path_and_command(tmp_path):
    make_cocostuff(tmp_path, "val", n_images=1)
    with pytest.raises(DatasetNotFoundError, match="train2017") as error:
        CocoStuff27(tmp_path, "train")
    assert "python data_scripts/get_cocostuff.py" in str(error.value)
    make_voc(tmp_path, "val", n_images=1)
    with pytest.raises(DatasetNotFoundError, match="train_aug.txt"):
        VOC2012(tmp_path, "train_aug")


def test_imagenet_s_reads_what_the_toy_world_writes(tmp_path):
    from course_lib.data.toyworld import ToyWorld, write_imagenet_s_layout

    toy = ToyWorld("objects", "val", n_images=4, size=64)
    write_imagenet_s_layout(toy, tmp_path / "toy")
    ds = ImageNetS(split="validation", subset_dir=tmp_path / "toy")
    assert ds.classes == list(toy.classes) and len(ds) == 4
    by_name = {toy.name(i): i for i in range(len(toy))}
    for sample in (ds[i] for i in range(len(ds))):
        index = by_name[sample["meta"]["name"].split("/")[1]]
        assert sample["meta"]["category"] == toy.category(index)
        assert torch.equal(sample["label"], toy[index]["label"])
