"""Sphinx extension of the course's website: a line of links under the title of every lesson page.

Each ``lessons/NN_name`` page gets, right under its title, a download link to the notebook it was rendered from
(``notebooks/NN_name.ipynb``, executed, as committed) and, where ``make student`` has written it before the build,
to its student version (``build/student/NN_name.ipynb``). A student copy that does not exist is not linked, so the
site never holds a broken link; the set of copies is a config value, so a build after ``make student`` re-renders
the lessons.
"""
from __future__ import annotations

import os
from pathlib import Path

from docutils import nodes
from sphinx import addnodes
from sphinx.application import Sphinx
from sphinx.config import Config
from sphinx.transforms import SphinxTransform

LESSON_PREFIX = "lessons/"


def _download(target: str, label: str, docname: str) -> addnodes.download_reference:
    """A ``:download:`` link to ``target`` (relative to the page's folder, or to the source folder when it starts
    with ``/``), shown as ``label`` in code style."""
    return addnodes.download_reference(
        "", "", nodes.literal(label, label), reftarget=target, refdoc=docname, refexplicit=True, refwarn=True
    )


class LessonLinks(SphinxTransform):
    """Inserts the paragraph of links after the first title of a lesson page."""

    default_priority = 500

    def apply(self, **kwargs) -> None:
        docname = self.env.docname
        if not docname.startswith(LESSON_PREFIX):
            return
        section = next(iter(self.document.findall(nodes.section)), None)
        if section is None:
            return
        name = docname[len(LESSON_PREFIX):] + ".ipynb"
        para = nodes.paragraph(classes=["lesson-links"])
        para += nodes.Text("Notebook (executed in the toy profile, as in the repository's ")
        para += nodes.literal(f"notebooks/{name}", f"notebooks/{name}")
        para += nodes.Text("): ")
        para += _download(name, name, docname)
        if name in self.config.course_student_notebooks:
            student = Path(self.config.course_student_dir) / name
            para += nodes.Text(" · student version (exercises as stubs, from make student): ")
            para += _download("/" + os.path.relpath(student, self.env.srcdir), f"student/{name}", docname)
        section.insert(1, para)


def _find_student_notebooks(app: Sphinx, config: Config) -> None:
    """Lists the student copies that exist now (``NN_*.ipynb`` in ``course_student_dir``)."""
    folder = Path(config.course_student_dir) if config.course_student_dir else None
    found = sorted(p.name for p in folder.glob("[0-9][0-9]_*.ipynb")) if folder and folder.is_dir() else []
    config.course_student_notebooks = found


def setup(app: Sphinx) -> dict:
    app.add_config_value("course_student_dir", "", "env", types=[str])
    app.add_config_value("course_student_notebooks", [], "env", types=[list])
    app.connect("config-inited", _find_student_notebooks)
    app.add_transform(LessonLinks)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
