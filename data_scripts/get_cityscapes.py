"""Extract Cityscapes (fine annotations) into <data-dir>/cityscapes from the zips you downloaded.

Cityscapes needs a (free) account, so this script downloads nothing. Log in at
https://www.cityscapes-dataset.com/downloads/, download leftImg8bit_trainvaltest.zip and
gtFine_trainvaltest.zip into one folder DIR, then run::

    python data_scripts/get_cityscapes.py --from-dir DIR

Result: cityscapes/leftImg8bit/{train,val}/<city>/<stem>_leftImg8bit.png and
cityscapes/gtFine/{train,val}/<city>/<stem>_gtFine_labelIds.png (labelIds 0..33). Your zips are not
deleted. Without --from-dir (or without both zips in DIR) the script prints these instructions and
exits with status 2.
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
from course_lib.data.prepare import (CITYSCAPES_ZIPS, add_common_arguments, cityscapes_instructions,
                                     prepare_cityscapes, print_summary, run_script)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--from-dir", type=Path, default=None,
                        help=f"folder that holds {' and '.join(CITYSCAPES_ZIPS)}")
    add_common_arguments(parser, downloads=False)
    args = parser.parse_args(argv)
    if args.from_dir is None or not all((args.from_dir / name).is_file() for name in CITYSCAPES_ZIPS):
        print(cityscapes_instructions(args.from_dir), file=sys.stderr)
        return 2
    root = args.data_dir or data_dir()
    counts = prepare_cityscapes(args.from_dir, root, progress=not args.no_progress)
    print_summary("Cityscapes (images per split)", root / "cityscapes", counts)
    return 0


if __name__ == "__main__":
    run_script(main)
