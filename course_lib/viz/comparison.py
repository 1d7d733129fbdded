"""Figures of the course's comparison and ablation tables (:mod:`course_lib.compare`)."""
from __future__ import annotations

import numpy as np
from matplotlib.axes import Axes

BLOCK_COLOURS = {"method": "tab:blue", "baseline": "tab:grey", "reference": "tab:olive"}
SHORT_PROTOCOLS = {"scenes": "STEGO's protocol: Hungarian over the set",
                   "objects": "ImageNet-S protocol: border rule, presence matching"}


def plot_metric_bars(rows: list[dict], dataset: str, ax: Axes, metric: str = "mIoU",
                     with_crf: bool = True, name: str = "method") -> None:
    """Horizontal bars of ``metric`` (mean over seeds, ± std as error bars, every seed as a dot) for each row of
    ``dataset`` that reports it, labelled by the row's ``name`` field (``"variant"`` for ablation rows); with
    ``with_crf`` a hatched bar for ``<metric>_crf`` beside it. Methods in blue, baselines in grey, reference
    points in olive."""
    from ..compare import block_of

    chosen = [row for row in rows if row["dataset"] == dataset and metric in row["metrics"]]
    for y, row in enumerate(chosen):
        block = block_of(row["method"])
        variants = [(metric, 0.0, None)] + ([(f"{metric}_crf", 0.38, "//")] if with_crf and
                                            f"{metric}_crf" in row["metrics"] else [])
        for key, offset, hatch in variants:
            values = np.asarray(row["metrics"][key], dtype=float)
            ax.barh(y + offset, values.mean(), height=0.36, xerr=values.std(ddof=1) if len(values) > 1 else None,
                    color=BLOCK_COLOURS[block], alpha=0.85 if hatch is None else 0.45, hatch=hatch,
                    edgecolor="black", linewidth=0.5, capsize=2)
            ax.plot(values, np.full(len(values), y + offset), "k.", markersize=3)
    ax.set_yticks(np.arange(len(chosen)) + (0.19 if with_crf else 0.0), [row[name] for row in chosen])
    ax.invert_yaxis()
    ax.set_xlabel(f"{metric} (%), mean ± std over seeds" + ("; hatched: after the CRF" if with_crf else ""))
    ax.set_title(f"{dataset} ({SHORT_PROTOCOLS[dataset]})", fontsize=10)
