"""STEGO training and evaluation: batches of pairs, exact resume, flip-averaged evaluation, the CLI."""
from __future__ import annotations

import json

import pytest
import torch

from course_lib.stego import (
    CachedPairs,
    EvalBatch,
    StegoModel,
    evaluate_stego,
    flip_averaged_codes,
    global_descriptors,
    knn_table,
    stego_config,
    train_stego,
)
from course_lib.stego.data import PairBatchSampler
from course_lib.stego.train import main as train_main

from fake_datasets import make_cocostuff


def make_stego_cocostuff(root, split: str, **kwargs):
    """:func:`make_cocostuff` plus, for ``train``, STEGO's training list ``Coco164kFull_Stuff_Coarse.txt``
    (the same images as the ``_7`` list the fake writes)."""
    from course_lib.data.cocostuff import CURATED_LIST, STEGO_TRAIN_LIST

    fake = make_cocostuff(root, split, **kwargs)
    if split == "train":
        folder = root / "cocostuff" / "curated" / "train2017"
        (folder / STEGO_TRAIN_LIST).write_text((folder / CURATED_LIST).read_text())
    return fake


pytestmark = pytest.mark.usefixtures("one_thread")


def synthetic_pairs(n: int = 24, classes: int = 3, seed: int = 0) -> CachedPairs:
    """4×4 feature maps whose left and right halves carry one of ``classes`` prototypes each, plus noise;
    labels at 16×16."""
    generator = torch.Generator().manual_seed(seed)
    prototypes = torch.randn(classes, 8, generator=generator) * 3
    halves = torch.randint(classes, (n, 2), generator=generator)
    patch_labels = halves.repeat_interleave(2, 1)[:, None, :].expand(n, 4, 4)
    features = prototypes[patch_labels].permute(0, 3, 1, 2) + 0.3 * torch.randn(n, 8, 4, 4, generator=generator)
    labels = patch_labels.repeat_interleave(4, 1).repeat_interleave(4, 2)
    return CachedPairs(features, labels, knn_table(global_descriptors(features), k=min(10, n)))


def test_pair_batches_split_each_epoch_between_processes_and_resume_exactly():
    table = knn_table(global_descriptors(torch.randn(20, 4, 2, 2)), k=10)
    ranks = [list(PairBatchSampler(table, 7, 4, steps=4, seed=3, rank=r, world_size=2)) for r in range(2)]
    first_epoch = [pair[0] for rank in ranks for batch in rank[:2] for pair in batch]
    assert len(first_epoch) == 16 and len(set(first_epoch)) == 16  # 2 batches × 4 per process, disjoint
    assert all(pair[0] != pair[1] for rank in ranks for batch in rank for pair in batch)
    resumed = list(PairBatchSampler(table, 7, 4, steps=4, seed=3, rank=1, world_size=2, start_step=3))
    assert resumed == ranks[1][3:]
    with pytest.raises(ValueError, match="one batch"):
        PairBatchSampler(table, 7, 16, steps=1, world_size=2)


def test_training_resumes_to_exactly_the_uninterrupted_weights(tmp_path):
    source = synthetic_pairs()
    config = stego_config("toy", batch_size=4, steps=4, code_dim=5)
    straight = StegoModel(8, 3, config)
    train_stego(straight, source)
    halfway = StegoModel(8, 3, stego_config("toy", batch_size=4, steps=2, code_dim=5))
    train_stego(halfway, source, tmp_path)
    resumed = StegoModel(8, 3, config)
    history = train_stego(resumed, source, tmp_path)
    assert len(history) == 4
    for (name, expected), actual in zip(straight.state_dict().items(), resumed.state_dict().values()):
        torch.testing.assert_close(actual, expected, msg=name)
    with pytest.raises(ValueError, match="another configuration"):
        train_stego(StegoModel(8, 3, stego_config("toy", batch_size=4, steps=4, code_dim=6)), source, tmp_path)


def test_a_gradient_step_lowers_the_correlation_loss_of_the_batch():
    source = synthetic_pairs(n=12)
    config = stego_config("toy", batch_size=12, code_dim=6, dropout=0.0)
    model = StegoModel(8, 3, config)
    features, labels = source.features, source.labels
    partners = source.features[source.table[:, 1]]

    def correlation() -> torch.Tensor:  # the same grids and negatives every time
        return model(features, partners, labels, torch.Generator().manual_seed(0))["correlation"]

    before = correlation()
    before.backward()
    with torch.no_grad():
        for parameter in model.head.parameters():
            parameter -= 1e-2 * parameter.grad
    assert correlation().item() < before.item()


