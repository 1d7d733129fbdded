"""Checks of lesson 09 (going full scale: budgets of caches, GPUs and attention memory).

Each check computes its own reference from the official counts and the presets (:mod:`course_lib.full_scale`,
:mod:`course_lib.models.vit`, :mod:`course_lib.luss.pipeline`), never a value stored from the solution.
"""
from __future__ import annotations

from ..full_scale import official_count
from ..luss.pipeline import settings_for
from ..models.vit import DINO_ARCHITECTURES
from . import expect_close, passed, require_done

_SCORES = "exercise 1 (the attention scores of a frozen ViT-S/8)"
_CACHE = "exercise 2 (a feature cache for ImageNet-S50)"
_GPUS = "exercise 3 (PASS on 4 GPUs instead of 8)"

OFFICIAL_GLOBAL_BATCH = 256
"""PASS's global batch on ImageNet-S50: 8 GPUs × 32 images (``LUSSeg/PASS scripts/luss50_pass.sh:2-3``
N_GPU=8, BATCH=32), the batch its learning rate (``--base_lr 0.6``, line 45) was tuned for."""


def check_cache_size(cache_gb: float) -> None:
    """Checks ``cache_gb``: the fp16 size in GB (10⁹ bytes) of frozen DINO ViT-B/8 features of ImageNet-S50's
    training split at 224 px, one crop per image: N × C × (224/8)² × 2 bytes with N the official count and
    C = 768.

    Reference: that product from :func:`course_lib.full_scale.official_count` and
    :data:`course_lib.models.vit.DINO_ARCHITECTURES` (fp32, or the 16 px grid, fail).
    """
    value = float(require_done(cache_gb, _CACHE))
    spec = DINO_ARCHITECTURES["dino_vitb8"]
    n_images = official_count("ImageNet-S50", "train")
    expected = n_images * spec["embed_dim"] * (224 // spec["patch_size"]) ** 2 * 2 / 1e9
    expect_close(value, expected, _CACHE, rtol=2e-3, atol=0.0,
                 hint=f"N = {n_images} images × C = {spec['embed_dim']} × (224/{spec['patch_size']})² positions × "
                      "2 bytes (fp16), divided by 1e9")
    passed(_CACHE, f"{expected:.1f} GB: more than a local SSD keeps free, so recompute the features every step")


def check_four_gpus(global_batch: int, queue_per_gpu: int, scaled_lr: float) -> None:
    """Checks the budget of PASS's ImageNet-S50 pre-training on 4 GPUs with the preset's per-GPU batch:
    ``global_batch`` = 4 × batch; ``queue_per_gpu`` = (queue_length − queue_length mod global batch) / 4
    (each process keeps its share of the queue, ``luss.pretrain.SwAVQueueSlot``); ``scaled_lr`` = the preset's
    base learning rate × global batch / 256 (the linear scaling rule, 256 = the official 8 × 32).

    Reference: those formulas on :func:`course_lib.luss.pipeline.settings_for` ``("imagenet_s50").pretrain``.
    """
    batch_value = require_done(global_batch, _GPUS + ": global_batch")
    queue_value = require_done(queue_per_gpu, _GPUS + ": queue_per_gpu")
    lr_value = require_done(scaled_lr, _GPUS + ": scaled_lr")
    preset = settings_for("imagenet_s50").pretrain
    expected_batch = 4 * preset.batch_size
    expect_close(float(batch_value), float(expected_batch), _GPUS + ": the global batch", rtol=0, atol=0,
                 hint=f"batch_size ({preset.batch_size}) is per GPU: the global batch is GPUs × batch_size")
    expected_queue = (preset.queue_length - preset.queue_length % expected_batch) // 4
    expect_close(float(queue_value), float(expected_queue), _GPUS + ": the queue per GPU", rtol=0, atol=0,
                 hint=f"the queue of {preset.queue_length} embeddings, cut to a multiple of the global batch, is "
                      "shared among the 4 processes")
    expected_lr = preset.base_lr * expected_batch / OFFICIAL_GLOBAL_BATCH
    expect_close(float(lr_value), expected_lr, _GPUS + ": the learning rate", rtol=1e-6, atol=0,
                 hint=f"no CLI rescales it for you: base_lr {preset.base_lr} × global batch / "
                      f"{OFFICIAL_GLOBAL_BATCH}")
    passed(_GPUS, f"global batch {expected_batch}, {expected_queue} queued embeddings per GPU, lr {expected_lr:g} "
                  f"(or keep the global batch {OFFICIAL_GLOBAL_BATCH} and the preset's {preset.base_lr})")


def check_attention_scores(scores_gb: float) -> None:
    """Checks ``scores_gb``: the GB of the attention scores of one block of a frozen DINO ViT-S/8 at 320 px,
    batch 16, in bf16, when attention is computed explicitly: B × heads × N² values of 2 bytes, N = (320/8)²
    patches + 1 [CLS] token.

    Reference: that product with the heads of :data:`course_lib.models.vit.DINO_ARCHITECTURES` (fp32, or one
    head, fail).
    """
    value = float(require_done(scores_gb, _SCORES))
    spec = DINO_ARCHITECTURES["dino_vits8"]
    tokens = (320 // spec["patch_size"]) ** 2 + 1
    expected = 16 * spec["num_heads"] * tokens ** 2 * 2 / 1e9
    expect_close(value, expected, _SCORES, rtol=2e-3, atol=0.0,
                 hint=f"B = 16 × {spec['num_heads']} heads × N² with N = {tokens} tokens × 2 bytes (bf16), / 1e9")
    passed(_SCORES, f"{expected:.2f} GB for one block's scores: fused attention never stores them, which is why "
                    "the full STEGO CLI uses it")
