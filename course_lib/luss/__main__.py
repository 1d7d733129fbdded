"""``python -m course_lib.luss <step>``: see :mod:`course_lib.luss.pipeline`."""
import sys

from .pipeline import main

sys.exit(main())
