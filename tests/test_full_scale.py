"""``course_lib.full_scale`` (lesson 09): sizes, caches, activation memory, recipes and deviations."""
from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from course_lib import full_scale as fs

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT.parent / "shared" / "reference" / "imagenet_s" / "names"


def _lines(path: Path) -> int:
    return sum(1 for line in path.read_text().splitlines() if line.strip())


@pytest.mark.skipif(not REFERENCE.is_dir(), reason="the official ImageNet-S lists are not at ../shared/reference")
@pytest.mark.parametrize("subset", [50, 300, 919])
def test_imagenet_s_counts_match_the_official_lists(subset):
    assert fs.official_count(f"ImageNet-S{subset}", "validation") == _lines(REFERENCE / f"ImageNetS_im{subset}_validation.txt")
    assert fs.official_count(f"ImageNet-S{subset}", "train-semi") == _lines(REFERENCE / f"ImageNetSemi_im{subset}_train.txt")


def test_feature_cache_bytes_is_n_c_h_w_times_two():
    assert fs.feature_cache_bytes(2175, 384, 320, 320, 8) == 2175 * 384 * 40 * 40 * 2
    row = next(r for r in fs.feature_cache_table() if r["backbone"] == "dino_vitb8" and r["dataset"] == "CocoStuff-27"
               and r["split"] == "train")
    assert row["images"] == 5 * 49629 and row["GB"] == pytest.approx(5 * 49629 * 768 * 28 * 28 * 2 / 1e9, abs=0.01)
    plan = {row["what"]: row["decision"] for row in fs.cache_plan(disk_budget_gb=50)}
    assert plan["dino_vits8 features, CocoStuff-27 train @224"] == "recompute"
    assert plan["dino_vits8 features, CocoStuff-27 val @320"] == "cache"


def test_saved_activation_bytes_counts_what_autograd_keeps():
    x, w = torch.randn(1000, requires_grad=True), torch.randn(1000, requires_grad=True)
    assert fs.saved_activation_bytes(lambda: (x * w).sum()) == 2 * 1000 * 4    # mul saves both operands
    with torch.no_grad():
        assert fs.saved_activation_bytes(lambda: (x * w).sum()) == 0


def test_activation_estimate_scales_with_pixels_and_batch():
    case = fs.ActivationCase("conv", lambda: nn.Sequential(nn.Conv2d(3, 64, 3, padding=1), nn.ReLU(),
                                                           nn.Conv2d(64, 64, 3, padding=1)), 512 ** 2, 8, "512² crops")
    small, large = (fs.activation_memory_table(probe, [case])[0] for probe in (32, 64))
    assert large["MB/image at probe"] == pytest.approx(4 * small["MB/image at probe"], rel=0.02)
    assert large["estimate GB (fp32)"] == pytest.approx(small["estimate GB (fp32)"], rel=0.02) and large["batch/GPU"] == 8


def test_every_deviation_has_a_reason_and_only_differences_are_listed():
    rows = fs.deviations()
    assert rows and all(row["why"] for row in rows), [row["field"] for row in rows if not row["why"]]
    assert all(row["toy"] != row["full"] for row in rows)
    fields = {(row["method"], row["field"]) for row in rows}
    assert {("STEGO", "lr"), ("STEGO", "steps"), ("PASS", "pretrain.optimizer"), ("SegSort", "arch"),
            ("DINO", "conv_stem")} <= fields
    assert ("STEGO", "code_dim") not in fields and ("STEGO", "lambda_self") not in fields   # same values


def test_pass_revert_settings_restore_the_imagenet_s_preset():
    from course_lib.luss.pipeline import apply_overrides, settings_for

    rows = [row for row in fs.deviations() if row["method"] == "PASS" and row["revert"].startswith("--set ")]
    reverted = apply_overrides(settings_for("toy"), [row["revert"].removeprefix("--set ") for row in rows])
    full = fs._flat(settings_for("imagenet_s50"))
    for row in rows:
        assert fs._flat(reverted)[row["field"]] == full[row["field"]], row["field"]


def _cli_and_flags(command: str) -> tuple[list[str], list[str]]:
    """(the argv that reaches the CLI before its first flag, the flags of the command)."""
    words = shlex.split(command.replace("$", "X"))
    if words[0] == "torchrun":
        words = ["python", *words[words.index("-m"):]]
    first_flag = next((i for i, word in enumerate(words) if word.startswith("--")), len(words))
    return words[1:first_flag], [word.split("=")[0] for word in words[first_flag:] if word.startswith("--")]


def test_recipe_commands_use_flags_their_clis_have():
    helps: dict[tuple, str] = {}
    for command in fs.recipe_commands():
        cli, flags = _cli_and_flags(command)
        if tuple(cli) not in helps:
            result = subprocess.run([sys.executable, *cli, "--help"], cwd=ROOT, capture_output=True, text=True,
                                    timeout=120)
            assert result.returncode == 0, (cli, result.stderr[-2000:])
            helps[tuple(cli)] = result.stdout
        missing = [flag for flag in flags if flag not in helps[tuple(cli)]]
        assert not missing, f"{command}: {missing} not in `{' '.join(cli)} --help`"


def test_prototype_usage_and_swav_epochs():
    even = fs.prototype_usage(torch.arange(10).repeat(5), 10)
    assert even["used"] == 10 and even["perplexity"] == pytest.approx(10) and even["entropy / ln K"] == pytest.approx(1)
    collapsed = fs.prototype_usage(torch.zeros(50, dtype=torch.long), 10)
    assert collapsed["used"] == 1 and collapsed["perplexity"] == pytest.approx(1) and collapsed["largest share"] == 1
    history = [{"epoch": 0, "swav": 4.0}, {"epoch": 0, "swav": 2.0}, {"epoch": 1, "swav": 1.0}]
    assert fs.swav_loss_by_epoch(history) == [3.0, 1.0]


def test_format_table_aligns_and_shows_missing_values():
    text = fs.format_table([{"a": 1, "b": None}, {"a": 12345, "b": "x"}])
    lines = text.splitlines()
    assert lines[0].split() == ["a", "b"] and lines[2].split() == ["1", "-"] and lines[3].split() == ["12", "345", "x"]
    assert json.dumps(fs.format_table([]))


def test_dinov2_budgets_count_the_register_tokens():
    # 322 px / 14 = 23 patches a side; the _reg models add 4 register tokens to [CLS] and the 529 patches.
    plain = fs.frozen_vit_forward_bytes("dinov2_vits14", 322, 1, bytes_per_value=1)
    registers = fs.frozen_vit_forward_bytes("dinov2_vits14_reg", 322, 1, bytes_per_value=1)
    assert plain == (23 * 23 + 1) * 6 * 384 and registers == (23 * 23 + 5) * 6 * 384
    row = fs.feature_cache_table(["dinov2_vitb14"])[0]
    assert row["C"] == 768 and row["grid"] == "16²"
