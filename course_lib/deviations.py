"""Where the course's full presets still differ from the official code, and why (lesson 09, README).

Each method keeps its own list next to its presets, as ``OFFICIAL_DEVIATIONS`` (a tuple of
:class:`Deviation`): :mod:`course_lib.stego.configs`, :mod:`course_lib.luss.pipeline` and
:mod:`course_lib.segsort.train`. :func:`official_deviations` gathers them; :func:`markdown_table` renders the
table that lesson 09 and the README show. This is about the *full* presets against the official repositories;
the toy presets' departures from the full ones are :func:`course_lib.full_scale.deviations`.
"""
from __future__ import annotations

import importlib
from dataclasses import asdict, dataclass
from typing import Sequence

METHOD_MODULES = {"STEGO": "course_lib.stego.configs", "PASS": "course_lib.luss.pipeline",
                  "SegSort": "course_lib.segsort.train"}
"""Where each method's ``OFFICIAL_DEVIATIONS`` lives."""


@dataclass(frozen=True)
class Deviation:
    """One remaining difference between a full preset (or code path) and the official code.

    ``setting``: what differs; ``ours`` / ``official``: the two behaviours, in words or values;
    ``why``: the reason we keep ours; ``source``: the official file (and line) that shows their behaviour;
    ``test``: the test that pins our value (``tests/test_x.py::test_name``), or ``None`` when the difference
    is not a setting a test can pin (e.g. a different framework)."""
    setting: str
    ours: str
    official: str
    why: str
    source: str
    test: str | None = None


def official_deviations() -> list[dict]:
    """Every :class:`Deviation` of every method, as dicts with a ``method`` key first."""
    rows = []
    for method, module in METHOD_MODULES.items():
        for deviation in getattr(importlib.import_module(module), "OFFICIAL_DEVIATIONS"):
            rows.append({"method": method, **asdict(deviation)})
    return rows


def markdown_table(rows: Sequence[dict] | None = None) -> str:
    """The deviations as a GitHub-flavoured markdown table (method, setting, ours, official, why, source)."""
    rows = official_deviations() if rows is None else rows
    columns = ("method", "setting", "ours", "official", "why", "source")
    lines = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    for row in rows:
        cells = [str(row[column]).replace("|", "\\|").replace("\n", " ") for column in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":  # python -m course_lib.deviations: the table the README carries
    print(markdown_table())
