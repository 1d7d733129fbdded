"""The SegSort training CLI: a tiny toy run, resume, the supervised variant, the VOC route on fake data, the
shared CLI convention (--print-config, --max-steps, default run folder), COURSE_SMOKE, and the ImageNet ResNet
weights read from COURSE_CACHE/weights (never downloaded)."""
from __future__ import annotations

import json

import pytest
import torch
import torchvision

from course_lib.cli import run_cli
from course_lib.config import ConfigError
from course_lib.data.hub import weights_path
from course_lib.models.resnet import build_resnet, load_imagenet_weights
from course_lib.segsort import PrototypeMemory, build_embedding_net, grid_segments, load_embedding_net
from course_lib.segsort.train import batch_loss, main, parse_args, resolve_config, train
from fake_datasets import make_voc

TINY = ["--n-train", "16", "--n-val", "4", "--size", "64", "--batch-size", "8", "--eval-batch-size", "8",
        "--device", "cpu", "--threads", "1"]
METRIC_KEYS = {"knn_mIoU", "knn_accuracy", "knn_untrained_mIoU", "knn_untrained_accuracy",
               "label_free_mIoU", "label_free_accuracy", "label_free_untrained_mIoU"}


@pytest.fixture(autouse=True)
def quiet(monkeypatch, tmp_path):
    monkeypatch.setenv("TQDM_DISABLE", "1")
    monkeypatch.setenv("COURSE_CACHE", str(tmp_path / "cache"))
    for name in ("COURSE_PROFILE", "COURSE_SMOKE", "COURSE_DATA"):   # restored after the test (--data-root sets it)
        monkeypatch.delenv(name, raising=False)


def adam_steps(run_dir) -> int:
    """Optimisation steps taken, as the checkpoint's optimizer counted them."""
    state = torch.load(run_dir / "checkpoint.pt", weights_only=False)["optimizer"]["state"]
    return int(state[0]["step"])


def test_toy_run_writes_metrics_and_resumes(tmp_path, capsys):
    metrics = main(["--profile", "toy", "--out", str(tmp_path), "--epochs", "1", *TINY])
    assert METRIC_KEYS <= metrics.keys() and len(metrics["losses"]) == 1
    assert all(0 <= metrics[key] <= 100 for key in METRIC_KEYS)
    assert json.loads((tmp_path / "metrics.json").read_text())["knn_mIoU"] == metrics["knn_mIoU"] == metrics["mIoU"]
    assert json.loads((tmp_path / "config.json").read_text())["n_train"] == 16
    net, config = load_embedding_net(tmp_path / "segsort.pt")
    assert config["arch"] == "toy" and config["train_config"]["n_train"] == 16
    again = main(["--out", str(tmp_path), "--eval-only", *TINY])       # deterministic evaluation
    assert again["knn_mIoU"] == metrics["knn_mIoU"] and again["label_free_mIoU"] == metrics["label_free_mIoU"]
    capsys.readouterr()
    (tmp_path / "metrics.json").unlink()  # as if interrupted after the last checkpoint: the same command resumes
    resumed = main(["--profile", "toy", "--out", str(tmp_path), "--epochs", "1", *TINY])
    assert "resuming" in capsys.readouterr().out
    assert resumed["losses"] == metrics["losses"] and resumed["knn_mIoU"] == metrics["knn_mIoU"]
    # a different configuration must not silently continue (or replace) the finished run
    with pytest.raises(ValueError, match=r"another configuration \(epochs: 1 -> 2; lr: 0.002 -> 0.1"):
        main(["--out", str(tmp_path), "--epochs", "2", "--lr", "0.1", *TINY])


def test_supervised_variant_trains(tmp_path):
    metrics = main(["--out", str(tmp_path), "--epochs", "1", "--supervised", "--no-eval", *TINY])
    assert metrics["config"]["supervised"] and torch.isfinite(torch.tensor(metrics["losses"])).all()


def test_full_profile_defaults_and_bad_arguments():
    cfg, _ = parse_args(["--profile", "full", "--out", "x"])
    assert (cfg.dataset, cfg.arch, cfg.optimizer, cfg.weights) == ("voc2012", "resnet101", "sgd", "IMAGENET1K_V1")
    assert parse_args(["--profile", "full", "--out", "x", "--weights", "none"])[0].weights is None
    with pytest.raises(SystemExit):
        parse_args(["--out", "x", "--prior", "watershed"])
    cfg, _ = parse_args(["--out", "x", "--world-kind", "objects", "--world-version", "2"])
    assert (cfg.world_kind, cfg.world_version) == ("objects", 2)
    for bad in (["--world-kind", "streets"], ["--world-version", "3"]):
        with pytest.raises(SystemExit):
            parse_args(["--out", "x", *bad])


def test_a_checkpoint_from_before_the_world_fields_resumes_as_world_1_scenes(tmp_path):
    tiny = dict(n_train=16, n_val=4, size=64, batch_size=8, epochs=1)
    train(resolve_config("toy", **tiny), tmp_path, torch.device("cpu"))
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    for name in ("world_kind", "world_version"):
        del state["config"][name]
    torch.save(state, tmp_path / "checkpoint.pt")
    _, losses = train(resolve_config("toy", **{**tiny, "epochs": 2}), tmp_path, torch.device("cpu"))
    assert len(losses) == 2 and losses[0] == state["losses"][0]  # resumed, not started again
    with pytest.raises(ConfigError, match="another configuration"):
        train(resolve_config("toy", **{**tiny, "epochs": 3, "world_version": 2}), tmp_path, torch.device("cpu"))


