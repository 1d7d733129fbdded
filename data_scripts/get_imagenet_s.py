"""Build ImageNet-S (50, 300 or 919 classes) from your local ImageNet-1k, with the official lists and labels.

Example::

    python data_scripts/get_imagenet_s.py --imagenet-dir /data/imagenet --subset 50

ImageNet needs an account and its licence, so the images come from your copy:
DIR/train/<wnid>/*.JPEG and DIR/val/<wnid>/*.JPEG (a flat DIR/val/ also works). The script

  1. downloads the official ImageNet-S lists (LUSSeg/ImageNet-S, sha256-checked) into
     <data-dir>/ImageNetS/lists/{categories,mapping,names}/ (or copies them from --lists-dir);
  2. builds <data-dir>/ImageNetS/ImageNetS{N}/{train,train-semi,validation,test}/<wnid>/ by hard-linking
     your images (copies where hard links are impossible; see --link-mode), exactly as the official
     datapreparation scripts select them;
  3. downloads the official segmentation labels (validation-segmentation, train-semi-segmentation;
     RGB PNGs, id = R + 256*G, 0 'other', 1000 ignored) from the ImageNet-S GitHub release;
  4. checks that every file named by the lists is in place and prints the counts.

Without --imagenet-dir (or with a folder lacking train/ and val/) it prints instructions and exits with status 2.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

try:
    import course_lib  # noqa: F401
except ImportError:  # run from a source checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from course_lib.config import data_dir
from course_lib.data.hub import IMAGENET_S_SUBSETS
from course_lib.data.prepare import (LINK_MODES, add_common_arguments, imagenet_s_instructions, prepare_imagenet_s,
                                     print_summary, run_script)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--imagenet-dir", type=Path, default=None,
                        help="your ImageNet-1k folder, holding train/<wnid>/ and val/")
    parser.add_argument("--subset", choices=[*IMAGENET_S_SUBSETS, "all"], default="50",
                        help="ImageNet-S50, -300, -919 or all three (default: 50)")
    parser.add_argument("--lists-dir", type=Path, default=None,
                        help="use local copies of the official lists (<dir>/<folder>/<file> or <dir>/<file>) "
                             "instead of downloading them")
    parser.add_argument("--link-mode", choices=LINK_MODES, default="hardlink",
                        help="how images are placed: hardlink (default; copies across file systems), "
                             "symlink (no extra space, needs DIR to stay in place) or copy")
    add_common_arguments(parser)
    args = parser.parse_args(argv)
    imagenet = args.imagenet_dir
    if imagenet is None or not (imagenet / "train").is_dir() or not (imagenet / "val").is_dir():
        print(imagenet_s_instructions(imagenet), file=sys.stderr)
        return 2
    root = args.data_dir or data_dir()
    subsets = IMAGENET_S_SUBSETS if args.subset == "all" else (args.subset,)
    for subset in subsets:
        counts = prepare_imagenet_s(imagenet, root, subset, lists_dir=args.lists_dir, link_mode=args.link_mode,
                                    mirror=args.mirror, keep_archives=args.keep_archives,
                                    progress=not args.no_progress)
        print_summary(f"ImageNet-S{subset} (files per split)", root / "ImageNetS" / f"ImageNetS{subset}", counts)
    return 0


if __name__ == "__main__":
    run_script(main)
