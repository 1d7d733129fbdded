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
``--overwrite``    start the run folder afresh when it holds another configuration or a finished run
``--debug``        show the traceback of an expected failure (also ``COURSE_DEBUG=1``)
=================  ============================================================================

Bad values never reach the training code: the typed validators (:func:`positive_int`,
:func:`non_negative_int`, :func:`positive_float`, :func:`non_negative_float`, :func:`probability`,
:func:`int_range`, :func:`float_range`) make :class:`ArgumentParser` stop with one line on stderr that
names the flag, the value and what is allowed (exit status 2), and :func:`prepare_out` checks that
``--out`` is a folder this process can write before any work.

A run folder's ``config.json`` is the record of its run (:func:`guard_run`): a command with another
configuration is refused with the keys that differ (``--overwrite`` starts afresh), a finished identical
run is reported and left as it is. Result files are written under a temporary name and renamed when
complete (:func:`write_json`, :func:`save_atomic`, :func:`replace_when_written`).

:func:`run_cli` turns the course's expected failures (a dataset or weight file not downloaded, a bad
option value) into a short message on stderr that names the fix, with no traceback.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import sys
import uuid
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from . import config as course_config


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser whose errors are one line on stderr, ``error: <prog>: argument --flag: <what is
    wrong> (--help lists the options)``, with exit status 2 (no usage block, no traceback)."""

    def error(self, message: str):  # noqa: D102 - argparse's hook
        self.exit(2, f"error: {self.prog}: {message} (--help lists the options)\n")


def _parse_number(text: str, kind: type) -> int | float:
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def _bounds(low: float | None, high: float | None, low_open: bool, high_open: bool) -> str:
    parts = ([f"{'>' if low_open else '>='} {low}"] if low is not None else []) + \
            ([f"{'<' if high_open else '<='} {high}"] if high is not None else [])
    return " and ".join(parts)


def _ranged(kind: type, low: float | None, high: float | None, low_open: bool, high_open: bool,
            name: str) -> Callable[[str], Any]:
    """An argparse ``type``: ``kind(text)`` within the bounds, else an error naming the value and the range."""
    noun = "an integer" if kind is int else "a number"

    def check(text: str):
        value = _parse_number(text, kind)
        too_low = low is not None and (value <= low if low_open else value < low)
        too_high = high is not None and (value >= high if high_open else value > high)
        if too_low or too_high:
            raise argparse.ArgumentTypeError(f"must be {noun} {_bounds(low, high, low_open, high_open)}, got {text}")
        return value

    check.__name__ = name
    return check


def int_range(low: int | None = None, high: int | None = None) -> Callable[[str], int]:
    """An argparse ``type`` for an integer in ``[low, high]`` (``None``: unbounded on that side)."""
    return _ranged(int, low, high, False, False, "int_range")


def float_range(low: float | None = None, high: float | None = None, *, low_open: bool = False,
                high_open: bool = False) -> Callable[[str], float]:
    """An argparse ``type`` for a finite number between ``low`` and ``high`` (open ends on request)."""
    return _ranged(float, low, high, low_open, high_open, "float_range")


positive_int = int_range(1)
"""argparse ``type``: an integer ≥ 1 (steps, epochs, images, sizes, intervals)."""
non_negative_int = int_range(0)
"""argparse ``type``: an integer ≥ 0 (worker processes, seeds)."""
positive_float = float_range(0, low_open=True)
"""argparse ``type``: a finite number > 0 (learning rates, temperatures, time budgets)."""
non_negative_float = float_range(0)
"""argparse ``type``: a finite number ≥ 0 (loss weights, weight decay)."""
probability = float_range(0, 1)
"""argparse ``type``: a number in [0, 1]."""


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
        parser.add_argument("--threads", type=positive_int, default=None, help="torch CPU threads per process")
    if "seed" not in skip:
        parser.add_argument("--seed", type=non_negative_int, default=None, help="random seed")
    if "max_steps" not in skip:
        parser.add_argument("--max-steps", type=positive_int, default=None,
                            help="cap on the optimisation steps of every training stage")
    if "print_config" not in skip:
        parser.add_argument("--print-config", action="store_true",
                            help="print the resolved configuration as JSON and exit")
    if "overwrite" not in skip:
        parser.add_argument("--overwrite", action="store_true",
                            help="start afresh in a run folder that holds another configuration or a finished run")
    parser.add_argument("--debug", action="store_true",
                        help="show the traceback of an expected failure (also COURSE_DEBUG=1)")


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


@contextlib.contextmanager
def replace_when_written(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path beside ``path`` (same suffix, so writers that go by it still work) that is renamed
    onto ``path`` when the ``with`` block completes and removed when it fails: a reader never sees half a
    file, and an interrupted write leaves the previous ``path`` as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.stem}.partial-{uuid.uuid4().hex[:8]}{path.suffix}")
    try:
        yield partial
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def write_json(path: str | os.PathLike, value: Any) -> Path:
    """Write ``value`` (through :func:`to_json`, so finite numbers only) atomically to ``path``."""
    text = json.dumps(to_json(value), indent=2, allow_nan=False) + "\n"
    with replace_when_written(path) as partial:
        partial.write_text(text)
    return Path(path)


def save_atomic(state: Any, path: str | os.PathLike) -> Path:
    """``torch.save(state, path)`` through a temporary file renamed into place (checkpoints, weights)."""
    import torch

    with replace_when_written(path) as partial:
        torch.save(state, partial)
    return Path(path)


def prepare_out(out: str | os.PathLike, flag: str = "--out") -> Path:
    """Create the run folder ``out`` and check that this process can write in it, before any work: a
    file in its place or a folder that cannot be created or written raises a
    :class:`~course_lib.config.ConfigError` naming ``flag`` and the path."""
    out = Path(out).expanduser()
    if out.exists() and not out.is_dir():
        raise course_config.ConfigError(f"{flag} {out} is a file, not a folder: give a folder for the run's files")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test-{uuid.uuid4().hex[:8]}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise course_config.ConfigError(f"{flag} {out} is not a folder this process can write "
                                        f"({error.strerror or error}): give another {flag}") from None
    return out


def flatten(record: dict, prefix: str = "") -> dict[str, Any]:
    """A nested dict as ``{"dotted.key": value}`` (lists and other values kept whole)."""
    flat: dict[str, Any] = {}
    for key, value in record.items():
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def config_changes(saved: dict, current: dict, ignore: Iterable[str] = ()) -> list[str]:
    """``"key: old -> new"`` for every dotted key whose value differs between two configuration records,
    except the keys in ``ignore`` (and the keys under them)."""
    ignore = tuple(ignore)
    old, new = flatten(to_json(saved)), flatten(to_json(current))
    return [f"{key}: {json.dumps(old.get(key))} -> {json.dumps(new.get(key))}" for key in sorted(set(old) | set(new))
            if old.get(key) != new.get(key) and not any(key == name or key.startswith(name + ".") for name in ignore)]


RUN_ONLY_KEYS = ("out", "device", "threads", "debug", "overwrite", "print_config")
"""Keys of a run record that never change a result (where it runs, how fast); :func:`guard_run` ignores them
at any depth."""


def guard_run(out: str | os.PathLike, record: dict, *, overwrite: bool = False, outputs: Iterable[str] = (),
              ignore: Iterable[str] = ()) -> dict | None:
    """Check the run folder ``out`` against this command's configuration ``record`` (what ``config.json``
    holds) before any work, so that no finished result is ever replaced by mistake.

    - ``overwrite``: the run's files (``outputs``, relative to ``out``, plus ``config.json`` and
      ``metrics.json``) are deleted and the run starts afresh; returns ``None``.
    - ``out/config.json`` records another configuration: :class:`~course_lib.config.ConfigError` listing
      the keys that differ (except ``ignore`` and :data:`RUN_ONLY_KEYS`), which names ``--overwrite``.
    - a ``metrics.json`` with no ``config.json`` (a run nobody recorded) is refused the same way.
    - the same configuration and a ``metrics.json`` that is not marked ``"finished": false``: the run is
      done; it says so and returns the saved metrics (the caller then exits without training).
    - otherwise ``None``: a new run, or one to resume from its checkpoints.
    """
    out = Path(out)
    config_path, metrics_path = out / "config.json", out / "metrics.json"
    if overwrite:
        for name in (*outputs, "config.json", "metrics.json"):
            target = out / name
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            else:
                target.unlink(missing_ok=True)
        return None
    fix = "choose another --out, or add --overwrite to start this run afresh there"
    if not config_path.is_file():
        if metrics_path.is_file():
            raise course_config.ConfigError(f"{out} holds a finished run (metrics.json) but no config.json that "
                                            f"says how it was made: {fix}")
        return None
    try:
        saved = json.loads(config_path.read_text())
    except (OSError, ValueError) as error:
        raise course_config.ConfigError(f"{config_path} cannot be read ({error}): {fix}") from None
    ignored = [*ignore, *(key for key in flatten(to_json({**saved, **to_json(record)}))
                          if key.rsplit(".", 1)[-1] in RUN_ONLY_KEYS)]
    changes = config_changes(saved, record, ignored)
    if changes:
        shown = "; ".join(changes[:8]) + (f"; and {len(changes) - 8} more" if len(changes) > 8 else "")
        raise course_config.ConfigError(f"{out} holds a run with another configuration ({shown}): {fix}")
    if metrics_path.is_file():
        try:
            metrics = json.loads(metrics_path.read_text())
        except (OSError, ValueError):
            return None  # an unreadable record of the results: the run is redone and writes it again
        if metrics.get("finished", True) is not False:
            print(f"{out} already holds this run, finished: its results are in {metrics_path} "
                  "(nothing retrained; --overwrite trains it again)", flush=True)
            return metrics
    return None


def print_config(config: Any) -> None:
    """Print the resolved configuration as JSON (``--print-config``)."""
    print(json.dumps(to_json(config), indent=2, allow_nan=False))


def debug_requested(argv: list[str] | None = None) -> bool:
    """``--debug`` among the arguments (default ``sys.argv``) or ``COURSE_DEBUG`` set to anything but 0."""
    arguments = sys.argv[1:] if argv is None else argv
    return "--debug" in arguments or os.environ.get("COURSE_DEBUG", "0").strip() not in ("", "0")


def run_cli(main: Callable[[list[str] | None], Any], argv: list[str] | None = None) -> None:
    """Run a CLI's ``main``: an expected failure (a :class:`~course_lib.config.CourseError`: missing dataset or
    weights, bad value, wrong layout or encoding) prints ``error: <message>`` on stderr and exits 2 (no
    traceback; ``--debug`` or ``COURSE_DEBUG=1`` shows it); Ctrl-C says how to resume and exits 130;
    otherwise exit 0."""
    try:
        main(argv)
    except course_config.CourseError as error:
        if debug_requested(argv):
            raise
        print(f"\nerror: {error}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("\ninterrupted: run the same command again to resume from the last checkpoint.", file=sys.stderr)
        sys.exit(130)
    sys.exit(0)
