"""Download PASCAL VOC 2012 with the SBD-augmented labels into <data-dir>/VOCdevkit/VOC2012.

Example::

    python data_scripts/get_voc.py

Downloads VOCtrainval_11-May-2012.tar (about 2 GB, md5-checked) and SegmentationClassAug.zip
(the 12,031 single-channel label PNGs of VOC 2012 + SBD), then writes
ImageSets/Segmentation/train_aug.txt: every image with an augmented label that is not in val.txt
(10,582 images), the usual 'train_aug' split of SegSort and DeepLab.

Result: VOCdevkit/VOC2012/{JPEGImages, SegmentationClass (palette PNGs), SegmentationClassAug
(single-channel PNGs), ImageSets/Segmentation/{train_aug,train,val}.txt}.
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
from course_lib.data.prepare import add_common_arguments, prepare_voc, print_summary, run_script


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(parser)
    args = parser.parse_args(argv)
    root = args.data_dir or data_dir()
    counts = prepare_voc(root, mirror=args.mirror, keep_archives=args.keep_archives, progress=not args.no_progress)
    print_summary("PASCAL VOC 2012 (images per list)", root / "VOCdevkit" / "VOC2012", counts)
    return 0


if __name__ == "__main__":
    run_script(main)
