"""The one convention every training CLI shares (DESIGN §5).

``course_lib.stego.train``, ``course_lib.luss``, ``course_lib.segsort.train`` and ``course_lib.ssl.dino``
take the same names for the same things:

=================  ============================================================================
``--profile``      ``toy`` or ``full`` (default ``$COURSE_PROFILE``, else ``toy``)
``--dataset``      which dataset (``toy``, ``cocostuff27``, ``imagenet_s50``, ``voc2012``, ...)
``--out``          the run folder: ``config.json``, ``metrics.json``, checkpoints (resumed)
``--data-root``    the datasets' root (default ``$COURSE_DATA``)
``--device``       ``cpu``, ``cuda``, ``cuda:1`` ... (default: the best available)
``--threads``      torch CPU threads per process
``--seed``         the random seed
``--max-steps``    a cap on the optimisation steps of every training stage
``--print-config`` print the resolved configuration as JSON and exit
=================  ============================================================================

:func:`run_cli` turns the course's expected failures (a dataset or weight file not downloaded, a bad
option value) into a short message on stderr that names the fix, with no traceback.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path
from typing import Any, Callable, Iterable

from . import config as course_config


def add_common_arguments(parser: argparse.ArgumentParser, *, out_aliases: Iterable[str] = (),
                         out_required: bool = True, dataset_help: str = "which dataset",
                         skip: Iterable[str] = ()) -> None:
    """Add the shared flags to ``parser`` (``out_aliases``: old names kept for ``--out``, e.g.
    ``--work-dir``; ``skip``: flags the CLI defines itself, by their ``dest`` name)."""
    skip = set(skip)
    if "out" not in skip:
        parser.add_argument("--out", *out_aliases, dest="out", required=out_required, type=Path,
                            help="run folder (config.json, metrics.json, checkpoints; resumed when present)")
    if "profile" not in skip:
        parser.add_argument("--profile", choices=course_config.PROFILES, default=None,
                            help="toy (offline toy world) or full (real data); default $COURSE_PROFILE, else toy")
    if "dataset" not in skip:
        parser.add_argument("--dataset", default=None, help=dataset_help)
    if "data_root" not in skip:
        parser.add_argument("--data-root", type=Path, default=None,
                            help="root folder of the real datasets (default $COURSE_DATA)")
    if "device" not in skip:
        parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1, mps (default: the best available)")
    if "threads" not in skip:
        parser.add_argument("--threads", type=int, default=None, help="torch CPU threads per process")
    if "seed" not in skip:
        parser.add_argument("--seed", type=int, default=None, help="random seed")
    if "max_steps" not in skip:
        parser.add_argument("--max-steps", type=int, default=None,
                            help="cap on the optimisation steps of every training stage")
    if "print_config" not in skip:
        parser.add_argument("--print-config", action="store_true",
                            help="print the resolved configuration as JSON and exit")


def apply_common(args: argparse.Namespace) -> None:
    """Act on the shared flags that change the process: ``--data-root`` sets ``$COURSE_DATA`` (every
    loader reads it), ``--threads`` sets torch's CPU threads. Checks ``--max-steps`` / ``--threads``."""
    for name in ("max_steps", "threads"):
        value = getattr(args, name, None)
        if value is not None and value < 1:
            raise course_config.ConfigError(f"--{name.replace('_', '-')} must be at least 1 (got {value})")
    if getattr(args, "data_root", None) is not None:
        os.environ["COURSE_DATA"] = str(Path(args.data_root).expanduser().resolve())
    if getattr(args, "threads", None):
        import torch

        torch.set_num_threads(args.threads)


def cap_steps(steps: int, max_steps: int | None = None) -> int:
    """``steps`` capped by ``--max-steps`` and, under ``COURSE_SMOKE``, by 2."""
    if max_steps is not None:
        steps = min(steps, max_steps)
    return course_config.smoke_steps(steps)


def to_json(value: Any) -> Any:
    """``value`` as plain JSON: tensors, numpy values and paths converted, non-finite floats as ``None``."""
    if isinstance(value, dict):
        return {str(key): to_json(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(item) for item in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        return to_json(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(path: str | os.PathLike, value: Any) -> Path:
    """Write ``value`` (through :func:`to_json`, so finite numbers only) atomically to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(to_json(value), indent=2, allow_nan=False) + "\n")
    partial.replace(path)
    return path


def print_config(config: Any) -> None:
    """Print the resolved configuration as JSON (``--print-config``)."""
    print(json.dumps(to_json(config), indent=2, allow_nan=False))


def run_cli(main: Callable[[list[str] | None], Any], argv: list[str] | None = None) -> None:
    """Run a CLI's ``main``: an expected failure (a :class:`~course_lib.config.CourseError`: missing dataset or
    weights, bad value, wrong layout or encoding) prints ``error: <message>`` on stderr and exits 2 (no
    traceback); Ctrl-C says how to resume and exits 130; otherwise exit 0."""
    try:
        main(argv)
    except course_config.CourseError as error:
        print(f"\nerror: {error}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("\ninterrupted: run the same command again to resume from the last checkpoint.", file=sys.stderr)
        sys.exit(130)
    sys.exit(0)
