"""Builds the course's website from the committed, executed notebooks and the README: ``make site``.

``python site/build.py`` writes ``build/site/index.html`` (landing page), ``build/site/lessons/NN_name.html`` (one
page per lesson, in the order of their numbers) and the reference pages, offline and without executing anything.
Sphinx rebuilds only what changed (its environment lives in ``build/site-doctrees``); warnings are errors, so a
README section that was renamed, a broken cross-reference or a missing image fails the build.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

SITE_SOURCES = Path(__file__).resolve().parent
ROOT = SITE_SOURCES.parent
OUT = ROOT / "build" / "site"
DOCTREES = ROOT / "build" / "site-doctrees"
INSTALL_HINT = "pip install -c constraints.txt -e '.[site]'   (make site does it)"


def sphinx_arguments(out: Path = OUT, doctrees: Path = DOCTREES) -> list[str]:
    """The ``sphinx-build`` command line: HTML, quiet, warnings as errors (all reported before failing)."""
    return ["-b", "html", "-q", "-W", "--keep-going", "-d", str(doctrees), str(SITE_SOURCES), str(out)]


def main() -> int:
    try:
        from sphinx.cmd.build import build_main
    except ImportError:
        print(f"The site needs the [site] extra (Sphinx, myst-nb, sphinx-book-theme): {INSTALL_HINT}", file=sys.stderr)
        return 2
    start = time.perf_counter()
    status = build_main(sphinx_arguments())
    if status == 0:
        print(f"site: {OUT / 'index.html'} ({time.perf_counter() - start:.1f} s)")
    return status


if __name__ == "__main__":
    sys.exit(main())
