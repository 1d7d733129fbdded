"""Lesson 02's exercise checks: each passes the notebook's solution, fails the stub and a plausible wrong answer."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from course_lib.exercises import ExerciseNotDone, ExerciseWrong, lesson02
from course_lib.models.feature_correspondences import same_class_scores
from exercise_solutions import run_solution, stub as _stub

NOTEBOOK = "02_feature_correspondences.ipynb"
DINO = "toy_vit (DINO)"


# ---------------------------------------------------------------- exercise 1: F of eq. 1


def test_correspondence_passes_the_solution(capsys):
    scope = run_solution(NOTEBOOK, 1, {"torch": torch})
    lesson02.check_correspondence(scope["correspondence"])
    assert "✓" in capsys.readouterr().out


def test_correspondence_fails_the_stub_no_normalisation_a_transpose_and_nan():
    with pytest.raises(ExerciseNotDone):
        lesson02.check_correspondence(_stub)
    with pytest.raises(ExerciseWrong, match="off by"):
        lesson02.check_correspondence(lambda f, g: torch.einsum("bchw,bcij->bhwij", f, g))
    with pytest.raises(ExerciseWrong, match="shape"):
        lesson02.check_correspondence(
            lambda f, g: torch.einsum("bchw,bcij->bijhw", F.normalize(f, dim=1), F.normalize(g, dim=1)))
    with pytest.raises(ExerciseWrong, match="NaN"):
        lesson02.check_correspondence(lambda f, g: torch.einsum(
            "bchw,bcij->bhwij", f / f.norm(dim=1, keepdim=True), g / g.norm(dim=1, keepdim=True)))


# ---------------------------------------------------------------- exercise 2: the AUROC over pairs


def test_auroc_passes_the_solution(capsys):
    scope = run_solution(NOTEBOOK, 2, {})
    lesson02.check_auroc(scope["pairwise_auroc"])
    assert "✓" in capsys.readouterr().out


def test_auroc_fails_the_stub_ties_ignored_a_fraction_and_swapped_classes():
    with pytest.raises(ExerciseNotDone):
        lesson02.check_auroc(_stub)
    with pytest.raises(ExerciseWrong, match="with ties"):
        lesson02.check_auroc(lambda pos, neg: 100 * (pos[:, None] > neg[None, :]).mean())
    with pytest.raises(ExerciseWrong, match="percent"):
        lesson02.check_auroc(lambda pos, neg: (pos[:, None] > neg[None, :]).mean()
                             + 0.5 * (pos[:, None] == neg[None, :]).mean())
    with pytest.raises(ExerciseWrong, match="off by"):
        lesson02.check_auroc(lambda pos, neg: 100 * (neg[:, None] > pos[None, :]).mean())


# ---------------------------------------------------------------- exercise 3: the same-class gap


def _toy_features() -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """8 images of 6×6 patches, 3 classes in horizontal bands (some left out as -1): 'random ViT' is one shared
    direction plus noise (gap ≈ 0), the self-supervised one a class direction plus a colour of each band of each
    image (so same-class pairs of one image are more alike than across images) plus noise."""
    generator = torch.Generator().manual_seed(0)
    labels = (torch.arange(6)[:, None].expand(6, 6) // 2).repeat(8, 1, 1)
    labels = (labels + torch.arange(8)[:, None, None]) % 3
    labels[:, 0, :2] = -1
    classes = torch.randn(3, 16, generator=generator)
    regions = torch.randn(8, 3, 16, generator=generator)                   # a colour per (image, band)
    bands = (torch.arange(6) // 2)[None, :, None].expand(8, 6, 6)
    trained = (classes[labels.clamp(min=0)] + 0.8 * regions[torch.arange(8)[:, None, None], bands]
               + 0.7 * torch.randn(8, 6, 6, 16, generator=generator))
    shared = torch.randn(16, generator=generator)
    untrained = shared + 0.3 * torch.randn(8, 6, 6, 16, generator=generator)
    return {"random ViT": untrained.permute(0, 3, 1, 2), DINO: trained.permute(0, 3, 1, 2)}, labels


def _gap_scope() -> tuple[dict, dict[str, torch.Tensor], torch.Tensor]:
    features, labels = _toy_features()
    scope = {"same_class_scores": same_class_scores, "features": features, "grid_labels": labels,
             "N_PAIRS": 20_000, "SEED": 0, "DINO": DINO}
    return run_solution(NOTEBOOK, 3, scope), features, labels


def test_same_class_gap_is_the_mean_over_all_cross_image_pairs():
    features, labels = _toy_features()
    for name, f in features.items():
        units = F.normalize(f.double(), dim=1).permute(0, 2, 3, 1).reshape(8, 36, 16)
        flat = labels.reshape(8, 36)
        same, different = [], []
        for a in range(8):
            for b in range(8):
                if a != b:
                    similarity = units[a] @ units[b].T
                    both = (flat[a][:, None] >= 0) & (flat[b][None, :] >= 0)
                    equal = flat[a][:, None] == flat[b][None, :]
                    same.append(similarity[both & equal])
                    different.append(similarity[both & ~equal])
        brute = float(torch.cat(same).mean() - torch.cat(different).mean())
        assert lesson02.same_class_gap(f, labels) == pytest.approx(brute, abs=1e-5), name


def test_gap_passes_the_solution(capsys):
    scope, features, labels = _gap_scope()
    lesson02.check_gap(scope["prediction"], scope["gaps"], features, labels)
    out = capsys.readouterr().out
    assert "✓" in out and "was right" in out


def test_gap_reports_a_wrong_prediction_without_failing(capsys):
    scope, features, labels = _gap_scope()
    lesson02.check_gap("random ViT", scope["gaps"], features, labels)
    assert "not what happened" in capsys.readouterr().out


def test_gap_fails_the_stub_a_swapped_sign_within_image_pairs_and_an_unknown_name():
    scope, features, labels = _gap_scope()
    with pytest.raises(ExerciseNotDone):
        lesson02.check_gap(..., ..., features, labels)
    with pytest.raises(ExerciseNotDone):
        lesson02.check_gap(DINO, {"random ViT": ..., DINO: ...}, features, labels)
    with pytest.raises(ExerciseWrong, match=DINO.replace("(", r"\(").replace(")", r"\)")):
        lesson02.check_gap(DINO, {name: -value for name, value in scope["gaps"].items()}, features, labels)

    def within(name):
        similarity, same = same_class_scores(features[name], labels, 20_000, within_image=True, seed=0)
        return float(similarity[same].mean() - similarity[~same].mean())

    with pytest.raises(ExerciseWrong, match="off by"):
        lesson02.check_gap(DINO, {name: within(name) for name in features}, features, labels)
    with pytest.raises(ExerciseWrong, match="prediction"):
        lesson02.check_gap("toy_vit", scope["gaps"], features, labels)


# ---------------------------------------------------------------- exercise 4: reading STEGO §3.1


def test_paper_passes_the_solution(capsys):
    scope = run_solution(NOTEBOOK, 4, {})
    lesson02.check_paper(scope["claim"], scope["entries"])
    assert "2,560,000" in capsys.readouterr().out


def test_paper_fails_the_stub_the_wrong_claim_and_one_image_s_positions():
    with pytest.raises(ExerciseNotDone):
        lesson02.check_paper(..., ...)
    with pytest.raises(ExerciseWrong, match="not §3.1's claim"):
        lesson02.check_paper("a", 40 ** 4)
    with pytest.raises(ExerciseWrong, match="one of"):
        lesson02.check_paper("e", 40 ** 4)
    with pytest.raises(ExerciseWrong, match="H·W"):
        lesson02.check_paper("b", 40 ** 2)
    with pytest.raises(ExerciseWrong, match="320/8"):
        lesson02.check_paper("(b)", 20 ** 4)
