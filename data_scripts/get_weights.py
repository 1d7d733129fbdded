"""Download the weight files that the full profile loads: the official DINO checkpoints (backbone only)
and torchvision's ImageNet ResNets (SegSort starts from ResNet-101).

Examples::

    python data_scripts/get_weights.py --model dino_vits8
    python data_scripts/get_weights.py --model resnet101
    python data_scripts/get_weights.py --model all --out-dir /big/disk/weights

Files go to ``$COURSE_CACHE/weights`` (default ``<project>/.cache/weights``) under their official file
names, the path given by ``course_lib.data.hub.weights_path(model)``; the course loads them from there
and never downloads anything itself. Downloads resume after an interruption (run the same command
again). The ResNet files are checked against the SHA-256 prefix in their names, as torchvision checks
them; Meta publishes no checksum for the DINO files: the SHA-256 computed on first download is printed
so that it can be recorded.
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
    add_common_arguments(parser, data_dir=False)
    args = parser.parse_args(argv)
    models = list(hub.WEIGHTS) if args.model == "all" else [args.model]
    paths = prepare_weights(models, args.out_dir, mirror=args.mirror, progress=not args.no_progress)
    print("\nWeights ready:")
    for model, path in paths.items():
        print(f"  {model:<12} {path} ({path.stat().st_size / 2**20:.1f} MiB)")
    return 0


if __name__ == "__main__":
    run_script(main)
