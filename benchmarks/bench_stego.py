"""STEGO training-step throughput: cached frozen features against recomputing the backbone every step.

    python benchmarks/bench_stego.py [--backbone toy_vit] [--size 96] [--batch-size 16] [--steps 20]
                                     [--threads 1] [--gpu-steps 20]

Part 1 (any machine) times one STEGO training step (head + probes forward/backward and the Adam update)
on the same batch of toy-world images and their kNN partners, (a) reading the frozen backbone's
features from a cache (a tensor, as :class:`course_lib.stego.CachedPairs` does) and (b) running the
frozen backbone on both image batches at every step (as :class:`course_lib.stego.OnlinePairs` does),
and prints steps/second of both and their ratio, measured in this run.

Part 2 (only when CUDA is available) times the on-the-fly step for ViT-S/8 (random weights: the speed
does not depend on them) at 224 px, batch 16 (+16 partners), with the backbone and the head under bf16
autocast against fp32, and prints both step times and the ratio.
"""
from __future__ import annotations

import argparse
import time

import torch

from course_lib.data import ToyWorld
from course_lib.models import load_backbone
from course_lib.models.features import run_backbone
from course_lib.stego import StegoModel, stego_config


def time_steps(step, steps: int, device: torch.device) -> float:
    """Seconds per call of ``step`` (after two warm-up calls)."""
    for _ in range(2):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - start) / steps


def make_step(model: StegoModel, features_fn, labels: torch.Tensor, amp: bool, device: torch.device):
    """One training step whose features come from ``features_fn()`` → (features, partner features)."""
    optimizer = model.optimizer()
    generator = torch.Generator().manual_seed(0)

    def step() -> None:
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp):
            features, partners = features_fn()
            losses = model(features, partners, labels, generator)
        optimizer.zero_grad(set_to_none=True)
        losses["total"].backward()
        optimizer.step()

    return step


def cached_versus_recomputed(args: argparse.Namespace) -> None:
    device = torch.device("cpu")
    world = ToyWorld("scenes", "train", n_images=2 * args.batch_size, size=args.size)
    images = torch.stack([world[i]["image"] for i in range(len(world))])
    labels = torch.stack([world[i]["label"] for i in range(args.batch_size)])
    anchors, partners = images[:args.batch_size], images[args.batch_size:]
    backbone = load_backbone(args.backbone, device=device)
    with torch.no_grad():
        cached = (run_backbone(backbone, anchors, device), run_backbone(backbone, partners, device))
    config = stego_config("toy", batch_size=args.batch_size)
    model = StegoModel(cached[0].shape[1], world.num_classes, config).train()
    seconds_cached = time_steps(make_step(model, lambda: cached, labels, False, device), args.steps, device)
    recompute = lambda: (run_backbone(backbone, anchors, device), run_backbone(backbone, partners, device))  # noqa: E731
    seconds_online = time_steps(make_step(model, recompute, labels, False, device), args.steps, device)
    print(f"[CPU, {torch.get_num_threads()} thread(s)] {args.backbone}, {args.size} px, batch {args.batch_size} "
          f"(+{args.batch_size} kNN partners), {args.steps} steps")
    print(f"  cached features      {1 / seconds_cached:8.2f} steps/s  ({1000 * seconds_cached:7.1f} ms/step)")
    print(f"  backbone every step  {1 / seconds_online:8.2f} steps/s  ({1000 * seconds_online:7.1f} ms/step)")
    print(f"  ratio (cached / recomputed throughput): {seconds_online / seconds_cached:.2f}x")


def bf16_versus_fp32(args: argparse.Namespace) -> None:
    device = torch.device("cuda")
    backbone = load_backbone("dino_vits8", device=device, random_init=True)
    images = torch.rand(2 * 16, 3, 224, 224, device=device)
    labels = torch.randint(0, 27, (16, 224, 224), device=device)
    model = StegoModel(backbone.embed_dim, 27, stego_config("cocostuff27", "dino_vits8")).to(device).train()

    def features(amp: bool):
        def compute():
            with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
                both = backbone.patch_features(images)
            return both[:16].float(), both[16:].float()
        return compute

    seconds = {amp: time_steps(make_step(model, features(amp), labels, amp, device), args.gpu_steps, device)
               for amp in (False, True)}
    print(f"[{torch.cuda.get_device_name(device)}] ViT-S/8, 224 px, batch 16 (+16 partners), on-the-fly step")
    print(f"  fp32  {1000 * seconds[False]:7.1f} ms/step")
    print(f"  bf16  {1000 * seconds[True]:7.1f} ms/step")
    print(f"  ratio (fp32 / bf16 step time): {seconds[False] / seconds[True]:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default="toy_vit")
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--gpu-steps", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cached_versus_recomputed(args)
    if torch.cuda.is_available():
        bf16_versus_fp32(args)
    else:
        print("no CUDA device: the bf16 / fp32 comparison of ViT-S/8 at 224 px needs a GPU")


if __name__ == "__main__":
    main()
