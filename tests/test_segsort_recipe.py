"""SegSort's full VOC recipe against the official code (jyhjinghwang/SegSort, cited as file:line): the preset's
values, the PSPNet head, the parameter groups, the augmentation (coordinates and grid follow the crop), the
multi-scale inference, the official memory bank, the two stages and resume across their boundary."""
from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from course_lib.config import ConfigError
from course_lib.data import VOC2012
from course_lib.data.transforms import IMAGENET_MEAN, scale_flip_pad_crop
from course_lib.segsort import PrototypeMemory, build_embedding_net, grid_segments, vmf_cluster
from course_lib.segsort import inference
from course_lib.segsort import train as segsort_train
from course_lib.segsort.network import PSPHead
from course_lib.segsort.train import (
    SCALE_RANGE,
    VOCSegSortDataset,
    bank_split,
    main,
    parameter_groups,
    per_process_batch,
    resolve_config,
    stages,
    start_second_stage,
)
from fake_datasets import make_voc


@pytest.fixture(autouse=True)
def quiet(monkeypatch, tmp_path):
    monkeypatch.setenv("TQDM_DISABLE", "1")
    monkeypatch.setenv("COURSE_CACHE", str(tmp_path / "cache"))
    for name in ("COURSE_PROFILE", "COURSE_SMOKE", "COURSE_DATA"):
        monkeypatch.delenv(name, raising=False)


def test_full_presets_pin_the_official_values():
    sup = resolve_config("full", supervised=True)
    # bashscripts/voc12/train_segsort.sh:11-17 (BATCH_SIZE=8, TRAIN_INPUT_SIZE=336, WEIGHT_DECAY=5e-4,
    # NUM_STEPS=30000, LEARNING_RATE=2e-3), :58 (train+.txt), :146 (LEARNING_RATE=2e-4), :152 (train.txt)
    assert [(s.split, s.steps, s.lr) for s in stages(sup)] == [("train_aug", 30_000, 2e-3), ("train", 30_000, 2e-4)]
    assert (sup.batch_size, sup.size, sup.weight_decay) == (8, 336, 5e-4)
    # train_segsort.sh:85 / :178: prototypes from train+ after stage 1, from train after stage 2
    assert bank_split(sup) == "train"
    # bashscripts/voc12/train_segsort_unsup.sh:11-17, :51: 10 000 steps at 2e-3, batch 8, 336 crops, train+
    unsup = resolve_config("full")
    assert [(s.split, s.steps, s.lr) for s in stages(unsup)] == [("train_aug", 10_000, 2e-3)]
    assert (unsup.batch_size, unsup.size, bank_split(unsup)) == (8, 336, "train_aug")
    # pyscripts/train/train_segsort.py:50-56 (momentum 0.9, poly power 0.9), :191-193 (L2 on 'weights' only),
    # :202-217 (block5 at lr x10, SGD with momentum)
    for cfg in (sup, unsup):
        assert (cfg.optimizer, cfg.momentum, cfg.head_lr_multiplier, cfg.decay_weights_only) == ("sgd", 0.9, 10.0, True)
        # train_segsort.sh:25-30: CONCENTRATION=10, NUM_BANKS=2, EMBEDDING_DIM=32, NUM_CLUSTERS=5,
        # KMEANS_ITERATIONS=10, K_IN_NEAREST_NEIGHBORS=15
        assert (cfg.concentration, cfg.n_banks, cfg.embedding_dim, cfg.grid, cfg.kmeans_iterations, cfg.k_nearest) \
            == (10.0, 2, 32, 5, 10, 15)
        assert (cfg.memory, cfg.weights, cfg.arch) == ("official", "IMAGENET1K_V1", "resnet101")
        # train_segsort.sh:20-21 (INFERENCE_INPUT_SIZE=480, INFERENCE_STRIDES=320), :221-222 (--flip_aug --scale_aug)
        assert (cfg.inference, cfg.eval_window, cfg.eval_stride) == ("multiscale", 480, 320)
    # seg_models/image_reader.py:25-26: scale uniform in [0.5, 2.0]
    assert SCALE_RANGE == (0.5, 2.0)
    # pyscripts/inference/inference_segsort_msc.py:126: the scales; :138-146: every scale also mirrored
    assert inference.INFERENCE_SCALES == (0.5, 0.75, 1.0, 1.25, 1.5, 1.75) and inference.INFERENCE_FLIP
    # network/segsort/train_utils.py:80: each memory bank holds num_clusters² · batch prototypes
    assert segsort_train.GRID_CELLS_PER_IMAGE == sup.grid ** 2 == 25
    # the toy preset keeps its values: one stage of 8 epochs, Adam, decay on everything, single-scale inference
    toy = resolve_config("toy")
    assert [(s.split, s.steps, s.lr) for s in stages(toy)] == [("train", None, 2e-3)]
    assert (toy.memory, toy.decay_weights_only, toy.inference, toy.epochs, toy.optimizer) == \
        ("batch", False, "single", 8, "adam")


