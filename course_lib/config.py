"""Run-time configuration of the course: profile, paths, device, seeding, progress bars.

Everything is read from environment variables at call time, so a notebook's ``parameters``
cell (or ``os.environ`` in a test) can change it without re-importing the package.

=================  =========================  ==========================================
variable           default                    meaning
=================  =========================  ==========================================
``COURSE_PROFILE`` ``toy``                    ``toy`` (offline, CPU, toy world) or ``full``
``COURSE_DATA``    ``<project>/data``         root folder of the real datasets
``COURSE_CACHE``   ``<project>/.cache``       weights, feature caches, checkpoints
``COURSE_DEVICE``  best available             ``cuda``, ``mps``, ``cpu`` or e.g. ``cuda:1``
``COURSE_SMOKE``   unset                      ``1``: every lesson and CLI runs its real code paths at tiny
                                              size (a few images, at most 2 steps per stage, small
                                              resolutions); with ``full`` it is the full profile's dry run
``TQDM_DISABLE``   unset                      ``1`` hides every progress bar (CI, nbval)
=================  =========================  ==========================================

``<project>`` is the checkout that holds the package when it is installed from source
(``pip install -e .``); otherwise the current working directory.
"""
from __future__ import annotations

import os
import random
import re
from pathlib import Path
from typing import Iterable, TypeVar

import numpy as np

PROFILES = ("toy", "full")
T = TypeVar("T")


class CourseError(Exception):
    """Base of the course's expected, user-fixable failures (a missing download, a bad value).

    In a notebook, IPython shows only the message (``_render_traceback_``), not a traceback: the message
    already names the fix (e.g. the ``data_scripts`` command that fetches a missing dataset)."""

    def _render_traceback_(self) -> list[str]:
        return [f"{type(self).__name__}: {line}" if i == 0 else line
                for i, line in enumerate(str(self).splitlines() or [""])]


class ConfigError(CourseError, ValueError):
    """A configuration value (environment variable or argument) is not valid."""


def profile(name: str | None = None) -> str:
    """The active profile: ``name`` if given, else ``$COURSE_PROFILE``, else ``"toy"``."""
    value = (name if name is not None else os.environ.get("COURSE_PROFILE", "toy")).strip().lower()
    if value not in PROFILES:
        raise ConfigError(
            f"Unknown course profile {value!r}: use one of {', '.join(PROFILES)} "
            "(set COURSE_PROFILE=toy for the offline toy world, COURSE_PROFILE=full for real data on a GPU)."
        )
    return value


def project_root() -> Path:
    """The source checkout that holds ``course_lib`` (has a ``pyproject.toml``), else the cwd."""
    candidate = Path(__file__).resolve().parent.parent
    if (candidate / "pyproject.toml").is_file():
        return candidate
    return Path.cwd()


def _path_from_env(variable: str, default_name: str) -> Path:
    value = os.environ.get(variable)
    path = Path(value).expanduser() if value else project_root() / default_name
    return path.resolve()


def data_dir() -> Path:
    """Root of the real datasets (``$COURSE_DATA``, default ``<project>/data``)."""
    return _path_from_env("COURSE_DATA", "data")


def cache_dir() -> Path:
    """Root of weights, feature caches and checkpoints (``$COURSE_CACHE``, default ``<project>/.cache``)."""
    return _path_from_env("COURSE_CACHE", ".cache")


def smoke() -> bool:
    """True when ``$COURSE_SMOKE`` is set to a true value: run everything at tiny size (the dry run)."""
    return os.environ.get("COURSE_SMOKE", "").strip().lower() in {"1", "true", "yes", "on"}


def smoke_steps(steps: int, limit: int = 2) -> int:
    """``steps``, capped at ``limit`` (2 optimisation steps per stage) under ``COURSE_SMOKE``."""
    return min(steps, limit) if smoke() else steps


def banner(data: str, backbone: str, device: object | None = None) -> str:
    """The one line every lesson prints first, so a learner always knows what ran, e.g.
    ``profile: toy · data: toy world (scenes) · backbone: toy_vit · device: cpu`` (``· smoke`` is
    appended under ``COURSE_SMOKE``). Printed as well as returned."""
    line = f"profile: {profile()} · data: {data} · backbone: {backbone} · device: {device or get_device()}"
    if smoke():
        line += " · smoke (COURSE_SMOKE=1: tiny sizes, proves the plumbing, not the quality)"
    print(line, flush=True)
    return line


