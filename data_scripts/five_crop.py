"""Prepare STEGO's five-crop training data: ``cropped/<dataset>_five_crop_0.5/{img,label,index}``.

Usage::

    python data_scripts/five_crop.py --dataset {cocostuff27,cityscapes27} --split {train,val} [--data-dir DIR]

Reads the dataset from ``--data-dir`` (default: ``COURSE_DATA``, else ``<project>/data``), writes the
four corner crops and the centre crop of every image and label (half height, half width), then the
index file. An interrupted run resumes where it stopped. See ``course_lib.data.five_crop``.
``python -m course_lib.stego.train`` runs the same preparation itself when the set is missing.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from course_lib import cli, config  # noqa: E402
from course_lib.data.five_crop import FIVE_CROP_SOURCES, prepare_five_crop  # noqa: E402
from course_lib.data.folders import DatasetLayoutError, DatasetNotFoundError  # noqa: E402
from course_lib.data.label_png import LabelEncodingError  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = cli.ArgumentParser(prog="python data_scripts/five_crop.py", description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True, choices=sorted(FIVE_CROP_SOURCES))
    parser.add_argument("--split", required=True, choices=("train", "val"))
    parser.add_argument("--data-dir", type=Path, default=None, help="dataset root (default: COURSE_DATA)")
    parser.add_argument("--ratio", type=cli.float_range(0, 1, low_open=True), default=0.5,
                        help="crop side / image side, in (0, 1] (STEGO: 0.5)")
    parser.add_argument("--num-workers", type=cli.non_negative_int, default=min(8, os.cpu_count() or 1),
                        help="parallel reader/writer processes (0: in this process)")
    parser.add_argument("--jpeg-quality", type=cli.int_range(1, 100), default=75,
                        help="JPEG quality of the image crops, 1..100 (75: PIL's default, as STEGO)")
    args = parser.parse_args(argv)
    data_dir = args.data_dir if args.data_dir is not None else config.data_dir()
    try:
        out_dir = prepare_five_crop(
            args.dataset,
            args.split,
            root=data_dir,
            ratio=args.ratio,
            num_workers=args.num_workers,
            jpeg_quality=args.jpeg_quality,
        )
    except (DatasetNotFoundError, DatasetLayoutError, LabelEncodingError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"five-crop {args.dataset} {args.split}: written to {out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