def test_psp_head_is_the_official_block5():
    # seg_models/models/pspnet.py:47-152: four branches avg-pool -> 1x1 conv 512 (no bias) + BN + ReLU,
    # concat [pool1, pool2, pool3, pool6, x], 3x3 conv 512 (no bias) + BN + ReLU, 1x1 conv with bias to D
    head = PSPHead(2048, 32)
    assert [branch[0].output_size for branch in head.branches] == [1, 2, 3, 6]
    for branch in head.branches:
        conv, norm = branch[1], branch[2]
        assert (conv.in_channels, conv.out_channels, conv.kernel_size, conv.bias) == (2048, 512, (1, 1), None)
        # network/common/layers.py:10-11 (epsilon 0.001), pspnet.py:62 (decay 0.99)
        assert (norm.eps, norm.momentum) == (1e-3, pytest.approx(0.01))
    fuse = head.fuse[0]
    assert (fuse.in_channels, fuse.out_channels, fuse.kernel_size, fuse.bias) == (4 * 512 + 2048, 512, (3, 3), None)
    assert (head.classifier.in_channels, head.classifier.out_channels, head.classifier.bias.shape) == (512, 32, (32,))
    x = torch.randn(2, 2048, 42, 42)                 # a 336 crop at output stride 8
    assert head(x).shape == (2, 32, 42, 42)
    # the concatenation puts the map last: the fuse conv's last 2048 input channels are x itself
    seen = []
    head.fuse.register_forward_hook(lambda module, inputs, output: seen.append(inputs[0]))
    head(x)
    assert torch.equal(seen[0][:, -2048:], x)


def test_parameter_groups_put_block5_at_x10_and_decay_weights_only():
    net = build_embedding_net("resnet50", 8, seed=0)
    cfg = resolve_config("full", lr=1e-3, weight_decay=5e-4)
    groups = parameter_groups(net, cfg)
    head_ids = {id(p) for p in net.head.parameters()}
    for group in groups:
        in_head = {id(p) in head_ids for p in group["params"]}
        assert len(in_head) == 1                                   # a group is all head or all body
        assert group["lr"] == pytest.approx(1e-3 * (10 if in_head.pop() else 1))
        decayed = group["weight_decay"] > 0
        assert all((p.ndim > 1) == decayed for p in group["params"])   # conv weights only; no bias, no BN
        assert group["weight_decay"] in (0.0, 5e-4)
    assert sum(len(g["params"]) for g in groups) == len(list(net.parameters()))
    assert any(g["weight_decay"] == 0 and id(g["params"][0]) in head_ids for g in groups)   # head BN / bias
    toy = parameter_groups(build_embedding_net("toy", seed=0), resolve_config("toy"))
    assert [g["weight_decay"] for g in toy] == [1e-4, 1e-4] and [g["lr"] for g in toy] == [2e-3, 2e-3]