def test_the_probes_learn_alongside_the_head():
    source = synthetic_pairs(n=32)
    model = StegoModel(8, 3, stego_config("toy", batch_size=8, steps=40, code_dim=6, lr=0.0,  # head frozen
                                          cluster_init="random"))
    history = train_stego(model, source)
    for key in ("linear", "cluster"):
        assert sum(h[key] for h in history[-10:]) < sum(h[key] for h in history[:10])


def test_flip_averaged_codes_of_a_mirror_symmetric_input_equal_the_plain_codes():
    model = StegoModel(8, 3, stego_config("toy", code_dim=5)).eval()
    features = torch.randn(2, 8, 4, 4)
    features = features + features.flip(-1)  # symmetric: its flip is itself
    torch.testing.assert_close(flip_averaged_codes(model, features, features), model.head(features))
    other = torch.randn(2, 8, 4, 4)
    expected = (model.head(other) + model.head(other.flip(-1)).flip(-1)) / 2
    torch.testing.assert_close(flip_averaged_codes(model, other, other.flip(-1)), expected)


def test_evaluate_stego_scores_with_and_without_crf():
    source = synthetic_pairs(n=16)
    model = StegoModel(8, 3, stego_config("toy", code_dim=6)).eval()
    features, labels = source.features, source.labels
    codes = flip_averaged_codes(model, features, features.flip(-1))
    model.linear_probe.fit(codes, labels, epochs=30, batch_size=4, device="cpu")
    model.cluster_probe.fit(codes, epochs=10, batch_size=4, device="cpu")
    images = (labels[..., None].expand(-1, -1, -1, 3) * 80).to(torch.uint8)  # label-coloured images
    batches = [EvalBatch(features[:8], features[:8].flip(-1), images[:8], labels[:8]),
               EvalBatch(features[8:], features[8:].flip(-1), images[8:], labels[8:])]
    metrics, predictions = evaluate_stego(model, batches, 3, crf=True, crf_workers=1, keep_predictions=True)
    for key in ("cluster_mIoU", "linear_mIoU", "cluster_mIoU_no_crf", "linear_accuracy_crf"):
        assert 0 <= metrics[key] <= 100
    # separable prototypes: both probes find them (the random head keeps them apart)
    assert metrics["linear_accuracy_no_crf"] > 80 and metrics["cluster_accuracy_no_crf"] > 80
    assert metrics["cluster_mIoU"] == metrics["cluster_mIoU_crf"]
    assert predictions.cluster.shape == predictions.cluster_crf.shape == (16, 16, 16)
    assert sorted(metrics["cluster_assignment"]) == [0, 1, 2]


