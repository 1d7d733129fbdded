"""Sphinx configuration of the course's website (``make site`` -> ``build/site/``).

Stack: Sphinx + myst-nb + sphinx-book-theme, all from PyPI, because it builds offline (Jupyter Book 2 / mystmd fetches
its site template from the internet at build time). Lessons are the committed, executed notebooks
(``site/lessons`` is a link to ``notebooks/``), rendered without re-execution. MathJax is served from the site itself
(the ``sphinx-mathjax-offline`` package ships MathJax 3.2.2 with its fonts), so no page fetches anything from the
internet when it is viewed; ``tests/test_site.py`` checks it in headless Chromium.
"""
from pathlib import Path
import sys

SITE = Path(__file__).resolve().parent
ROOT = SITE.parent
sys.path.insert(0, str(SITE / "_ext"))

project = "Unsupervised Semantic Segmentation"
author = "the course's authors"
html_title = "Unsupervised Semantic Segmentation: the course"

extensions = [
    "myst_nb",
    "sphinx.ext.mathjax",
    "sphinx-mathjax-offline",  # sets mathjax_path to the local copy and copies it into _static/mathjax
    "course_site",
]

root_doc = "index"
exclude_patterns = ["_ext", "**/.ipynb_checkpoints"]

# The notebooks are committed executed in the toy profile: show them as they are, never run them here.
nb_execution_mode = "off"
nb_merge_streams = True
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence"]
myst_heading_anchors = 3
# README sections keep their own heading levels when included under a page title.
suppress_warnings = ["myst.header"]

# build/student/NN_*.ipynb (written by `make student`): linked from each lesson only where it exists at build time.
# A config value, so that the pages are rebuilt when the set changes.
course_student_dir = str(ROOT / "build" / "student")

html_theme = "sphinx_book_theme"
html_theme_options = {
    "use_download_button": True,
    "home_page_in_toc": True,
    "show_toc_level": 2,
    "navigation_with_keys": True,
}
html_last_updated_fmt = None
html_sourcelink_suffix = ""  # the download button offers the notebook itself (_sources/lessons/NN_*.ipynb)
html_show_sphinx = False
# The theme logs a console error on a first visit when no colour mode is set; light mode suits the figures' white
# backgrounds (the reader can still switch).
html_context = {"default_mode": "light"}
html_static_path = ["_static"]
html_favicon = "_static/favicon.svg"  # without one the browser asks for /favicon.ico and gets a 404
