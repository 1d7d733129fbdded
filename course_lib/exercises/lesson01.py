"""Checks of lesson 01 (ViT token counts, DINO's loss with centering and sharpening, the centering's invariance).

Each check computes its own reference (a randomly initialised :class:`course_lib.models.VisionTransformer`, the
course's :class:`course_lib.ssl.dino.DINOLoss`, a direct softmax), never a value stored from the solution.
"""
from __future__ import annotations

from typing import Callable

import torch

from ..models import VisionTransformer
from ..ssl.dino import DINOLoss
from . import call_learner, expect, expect_close, passed, require_done

_TOKENS = "exercise 1 (tokens of ViT-S/8)"
_LOSS = "exercise 2 (DINO's loss, eq. 1–4)"
_CENTER = "exercise 3 (centering removes a shared bias)"


def check_n_tokens(n_tokens: int, attention_entries: int) -> None:
    """Checks the number of tokens ViT-S/8 processes for a 320×480 image ([CLS] included) and the entries of its
    last attention matrix per head. Reference: the shape of ``last_attention`` of a one-block random ViT with
    patch size 8 (B×heads×(1+N)×(1+N)) on a 320×480 input."""
    for value in (n_tokens, attention_entries):
        require_done(value, _TOKENS)
    probe = VisionTransformer(patch_size=8, embed_dim=8, depth=1, num_heads=1, img_size=64)
    with torch.no_grad():
        shape = probe.last_attention(torch.zeros(1, 3, 320, 480)).shape
    reference = shape[-1]
    expect(n_tokens != reference - 1, _TOKENS, f"{n_tokens} tokens: the [CLS] token is missing")
    expect(n_tokens == reference, _TOKENS, f"{n_tokens} tokens, but the ViT processes a different number; "
                                           "N = (H/P)·(W/P) patches, plus [CLS]")
    expect(attention_entries == shape[-1] * shape[-2], _TOKENS,
           f"{attention_entries} attention entries per head; each of the {reference} tokens attends to every token")
    passed(_TOKENS, f"{reference} tokens, {reference ** 2:,} attention entries per head")


def check_dino_loss(dino_loss: Callable[..., torch.Tensor]) -> None:
    """Checks ``dino_loss(student, teacher, center, student_temp, teacher_temp)`` (student, teacher: B×K logits of
    two different views; center: 1×K) → the scalar H(P_t, P_s) = −Σ_k P_t log P_s averaged over the batch, with
    P_t = softmax((teacher − c)/τ_t) (centred and sharpened, DINO eq. 4) and P_s = softmax(student/τ_s) (eq. 1).

    Reference: :class:`course_lib.ssl.dino.DINOLoss` with its centre set to ``center``, on the one (teacher,
    student) pair of two views; the teacher's logits favour output 0 and the centre is not zero, so forgetting
    the centering or swapping the temperatures changes the loss.
    """
    generator = torch.Generator().manual_seed(1)
    student = torch.randn(6, 10, generator=generator)
    teacher = torch.randn(6, 10, generator=generator) * 0.5
    teacher[:, 0] += 2.0
    center = teacher.mean(0, keepdim=True) + 0.1 * torch.randn(1, 10, generator=generator)
    for student_temp, teacher_temp in ((0.1, 0.04), (0.2, 0.07)):
        loss = call_learner(dino_loss, student.clone(), teacher.clone(), center.clone(), student_temp, teacher_temp,
                            what=_LOSS)
        reference_loss = DINOLoss(out_dim=10, n_global=1, teacher_temp=teacher_temp, student_temp=student_temp)
        reference_loss.center.copy_(center)
        reference = reference_loss([torch.zeros_like(student), student], [teacher])   # pairs: teacher 0, student 1
        expect_close(torch.as_tensor(loss).reshape(()), reference, _LOSS, rtol=1e-4,
                     hint="P_t = softmax((teacher − center)/τ_t), log P_s = log_softmax(student/τ_s), "
                          "loss = −(P_t · log P_s).sum(−1).mean()")
    passed(_LOSS, f"matches DINOLoss at (τ_s, τ_t) = (0.1, 0.04) and (0.2, 0.07): {float(reference):.4f}")


def check_centering(p_a: torch.Tensor, p_b: torch.Tensor, logits: torch.Tensor, shift: torch.Tensor,
                    teacher_temp: float = 0.04) -> None:
    """Checks the centred, sharpened teacher distributions ``p_a`` of ``logits`` (B×K) and ``p_b`` of
    ``logits + shift`` (shift: 1×K, the same for every image), each centred on its own batch mean, and that they
    are equal (centering removes any bias shared by all images). Reference: a direct
    ``softmax((z − z.mean(0)) / τ_t)``."""
    for value in (p_a, p_b):
        require_done(value, _CENTER)

    def centred(z: torch.Tensor) -> torch.Tensor:
        return ((z - z.mean(0, keepdim=True)) / teacher_temp).softmax(-1)

    expect_close(p_a, centred(logits), _CENTER, rtol=1e-4, atol=1e-6,
                 hint="p_a = softmax((logits − logits.mean(0)) / 0.04, −1)")
    expect_close(p_b, centred(logits + shift), _CENTER, rtol=1e-4, atol=1e-6,
                 hint="p_b centres logits + shift on ITS OWN mean, (logits + shift).mean(0)")
    difference = float((torch.as_tensor(p_a) - torch.as_tensor(p_b)).abs().max())
    passed(_CENTER, f"largest difference between p_a and p_b: {difference:.1e}")