def test_cli_toy_run_with_ablations(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TQDM_DISABLE", "1")
    out = tmp_path / "run"
    metrics = train_main(["--out", str(out), "--n-train", "10", "--n-val", "4", "--size", "64", "--steps", "2",
                          "--batch-size", "4", "--crf-workers", "1", "--threads", "1"])
    saved = json.loads((out / "metrics.json").read_text())
    for key in ("cluster_mIoU", "cluster_accuracy", "linear_mIoU", "linear_accuracy", "baseline_kmeans_mIoU"):
        assert 0 <= saved[key] <= 100 and saved[key] == metrics[key]
    variants = [row["variant"] for row in saved["ablations"]]
    assert variants == ["STEGO", "no 0-clamp", "no spatial centering", "no kNN term", "no CRF", "five-crop",
                        "k-means on features"]
    assert (out / "stego.pt").is_file() and (out / "loss_curves.png").is_file() and len(saved["history"]) == 2
    assert saved["ablations"][4]["cluster_mIoU"] == saved["cluster_mIoU_no_crf"]
    assert (out / "ablations" / "fivecrop" / "result.json").is_file()


def test_cli_full_scale_path_trains_on_the_fly_on_a_fake_cocostuff(tmp_path, monkeypatch):
    for split in ("train", "val"):
        make_stego_cocostuff(tmp_path / "data", split=split, n_images=4, size=(24, 32), seed=0 if split == "train" else 9)
    monkeypatch.setenv("COURSE_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("COURSE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TQDM_DISABLE", "1")
    out = tmp_path / "full"
    metrics = train_main(["--out", str(out), "--profile", "full", "--dataset", "cocostuff27", "--backbone", "toy_vit",
                          "--no-five-crop", "--resolution", "32", "--val-resolution", "40", "--steps", "2",
                          "--batch-size", "2", "--crf-workers", "1", "--threads", "1"])
    assert metrics["n_classes"] == 27 and metrics["config"]["b_rand"] == 0.66 and metrics["ablations"] is None
    assert 0 <= metrics["cluster_mIoU"] <= 100 and 0 <= metrics["baseline_kmeans_mIoU"] <= 100
    assert (tmp_path / "cache" / "stego" / "knn").is_dir()


def test_full_dataset_reads_the_prepared_five_crops(tmp_path):
    from course_lib.data import prepare_five_crop
    from course_lib.stego.data import full_dataset

    make_stego_cocostuff(tmp_path, split="train", n_images=2, size=(24, 32))
    prepare_five_crop("cocostuff27", "train", root=tmp_path)
    crops = full_dataset("cocostuff27", "train", 16, five_crop=True, root=tmp_path)
    assert len(crops) == 10 and crops[3]["image"].shape == (3, 16, 16) and crops[3]["label"].shape == (16, 16)


def test_calibrated_shifts_attract_the_requested_shares():
    from course_lib.stego.correlation import feature_correspondence
    from course_lib.stego.diagnostics import calibrate_shifts

    source = synthetic_pairs(n=24)
    config = calibrate_shifts(stego_config("toy", attracted_shares=(0.3, 0.2, 0.05)), source.features, source.table)
    assert config.attracted_shares == (0.3, 0.2, 0.05)
    self_values = feature_correspondence(source.features, source.features)
    assert abs(float((self_values > config.b_self).float().mean()) - 0.3) < 0.02
    more = calibrate_shifts(stego_config("toy", attracted_shares=(0.5, 0.5, 0.5)), source.features, source.table)
    fewer = calibrate_shifts(stego_config("toy", attracted_shares=(0.1, 0.1, 0.1)), source.features, source.table)
    assert fewer.b_self > more.b_self and fewer.b_knn > more.b_knn and fewer.b_rand > more.b_rand
    assert calibrate_shifts(stego_config("toy", attracted_shares=None), source.features, source.table).b_self \
        == stego_config("toy").b_self
    with pytest.raises(ValueError, match="attracted_shares"):
        stego_config("toy", attracted_shares=(0.3, 1.2, 0.1))


def test_kmeans_plus_plus_seeding_puts_every_cluster_probe_centre_on_a_code():
    from course_lib.stego.trainer import seed_cluster_probe

    source = synthetic_pairs(n=8)
    model = StegoModel(8, 3, stego_config("toy", code_dim=6))
    seed_cluster_probe(model, source.features, seed=0)
    codes = torch.nn.functional.normalize(model.head(source.features), dim=1).permute(0, 2, 3, 1).reshape(-1, 6)
    centres = torch.nn.functional.normalize(model.cluster_probe.clusters, dim=1)
    assert ((centres @ codes.T).max(1).values > 1 - 1e-5).all()  # each centre is one of the codes
    similarity = centres @ centres.T
    assert (similarity - torch.eye(3)).max() < 1 - 1e-4  # three distinct centres


def test_under_bf16_autocast_the_head_runs_in_bf16_and_the_losses_in_float32():
    source = synthetic_pairs(n=8)
    model = StegoModel(8, 3, stego_config("toy", batch_size=8, code_dim=6, dropout=0.0))
    features, partners = source.features, source.features[source.table[:, 1]]
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        assert model.head(features).dtype == torch.bfloat16  # autocast is really on for the head
        mixed = model(features, partners, source.labels, torch.Generator().manual_seed(0))
    plain = model(features, partners, source.labels, torch.Generator().manual_seed(0))
    for key, value in mixed.items():
        assert value.dtype == torch.float32, key
        torch.testing.assert_close(value, plain[key], atol=0.05, rtol=0.05, msg=key)  # bf16 head, fp32 losses
    history = train_stego(StegoModel(8, 3, stego_config("toy", batch_size=4, steps=2, code_dim=6)), source, amp=True)
    assert len(history) == 2 and all(torch.isfinite(torch.tensor(list(h.values()))).all() for h in history)
