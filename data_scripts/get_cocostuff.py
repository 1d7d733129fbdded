"""Download CocoStuff 164k (the STEGO / PiCIE / IIC benchmark) into <data-dir>/cocostuff.

Examples::

    python data_scripts/get_cocostuff.py
    python data_scripts/get_cocostuff.py --source official --data-dir /big/disk/data

Sources:
  stego     (default) the archive prepared by the STEGO authors: images, stuffthingmaps label PNGs and
            the curated lists in one download, already in the course's layout (about 20 GB).
  official  COCO 2017 train/val images (images.cocodataset.org), the COCO-Stuff stuffthingmaps
            (calvin.inf.ed.ac.uk) and IIC's curated lists (robots.ox.ac.uk): four downloads.

Result: cocostuff/images/{train2017,val2017}/<id>.jpg, cocostuff/annotations/{train2017,val2017}/<id>.png
(values 0..181, 255 unlabelled) and cocostuff/curated/{train2017,val2017}/Coco164kFull_Stuff_Coarse_7.txt
(plus STEGO's training list cocostuff/curated/train2017/Coco164kFull_Stuff_Coarse.txt).
Needs about twice the archive size free while extracting; archives are deleted afterwards unless
--keep-archives. An interrupted run resumes when the same command is run again.
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
from course_lib.data.prepare import add_common_arguments, prepare_cocostuff, print_summary, run_script


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", choices=["stego", "official"], default="stego",
                        help="where to download from (see above; default: stego)")
    add_common_arguments(parser)
    args = parser.parse_args(argv)
    root = args.data_dir or data_dir()
    counts = prepare_cocostuff(root, args.source, mirror=args.mirror, keep_archives=args.keep_archives,
                               progress=not args.no_progress)
    print_summary("CocoStuff (curated images per split)", root / "cocostuff", counts)
    return 0


if __name__ == "__main__":
    run_script(main)
