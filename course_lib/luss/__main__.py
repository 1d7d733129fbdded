"""``python -m course_lib.luss <step>``: see :mod:`course_lib.luss.pipeline`."""
from ..cli import run_cli
from .pipeline import main

run_cli(main)
