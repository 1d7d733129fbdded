"""Download the weight files that the full profile loads: the official DINO and DINOv2 checkpoints (backbone
only) and torchvision's ImageNet ResNets (SegSort starts from ResNet-101).

Examples::

    python data_scripts/get_weights.py --model dino_vits8
    python data_scripts/get_weights.py --model dinov2_vitb14_reg
    python data_scripts/get_weights.py --model resnet101
    python data_scripts/get_weights.py --model all --out-dir /big/disk/weights

Files go to ``$COURSE_CACHE/weights`` (default ``<project>/.cache/weights``) under their official file
names, the path given by ``course_lib.data.hub.weights_path(model)``; the course loads them from there
and never downloads anything itself. Downloads resume after an interruption (run the same command
again). The ResNet files are checked against the SHA-256 prefix in their names, as torchvision checks
them; Meta publishes no checksum for the DINO and DINOv2 files: the SHA-256 computed on first download is
printed and recorded beside the file (``<file>.sha256``).

A file already there is verified before it is kept: its checksum (the ResNet prefix, else the recorded
SHA-256) and that it loads with ``torch.load(weights_only=True)`` as a state dict of the model's
architecture (strict keys and shapes). A bad one (garbage, truncated, empty, a directory, another
architecture) is reported with its path and downloaded again; ``--force`` downloads again in any case.
Every line says what was done: ``[ok]`` kept or verified, ``[redo]`` replaced, ``[force]``, ``[get]``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

try:
    import course_lib  # noqa: F401
except ImportError:  # run from a source checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from course_lib.data import hub
from course_lib.data.prepare import add_common_arguments, prepare_weights, run_script


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, choices=[*hub.WEIGHTS, "all"],
                        help="which checkpoint: " + "; ".join(f"{k}: {v.description}" for k, v in hub.WEIGHTS.items()))
    parser.add_argument("--out-dir", "--data-dir", dest="out_dir", type=Path, default=None,
                        help="folder for the .pth files (default: $COURSE_CACHE/weights)")
    parser.add_argument("--force", action="store_true",
                        help="download again even when a verified file is there (it is replaced once the new "
                             "one is verified)")
    add_common_arguments(parser, data_dir=False)
    args = parser.parse_args(argv)
    models = list(hub.WEIGHTS) if args.model == "all" else [args.model]
    paths = prepare_weights(models, args.out_dir, mirror=args.mirror, progress=not args.no_progress,
                            force=args.force)
    print("\nWeights ready:")
    for model, path in paths.items():
        print(f"  {model:<12} {path} ({path.stat().st_size / 2**20:.1f} MiB)")
    return 0


if __name__ == "__main__":
    run_script(main)