def runs_dir() -> Path:
    """Where the training CLIs' runs live by default and the lessons look for them: ``COURSE_CACHE/runs``."""
    return cache_dir() / "runs"


def default_run_dir(method: str, dataset: str, backbone: str | None = None) -> Path:
    """The standard run folder of ``method`` on ``dataset`` (and ``backbone``), e.g.
    ``COURSE_CACHE/runs/stego_cocostuff27_dino_vits8``: a CLI writes there when ``--out`` is not given,
    and a lesson's full branch loads the run from there when it exists."""
    return runs_dir() / "_".join(part for part in (method, dataset, backbone) if part)


DEVICE_FORMS = "cpu, cuda, cuda:N (N = 0, 1, ... a GPU index) or mps"
_DEVICE_PATTERN = re.compile(r"cpu|mps|cuda(:\d+)?")


def get_device(preference: str | None = None):
    """A ``torch.device``: ``preference`` or ``$COURSE_DEVICE`` if set, else cuda, then mps, then cpu.

    Raises:
        ConfigError: the value is not one of :data:`DEVICE_FORMS`, or names a device this machine
            does not have; the message names where the value came from (``COURSE_DEVICE`` or the
            ``--device`` option / ``device`` argument).
    """
    import torch

    wanted = preference or os.environ.get("COURSE_DEVICE")
    if wanted:
        wanted = str(wanted).strip().lower()
        named = f"device {wanted!r} (--device option or device argument)" if preference else f"COURSE_DEVICE={wanted!r}"
        if not _DEVICE_PATTERN.fullmatch(wanted):
            raise ConfigError(f"{named} is not a valid device: use {DEVICE_FORMS}.")
        device = torch.device(wanted)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ConfigError(f"{named}: CUDA is not available on this machine; use cpu"
                              + (" or mps." if _mps_available() else "."))
        if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"{named}: this machine has {torch.cuda.device_count()} CUDA "
                              f"device(s), numbered from 0.")
        if device.type == "mps" and not _mps_available():
            raise ConfigError(f"{named}: MPS is not available on this machine; use cpu"
                              + (" or cuda." if torch.cuda.is_available() else "."))
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if _mps_available():
        return torch.device("mps")
    return torch.device("cpu")


def _mps_available() -> bool:
    import torch

    return getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()


def seed_everything(seed: int = 0) -> None:
    """Seed Python, NumPy and PyTorch (all devices) so that re-runs give the same numbers."""
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    os.environ["PYTHONHASHSEED"] = str(seed)


def progress_disabled() -> bool:
    """True when ``$TQDM_DISABLE`` is set to a true value (``1``, ``true``, ``yes``)."""
    return os.environ.get("TQDM_DISABLE", "").strip().lower() in {"1", "true", "yes", "on"}


def progress(iterable: Iterable[T] | None = None, **kwargs) -> Iterable[T]:
    """A ``tqdm.auto`` progress bar (notebook widget or terminal) that respects ``$TQDM_DISABLE``.

    Takes the same arguments as ``tqdm``; ``disable`` defaults to :func:`progress_disabled`.
    """
    from tqdm.auto import tqdm

    kwargs.setdefault("disable", progress_disabled())
    kwargs.setdefault("dynamic_ncols", True)
    return tqdm(iterable, **kwargs)


def display_path(path: Path) -> str:
    """``path`` relative to the project root when inside it (no absolute paths in notebooks)."""
    try:
        return "./" + path.relative_to(project_root()).as_posix()
    except ValueError:
        return str(path)


def environment_report() -> dict[str, str]:
    """Versions, device and settings of this environment, for the set-up check of lesson 00."""
    import platform

    import torch
    import torchvision

    report = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "numpy": np.__version__,
        "device": str(get_device()),
        "cuda available": str(torch.cuda.is_available()),
        "profile": profile(),
        "COURSE_DATA": display_path(data_dir()),
        "COURSE_CACHE": display_path(cache_dir()),
    }
    try:
        import pydensecrf.densecrf  # noqa: F401  (the pydensecrf2 package)

        report["pydensecrf"] = "ok"
    except ImportError as exc:
        report["pydensecrf"] = f"missing ({exc}); the CRF falls back to pure PyTorch"
    return report
