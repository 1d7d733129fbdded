"""The SegSort training CLI: a tiny toy run, resume, the supervised variant, the VOC route on fake data."""
from __future__ import annotations

import json

import pytest
import torch

from course_lib.segsort import load_embedding_net
from course_lib.segsort.train import main, parse_args
from fake_datasets import make_voc

TINY = ["--n-train", "16", "--n-val", "4", "--size", "64", "--batch-size", "8", "--eval-batch-size", "8",
        "--device", "cpu", "--threads", "1"]
METRIC_KEYS = {"knn_mIoU", "knn_accuracy", "knn_untrained_mIoU", "knn_untrained_accuracy",
               "label_free_mIoU", "label_free_accuracy", "label_free_untrained_mIoU"}


@pytest.fixture(autouse=True)
def quiet(monkeypatch):
    monkeypatch.setenv("TQDM_DISABLE", "1")


def test_toy_run_writes_metrics_and_resumes(tmp_path, capsys):
    metrics = main(["--profile", "toy", "--out", str(tmp_path), "--epochs", "1", *TINY])
    assert METRIC_KEYS <= metrics.keys() and len(metrics["losses"]) == 1
    assert all(0 <= metrics[key] <= 100 for key in METRIC_KEYS)
    assert json.loads((tmp_path / "metrics.json").read_text())["knn_mIoU"] == metrics["knn_mIoU"]
    net, config = load_embedding_net(tmp_path / "segsort.pt")
    assert config["arch"] == "toy" and config["train_config"]["n_train"] == 16
    again = main(["--out", str(tmp_path), "--eval-only", *TINY])       # deterministic evaluation
    assert again["knn_mIoU"] == metrics["knn_mIoU"] and again["label_free_mIoU"] == metrics["label_free_mIoU"]
    capsys.readouterr()
    resumed = main(["--out", str(tmp_path), "--epochs", "2", "--no-eval", *TINY])
    assert "resuming" in capsys.readouterr().out
    assert len(resumed["losses"]) == 2 and resumed["losses"][0] == metrics["losses"][0]
    # a different configuration must not silently continue an old checkpoint
    with pytest.raises(ValueError, match="another configuration"):
        main(["--out", str(tmp_path), "--epochs", "2", "--lr", "0.1", "--no-eval", *TINY])


def test_supervised_variant_trains(tmp_path):
    metrics = main(["--out", str(tmp_path), "--epochs", "1", "--supervised", "--no-eval", *TINY])
    assert metrics["config"]["supervised"] and torch.isfinite(torch.tensor(metrics["losses"])).all()


def test_full_profile_defaults_and_bad_arguments():
    cfg, _ = parse_args(["--profile", "full", "--out", "x"])
    assert (cfg.dataset, cfg.arch, cfg.optimizer, cfg.weights) == ("voc2012", "resnet101", "sgd", "IMAGENET1K_V1")
    assert parse_args(["--profile", "full", "--out", "x", "--weights", "none"])[0].weights is None
    with pytest.raises(SystemExit):
        parse_args(["--out", "x", "--prior", "watershed"])


def test_voc_route_on_a_fake_dataset(tmp_path):
    make_voc(tmp_path / "data", "train_aug", n_images=2, size=(40, 48), seed=0)
    make_voc(tmp_path / "data", "val", n_images=2, size=(36, 44), seed=1)
    metrics = main(["--profile", "full", "--data-root", str(tmp_path / "data"), "--out", str(tmp_path / "run"),
                    "--arch", "resnet50", "--weights", "none", "--size", "32", "--batch-size", "2", "--epochs", "1",
                    "--num-workers", "0", "--k-nearest", "1", "--device", "cpu", "--threads", "1"])
    assert METRIC_KEYS <= metrics.keys() and metrics["config"]["dataset"] == "voc2012"
