"""STEGO's full presets against the official trainer (mhamilton723/STEGO): checkpoint selection on the
validation set, the CocoStuff training list, nearest-neighbour resizing, the kNN descriptors, the presets kept."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from course_lib.data.folders import DatasetLayoutError
from course_lib.models.features import FeatureSet
from course_lib.stego import StegoModel, stego_config, train_stego
from course_lib.stego.configs import OFFICIAL_CONFIGS, OFFICIAL_SELECTION, CheckpointSelection
from course_lib.stego.data import NearestResize, official_knn_descriptors
from course_lib.stego.experiment import StegoData, run_experiment
from course_lib.stego.trainer import BestCheckpoints

from test_stego_train import make_stego_cocostuff, synthetic_pairs

pytestmark = pytest.mark.usefixtures("one_thread")


# ----------------------------------------------------------------------------- checkpoint selection


def test_official_selection_validates_every_100_steps_and_keeps_the_2_best_of_every_400th():
    # src/configs/train_config.yml:167 (val_freq: 100); src/train_segmentation.py:476 (val_check_interval),
    # :487-492 (ModelCheckpoint every_n_train_steps=400, save_top_k=2, monitor test/cluster/mIoU, mode max)
    assert (OFFICIAL_SELECTION.val_freq, OFFICIAL_SELECTION.select_every, OFFICIAL_SELECTION.save_top_k) == (100, 400, 2)
    with pytest.raises(ValueError, match="multiple of val_freq"):
        CheckpointSelection(val_freq=3, select_every=4)


UP_THEN_DOWN = {1: 5.0, 2: 10.0, 3: 12.0, 4: 30.0, 5: 40.0, 6: 20.0, 7: 1.0, 8: 5.0}
"""Validation cluster mIoU per step of the fake run: best candidate (even step) 4, then 6."""


def fake_validation(model: StegoModel, seen: list) -> dict:
    step = len(seen) + 1
    seen.append(step)
    assert not model.training  # validated in eval mode
    return {"cluster_mIoU": UP_THEN_DOWN[step], "linear_mIoU": 0.0}


def test_best_checkpoints_keep_the_best_step_of_a_run_that_rises_then_falls(tmp_path):
    source = synthetic_pairs()
    config = stego_config("toy", batch_size=4, steps=8, code_dim=5)
    seen: list = []
    best = BestCheckpoints(CheckpointSelection(val_freq=1, select_every=2, save_top_k=2),
                           lambda model: fake_validation(model, seen), tmp_path)
    train_stego(StegoModel(8, 3, config), source, tmp_path, best=best)
    assert [point["step"] for point in best.curve] == list(range(1, 9))
    assert best.kept == [(30.0, 4), (20.0, 6)]  # step 5 scored 40 but is no candidate (not divisible by 2)
    assert sorted(path.name for path in tmp_path.glob("best_step*.pt")) == ["best_step4.pt", "best_step6.pt"]
    # the kept file holds the weights after exactly 4 steps
    four = StegoModel(8, 3, stego_config("toy", batch_size=4, steps=4, code_dim=5))
    train_stego(four, source)
    for name, expected in four.state_dict().items():
        torch.testing.assert_close(StegoModel.load(tmp_path / "best_step4.pt").state_dict()[name], expected, msg=name)


def test_a_resumed_run_keeps_its_curve_and_best_checkpoints(tmp_path):
    source = synthetic_pairs()
    selection = CheckpointSelection(val_freq=1, select_every=2, save_top_k=1)
    seen: list = []
    half = BestCheckpoints(selection, lambda model: fake_validation(model, seen), tmp_path)
    train_stego(StegoModel(8, 3, stego_config("toy", batch_size=4, steps=4, code_dim=5)), source, tmp_path,
                checkpoint_every=2, best=half)
    resumed = BestCheckpoints(selection, lambda model: fake_validation(model, seen), tmp_path)
    train_stego(StegoModel(8, 3, stego_config("toy", batch_size=4, steps=8, code_dim=5)), source, tmp_path,
                checkpoint_every=2, best=resumed)
    assert [point["step"] for point in resumed.curve] == list(range(1, 9)) and resumed.kept == [(30.0, 4)]
    assert [path.name for path in tmp_path.glob("best_step*.pt")] == ["best_step4.pt"]


def synthetic_data() -> StegoData:
    source = synthetic_pairs(n=16)
    val = FeatureSet(source.features[:8], source.labels[:8], None)
    flipped = FeatureSet(source.features[:8].flip(-1), source.labels[:8].flip(-1), None)
    return StegoData(source, val, flipped, None, ["a", "b", "c"])


def test_run_experiment_reports_the_selected_checkpoint_and_the_validation_curve(tmp_path, monkeypatch):
    seen: list = []
    monkeypatch.setattr("course_lib.stego.experiment.validation_scores",
                        lambda model, data: fake_validation(model, seen))
    config = stego_config("toy", batch_size=4, steps=8, code_dim=5, crf=False, attracted_shares=None)
    result = run_experiment(config, synthetic_data(), tmp_path,
                            selection=CheckpointSelection(val_freq=1, select_every=2, save_top_k=2))
    assert result["selected_step"] == 4 and "labelled validation set" in result["selection"]
    assert [point["cluster_mIoU"] for point in result["validation_curve"]] == list(UP_THEN_DOWN.values())
    evaluated, best = StegoModel.load(tmp_path / "stego.pt"), StegoModel.load(tmp_path / "best_step4.pt")
    for name, expected in best.state_dict().items():
        torch.testing.assert_close(evaluated.state_dict()[name], expected, msg=name)
    # without a candidate step (a run shorter than select_every) the last step is evaluated, and said so
    seen.clear()
    short = run_experiment(config, synthetic_data(), tmp_path / "short",
                           selection=CheckpointSelection(val_freq=1, select_every=100))
    assert short["selected_step"] == 8 and short["selection"].startswith("last step (no candidate")


# ----------------------------------------------------------------------------- data as the official loaders


def test_cocostuff_training_images_come_from_stegos_training_list(tmp_path):
    from course_lib.data import prepare_five_crop
    from course_lib.data.cocostuff import STEGO_TRAIN_LIST
    from course_lib.stego.data import full_dataset

    make_stego_cocostuff(tmp_path, "train", n_images=3, size=(24, 32))
    make_stego_cocostuff(tmp_path, "val", n_images=2, size=(24, 32))
    # src/data.py:244-245 (subset=None → Coco164kFull_Stuff_Coarse.txt), :479-484 (train: None, val: 7)
    assert STEGO_TRAIN_LIST == "Coco164kFull_Stuff_Coarse.txt"
    train_list = tmp_path / "cocostuff" / "curated" / "train2017" / STEGO_TRAIN_LIST
    ids = train_list.read_text().split()
    prepare_five_crop("cocostuff27", "train", root=tmp_path)  # the _7 list's 3 images: now stale crops
    train_list.write_text("".join(f"{i}\n" for i in ids[:2]))  # STEGO's list differs from the _7 one
    assert len(full_dataset("cocostuff27", "train", 16, root=tmp_path)) == 2
    assert len(full_dataset("cocostuff27", "val", 16, root=tmp_path)) == 2
    with pytest.raises(DatasetLayoutError, match="delete that folder"):
        full_dataset("cocostuff27", "train", 16, five_crop=True, root=tmp_path)
    (tmp_path / "cropped" / "cocostuff27_five_crop_0.5" / "index" / "train.csv").unlink()
    crops = full_dataset("cocostuff27", "train", 16, five_crop=True, root=tmp_path)
    assert len(crops) == 10 and crops.source_names[::5] == ids[:2]


def test_nearest_resize_matches_pils_nearest_for_image_and_label():
    # src/utils.py:165-183: T.Resize(res, Image.NEAREST) for images and labels alike
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    ids = rng.integers(0, 27, (37, 53)).astype(np.uint8)
    image, label = NearestResize(16)(torch.from_numpy(pixels).permute(2, 0, 1).float() / 255,
                                     torch.from_numpy(ids).long() - 1)
    width = int(16 * 53 / 37)
    expected_image = np.asarray(Image.fromarray(pixels).resize((width, 16), Image.NEAREST))
    expected_label = np.asarray(Image.fromarray(ids).resize((width, 16), Image.NEAREST)).astype(np.int64) - 1
    assert image.shape == (3, 16, width) and label.dtype == torch.int64
    np.testing.assert_array_equal((image * 255).round().byte().permute(1, 2, 0).numpy(), expected_image)
    np.testing.assert_array_equal(label.numpy(), expected_label)


def test_knn_descriptors_drop_whole_channels_as_the_active_dropout2d_of_precompute_knns():
    # src/precompute_knns.py:50-55 (DinoFeaturizer never put in eval mode), modules.py:33 Dropout2d(p=.1),
    # :115-116 (dropout(image_feat) returned); :19 normalize(mean over h, w)
    assert all(config.dropout == 0.1 for config in OFFICIAL_CONFIGS.values())
    means = torch.rand(64, 384) + 0.1
    descriptors = official_knn_descriptors(means, dropout=0.1, seed=0)
    dropped = descriptors == 0
    assert 0.05 < dropped.float().mean() < 0.15 and dropped.any(1).all()
    torch.testing.assert_close(descriptors.norm(dim=1), torch.ones(64))
    kept_means = torch.nn.functional.normalize(means * ~dropped, dim=1)
    torch.testing.assert_close(descriptors, kept_means)
    torch.testing.assert_close(official_knn_descriptors(means, 0.1, seed=0), descriptors)  # seeded
    torch.testing.assert_close(official_knn_descriptors(means, 0.0, seed=0),
                               torch.nn.functional.normalize(means, dim=1))


def test_only_presets_with_a_loader_remain_and_cityscapes_keeps_the_configs_code_dim():
    from course_lib.stego.data import FULL_DATASETS

    assert {dataset for dataset, _ in OFFICIAL_CONFIGS} == set(FULL_DATASETS)
    with pytest.raises(ValueError, match="no STEGO config"):
        stego_config("potsdam")
    # train_config.yml:39 dim: 70 (the released Cityscapes checkpoint has 100: STEGO issue #52)
    assert OFFICIAL_CONFIGS["cityscapes27", "dino_vitb8"].code_dim == 70