def test_voc_route_on_a_fake_dataset(tmp_path):
    make_voc(tmp_path / "data", "train_aug", n_images=2, size=(40, 48), seed=0)
    make_voc(tmp_path / "data", "val", n_images=2, size=(36, 44), seed=1)
    metrics = main(["--profile", "full", "--data-root", str(tmp_path / "data"), "--out", str(tmp_path / "run"),
                    "--arch", "resnet50", "--weights", "none", "--size", "32", "--batch-size", "2", "--steps", "1",
                    "--num-workers", "0", "--k-nearest", "1", "--eval-window", "32", "--eval-stride", "32",
                    "--device", "cpu", "--threads", "1"])
    assert METRIC_KEYS <= metrics.keys() and metrics["config"]["dataset"] == "voc2012"
    assert json.loads((tmp_path / "run" / "config.json").read_text())["arch"] == "resnet50"


def test_print_config_resolves_everything_and_runs_nothing(tmp_path, capsys, monkeypatch):
    printed = main(["--profile", "full", "--print-config"])     # no VOC, no weights: nothing is loaded
    shown = json.loads(capsys.readouterr().out)
    assert shown["out"] == str(tmp_path / "cache" / "runs" / "segsort_voc2012_resnet101") == str(printed["out"])
    assert (shown["arch"], shown["size"], shown["n_train"], shown["smoke"]) == ("resnet101", 336, None, False)
    assert not (tmp_path / "cache").exists()
    monkeypatch.setenv("COURSE_SMOKE", "1")
    main(["--profile", "full", "--print-config", "--size", "80", "--seed", "3"])
    smoke = json.loads(capsys.readouterr().out)
    assert (smoke["n_train"], smoke["n_val"], smoke["epochs"], smoke["smoke"]) == (4, 2, 1, True)
    assert (smoke["size"], smoke["seed"]) == (80, 3)                   # flags win over the smoke sizes
    main(["--print-config"])
    assert json.loads(capsys.readouterr().out)["out"].endswith("segsort_toy_toy")


def test_max_steps_and_the_smoke_switch_cap_the_optimisation_steps(tmp_path, monkeypatch):
    small = [arg if arg != "8" else "4" for arg in TINY]               # batches of 4: 4 steps per epoch
    main(["--out", str(tmp_path / "capped"), "--epochs", "2", "--max-steps", "3", "--no-eval", *small])
    assert adam_steps(tmp_path / "capped") == 3
    monkeypatch.setenv("COURSE_SMOKE", "1")
    metrics = main(["--out", str(tmp_path / "smoke"), "--epochs", "2", "--no-eval", *small])
    assert adam_steps(tmp_path / "smoke") == 2 and len(metrics["losses"]) == 1


def test_missing_weights_stop_at_once_with_the_fetch_command(tmp_path, capsys):
    make_voc(tmp_path / "data", "train_aug", n_images=2, size=(40, 48), seed=0)
    make_voc(tmp_path / "data", "val", n_images=2, size=(36, 44), seed=1)
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as stopped:
        run_cli(main, ["--profile", "full", "--data-root", str(tmp_path / "data"), "--out", str(out)])
    assert stopped.value.code == 2
    error = capsys.readouterr().err
    assert "python data_scripts/get_weights.py --model resnet101" in error and "Traceback" not in error
    assert not out.exists()                                             # stopped before anything ran
    with pytest.raises(SystemExit) as stopped:                          # and VOC names its own fetch command
        run_cli(main, ["--profile", "full", "--data-root", str(tmp_path / "nothing"), "--out", str(out)])
    assert stopped.value.code == 2 and "python data_scripts/get_voc.py" in capsys.readouterr().err


def test_imagenet_weights_load_strictly_from_the_cache_and_never_download(tmp_path, monkeypatch):
    def no_download(*args, **kwargs):
        raise AssertionError("the course must never download weights from inside a model")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_download)
    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", no_download)
    torch.manual_seed(1)
    reference = torchvision.models.resnet50(weights=None).state_dict()
    path = weights_path("resnet50")
    assert path == tmp_path / "cache" / "weights" / "resnet50-0676ba61.pth"
    path.parent.mkdir(parents=True)
    torch.save(reference, path)
    net = build_embedding_net("resnet50", embedding_dim=8, weights="IMAGENET1K_V1", seed=0)
    assert torch.equal(net.backbone[0].weight, reference["conv1.weight"])             # conv1
    assert torch.equal(net.backbone[7][2].conv3.weight, reference["layer4.2.conv3.weight"])
    backbone = load_imagenet_weights(build_resnet("resnet50"), "resnet50")             # no fc: dropped
    assert torch.equal(backbone.layer1[0].bn1.running_mean, reference["layer1.0.bn1.running_mean"])
    torch.save({k: v for k, v in reference.items() if k != "layer4.2.conv3.weight"}, path)
    with pytest.raises(RuntimeError, match="layer4.2.conv3.weight"):                  # strict load
        build_embedding_net("resnet50", weights="IMAGENET1K_V1")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_a_cuda_training_step_runs_the_network_in_bf16_and_the_loss_in_float32():
    net = build_embedding_net("toy", seed=0).cuda()
    head_dtypes = []
    net.head.register_forward_hook(lambda module, inputs, output: head_dtypes.append(output.dtype))
    batch = {"image": torch.rand(2, 3, 64, 64), "segments": grid_segments(4, 64, 64).expand(2, -1, -1)}
    loss = batch_loss(net, batch, resolve_config("toy"), PrototypeMemory(), torch.device("cuda"))
    assert head_dtypes == [torch.bfloat16] and loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