def test_augmentation_carries_coordinates_and_pads_as_the_official_reader():
    height, width = 10, 20
    y = (torch.arange(height, dtype=torch.float64) / height)[:, None].expand(height, width)
    x = (torch.arange(width, dtype=torch.float64) / width)[None, :].expand(height, width)
    label = torch.arange(height * width, dtype=torch.float64).reshape(height, width)
    image = torch.rand(3, height, width)
    maps = torch.stack([label, y, x])
    # scale 2 (20x40), no flip, crop 8 at (3, 5): nearest sampling floor(dst / 2) as TF1's resize_nearest_neighbor
    _, out = scale_flip_pad_crop(image, maps, 8, 2.0, False, 3, 5, IMAGENET_MEAN, [-1, -1, -1])
    rows, cols = torch.arange(8)[:, None], torch.arange(8)[None, :]
    assert torch.equal(out[1], (((rows + 3) // 2).double() / height).expand(8, 8))
    assert torch.equal(out[2], (((cols + 5) // 2).double() / width).expand(8, 8))
    # mirrored: the x coordinates of the original image run backwards
    _, flipped = scale_flip_pad_crop(image, maps, 8, 2.0, True, 3, 5, IMAGENET_MEAN, [-1, -1, -1])
    assert torch.equal(flipped[2], (((39 - (cols + 5)) // 2).double() / width).expand(8, 8))
    # scale 0.5 (5x10) inside a 12 crop: padded below / right with the mean colour and the ignore label
    small, padded = scale_flip_pad_crop(image, maps, 12, 0.5, False, 0, 0, IMAGENET_MEAN, [-1, -1, -1])
    assert (padded[0, 5:] == -1).all() and (padded[0, :, 10:] == -1).all() and (padded[0, :5, :10] >= 0).all()
    assert torch.allclose(small[:, 7, 11], torch.tensor(IMAGENET_MEAN))


def test_voc_samples_keep_grid_and_coordinates_of_the_original_image(tmp_path):
    make_voc(tmp_path, "train_aug", n_images=3, size=(40, 55), seed=0)
    dataset = VOCSegSortDataset(VOC2012(tmp_path, "train_aug"), crop=24, prior=None)
    torch.manual_seed(0)
    for index in range(6):
        sample = dataset[index % 3]
        assert sample["image"].shape == (3, 24, 24) and sample["locations"].shape == (2, 24, 24)
        valid = sample["grid"] >= 0
        assert torch.equal(valid, sample["label"] >= 0) or (sample["label"][~valid] == -1).all()
        # the grid id of every pixel is the original 5x5 cell (ceil(40/5)=8, ceil(55/5)=11) of its coordinates
        row = torch.floor(sample["locations"][0] * 40 + 1e-3) // 8
        col = torch.floor(sample["locations"][1] * 55 + 1e-3) // 11
        assert torch.equal(sample["grid"][valid], (row * 5 + col).long()[valid])


def test_vmf_cluster_starts_from_a_given_grid_and_coordinates():
    embeddings = torch.randn(1, 4, 6, 6)
    initial = torch.zeros(1, 6, 6, dtype=torch.long)
    initial[:, :, 3:] = 7
    _, history = vmf_cluster(embeddings, 5, 2, initial=initial, return_history=True)
    assert torch.equal(history[0], initial)
    with pytest.raises(ValueError, match="below 25"):
        vmf_cluster(embeddings, 5, 1, initial=initial + 30)
    locations = torch.zeros(1, 2, 6, 6)                       # no position: only the embedding decides
    same = vmf_cluster(embeddings, 1, 3, locations=locations)
    assert same.unique().tolist() == [0]


def test_window_starts_follow_the_official_linspace():
    # pyscripts/inference/inference_segsort_msc.py:276-288
    assert inference.window_starts(300, 480, 320) == [0]
    assert inference.window_starts(500, 480, 320) == [0, 20]
    assert inference.window_starts(1000, 480, 320) == [0, 260, 520]


class ColourNet(nn.Module):
    """A 1x1 convolution (flip-equivariant) at output stride 1."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Conv2d(3, 4, 1)

    def forward(self, x):
        return self.proj(x)


def test_multiscale_inference_sums_votes_over_the_scales_and_flips(monkeypatch):
    torch.manual_seed(0)
    net = ColourNet()
    half = torch.rand(3, 20, 15)
    image = torch.cat([half, half.flip(-1)], -1)                  # 20x30, mirror-symmetric
    k, n_classes = 3, 4
    bank, bank_classes = torch.randn(12, 4), torch.arange(12) % n_classes
    score = lambda prototypes: segsort_train.F.one_hot(  # noqa: E731
        bank_classes[(prototypes.cpu() @ bank.T).topk(k, 1).indices], n_classes).sum(1)
    seen = []
    original = inference.window_scores
    monkeypatch.setattr(inference, "window_scores", lambda net, view, *args: seen.append(tuple(view.shape[-2:]))
                        or original(net, view, *args))
    scores = inference.multiscale_scores(net, image, score, window=16, stride=8, grid=2, iterations=3, device="cpu")
    assert seen == [(int(20 * s), int(30 * s)) for s in inference.INFERENCE_SCALES for _ in (0, 1)]
    assert scores.shape == (n_classes, 20, 30)
    assert torch.allclose(scores, scores.flip(-1))                # mirrored back before summing
    # with one window per image every pixel gets k votes per scale and flip (bilinear resizing keeps the sum)
    single = inference.multiscale_scores(net, image, score, scales=(1.0, 0.5), flip=True, window=32, stride=32,
                                         grid=2, iterations=3, device="cpu")
    assert torch.allclose(single.sum(0), torch.full((20, 30), 4.0 * k), atol=1e-4)


def test_official_memory_banks_start_random_with_class_zero_and_keep_a_random_subset():
    memory = PrototypeMemory.official(n_banks=2, capacity=6, embedding_dim=4)
    prototypes, classes = memory.contents(torch.zeros(1, 4))
    assert prototypes.shape == (12, 4) and torch.allclose(prototypes.norm(dim=1), torch.ones(12))
    assert classes.tolist() == [0] * 12                           # train_utils.py:312-322
    batch = torch.nn.functional.normalize(torch.randn(10, 4), dim=1)
    memory.push(batch, torch.arange(10))
    kept, kept_classes = memory.banks[-1]
    assert kept.shape == (6, 4) and len(set(kept_classes.tolist())) == 6   # random_shuffle, first M
    assert torch.equal(kept, batch[kept_classes])
    assert torch.equal(memory.banks[0][1], torch.zeros(6, dtype=torch.long))    # the oldest random bank is left
    memory.push(batch[:3], torch.arange(3))                       # fewer than M: all of them
    assert len(memory.banks[-1][1]) == 3 and len(memory.banks) == 2
    restored = PrototypeMemory()
    restored.load_state_dict(memory.state_dict())
    assert restored.capacity == 6 and len(restored) == len(memory)


def test_batch_is_divided_among_processes():
    assert per_process_batch(8, 1) == 8 and per_process_batch(8, 4) == 2
    with pytest.raises(ConfigError, match="divisible by the 3 torchrun processes"):
        per_process_batch(8, 3)


def test_second_stage_reinitialises_the_head_and_its_momentum_only():
    net = build_embedding_net("resnet50", 8, seed=0)
    fresh_head = {k: v.clone() for k, v in net.head.state_dict().items()}
    optimizer = torch.optim.SGD(parameter_groups(net, resolve_config("full")), momentum=0.9)
    net(torch.rand(2, 3, 32, 32)).sum().backward()
    optimizer.step()
    body_before = {k: v.clone() for k, v in net.backbone.state_dict().items()}
    start_second_stage(net, optimizer, seed=0)
    again = build_embedding_net("resnet50", 8, seed=1)
    start_second_stage(again, torch.optim.SGD(again.parameters(), lr=0.1), seed=0)
    for key, value in net.head.state_dict().items():           # the same draw on every process (seeded)
        assert torch.equal(value, again.head.state_dict()[key]), key
    assert any(not torch.equal(v, fresh_head[k]) for k, v in net.head.state_dict().items() if "weight" in k)
    assert all(torch.equal(v, body_before[k]) for k, v in net.backbone.state_dict().items())
    assert all(p not in optimizer.state for p in net.head.parameters())
    assert all(p in optimizer.state for p in net.backbone.parameters() if p.grad is not None)


def _voc_root(tmp_path):
    for split, seed in (("train_aug", 0), ("train", 1), ("val", 2)):
        make_voc(tmp_path / "data", split, n_images=4, size=(36, 44), seed=seed)
    return tmp_path / "data"


def test_two_stages_in_one_command_resume_across_the_boundary(tmp_path, monkeypatch):
    args = ["--profile", "full", "--supervised", "--data-root", str(_voc_root(tmp_path)), "--arch", "resnet50",
            "--weights", "none", "--size", "32", "--batch-size", "2", "--steps", "2", "--stage2-steps", "2",
            "--n-train", "4", "--num-workers", "0", "--no-eval", "--device", "cpu", "--threads", "1"]
    whole = main([*args, "--out", str(tmp_path / "whole")])
    state = torch.load(tmp_path / "whole" / "checkpoint.pt", weights_only=True)
    assert (state["stage"], state["epoch"], len(whole["losses"])) == (1, 1, 2)
    assert {g["initial_lr"] for g in state["optimizer"]["param_groups"]} == {2e-4, 2e-3}   # stage 2: 2e-4, x10 head
    config = json.loads((tmp_path / "whole" / "config.json").read_text())
    assert [s["lr"] for s in config["recipe"]["stages"]] == [2e-3, 2e-4]

    def interrupted(*_):
        raise KeyboardInterrupt
    monkeypatch.setattr(segsort_train, "start_second_stage", interrupted)     # stop right at the boundary
    with pytest.raises(KeyboardInterrupt):
        main([*args, "--out", str(tmp_path / "cut")])
    assert torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=True)["stage"] == 0
    monkeypatch.undo()
    monkeypatch.setenv("TQDM_DISABLE", "1")
    resumed = main([*args, "--out", str(tmp_path / "cut")])
    assert resumed["losses"] == whole["losses"]
    final = torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=True)
    assert all(torch.equal(value, state["net"][key]) for key, value in final["net"].items())
    with pytest.raises(ConfigError, match="stage 2, more than the 1 asked"):   # never evaluated as a 1-stage run
        segsort_train.train(resolve_config("full", supervised=True, data_root=str(tmp_path / "data"), arch="resnet50",
                                           weights=None, size=32, batch_size=2, steps=2, stage2_steps=0, n_train=4,
                                           num_workers=0), tmp_path / "cut", torch.device("cpu"))


def test_supervised_loss_starts_from_the_carried_grid(tmp_path, monkeypatch):
    make_voc(tmp_path, "train_aug", n_images=2, size=(40, 48), seed=0)
    cfg = resolve_config("full", supervised=True, arch="resnet50", weights=None, size=32)
    batch = torch.utils.data.default_collate([VOCSegSortDataset(VOC2012(tmp_path, "train_aug"), 32, None)[i]
                                              for i in range(2)])
    calls = []
    original = segsort_train.vmf_cluster
    monkeypatch.setattr(segsort_train, "vmf_cluster", lambda *a, **k: calls.append(k) or original(*a, **k))
    net = build_embedding_net("resnet50", 32, seed=0)
    loss = segsort_train.batch_loss(net, batch, cfg, segsort_train.make_memory(cfg, 2), torch.device("cpu"))
    assert torch.isfinite(loss)
    assert calls[0]["initial"].shape == (2, 4, 4) and calls[0]["locations"].shape == (2, 2, 4, 4)
    assert math.isclose(float(calls[0]["locations"].max()), float(batch["locations"].max()), rel_tol=0.2)
    assert grid_segments(5, 40, 48).max() == 24
