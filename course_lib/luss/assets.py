"""The shipped toy run of PASS: pre-training and pixel-attention checkpoints trained longer than a lesson can.

``course_lib/assets/pass_toy.pt`` holds the ``pretrain`` and ``attention`` checkpoints of a toy-world
pipeline run (weights, config and per-step loss history; no optimizer state) and
``course_lib/assets/pass_toy.json`` the command that trained them. :func:`install_toy_checkpoints`
puts them into a run folder, where the pipeline's later steps (and lessons 05-06) use them as if that
folder had trained them: ``python -m course_lib.luss pipeline --profile toy --shipped``.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from .training import load_checkpoint, save_checkpoint

ASSETS = Path(__file__).resolve().parent.parent / "assets"
TOY_CHECKPOINT = ASSETS / "pass_toy.pt"
TOY_RECORD = ASSETS / "pass_toy.json"
SHIPPED_STEPS = ("pretrain", "attention")


def load_toy_run() -> dict:
    """``{"pretrain": checkpoint, "attention": checkpoint}`` of the shipped toy run."""
    if not TOY_CHECKPOINT.is_file():
        raise FileNotFoundError(f"the shipped toy checkpoint {TOY_CHECKPOINT} is missing; reinstall course_lib or "
                                "train one with `python -m course_lib.luss pipeline --profile toy`")
    return torch.load(TOY_CHECKPOINT, map_location="cpu", weights_only=False)


def install_toy_checkpoints(work_dir: str | Path) -> dict[str, Path]:
    """Write the shipped ``pretrain`` and ``attention`` checkpoints as ``work_dir/<step>/checkpoint.pt``
    (an existing checkpoint is left alone); returns their paths."""
    work_dir, run, paths = Path(work_dir), None, {}
    for step in SHIPPED_STEPS:
        path = work_dir / step / "checkpoint.pt"
        if not path.is_file():
            run = run or load_toy_run()
            save_checkpoint(run[step], path)
        paths[step] = path
    return paths


def export_toy_run(work_dir: str | Path, command: str, out: str | Path = TOY_CHECKPOINT, **notes: str) -> Path:
    """Strip the optimizer states of ``work_dir``'s pre-training and attention checkpoints, store both in
    ``out`` and write the JSON record (``command``, configs, final losses, and ``notes`` such as
    ``machine="..."``) beside it."""
    work_dir, out = Path(work_dir), Path(out)
    run = {}
    for step in SHIPPED_STEPS:
        state = load_checkpoint(work_dir / step / "checkpoint.pt", f"{step} checkpoint")
        run[step] = {key: value for key, value in state.items() if key != "optimizer"}
        run[step]["model"] = {name: tensor.clone() for name, tensor in run[step]["model"].items()}
    save_checkpoint(run, out)
    record = {"command": command, "file": out.name,
              **{step: {"config": run[step]["config"], "epochs": run[step]["epoch"],
                        "final_losses": run[step]["history"][-1]} for step in SHIPPED_STEPS}, **notes}
    out.with_suffix(".json").write_text(json.dumps(record, indent=1) + "\n")
    return out
