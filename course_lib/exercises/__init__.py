"""Exercises that can fail: the helpers every lesson's checks use (DESIGN §6, issue 17 item 1).

A lesson's exercise is a markdown cell "### Exercise N: <title>", one code cell tagged ``solution`` (the answer,
which :mod:`course_lib.exercises.student` turns into a stub) and a code cell calling
``course_lib.exercises.lessonNN.check_<name>(...)``. A check computes its own reference and raises

- :class:`ExerciseNotDone` while the answer is still the stub (``...``, ``None`` or ``NotImplementedError``),
- :class:`ExerciseWrong` when the answer is off, with what is off and a hint,

and prints "✓ <what>: <detail>" (:func:`passed`) when it is right. In a notebook both errors show as their
message only (``_render_traceback_``), as :class:`course_lib.config.CourseError` does.
"""
from __future__ import annotations

from typing import Any, Callable, TypeVar

import numpy as np
import torch

T = TypeVar("T")

_STUB_HINT = "replace the `...` (or the `raise NotImplementedError`) with your code"


class _ExerciseError(AssertionError):
    """An exercise check that did not pass; IPython shows its message only, no traceback."""

    def _render_traceback_(self) -> list[str]:
        return str(self).splitlines() or [""]


class ExerciseNotDone(_ExerciseError):
    """The learner's answer is still the stub."""


class ExerciseWrong(_ExerciseError):
    """The learner's answer is there but does not match the check's own reference."""


def _not_done(what: str) -> ExerciseNotDone:
    return ExerciseNotDone(f"✗ {what}: not done yet — {_STUB_HINT}")


def _wrong(what: str, problem: str, hint: str = "") -> ExerciseWrong:
    return ExerciseWrong(f"✗ {what}: {problem}" + (f"; hint: {hint}" if hint else ""))


def require_done(value: T, what: str) -> T:
    """Returns ``value``; raises :class:`ExerciseNotDone` if it is the stub (``...`` / Ellipsis, or ``None``)."""
    if value is ... or value is None:
        raise _not_done(what)
    return value


def call_learner(fn: Callable[..., Any], *args: Any, what: str, **kwargs: Any) -> Any:
    """Calls the learner's ``fn(*args, **kwargs)`` and returns its result.

    A ``NotImplementedError`` raised by ``fn`` or a returned ``...`` becomes :class:`ExerciseNotDone`; any other
    exception becomes :class:`ExerciseWrong` carrying the exception's type and message.
    """
    if fn is ... or fn is None:
        raise _not_done(what)
    try:
        result = fn(*args, **kwargs)
    except NotImplementedError:
        raise _not_done(what) from None
    except _ExerciseError:
        raise
    except Exception as error:  # the learner's bug, reported as the exercise's failure
        raise _wrong(what, f"your function raised {type(error).__name__}: {error}") from error
    if result is ...:
        raise _not_done(what)
    return result


def _as_array(value: Any, what: str) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().double().numpy()
    try:
        return np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise _wrong(what, f"expected a number, array or tensor, got {type(value).__name__}") from error


def expect_close(actual: Any, expected: Any, what: str, rtol: float = 1e-4, atol: float = 1e-6,
                 hint: str = "") -> None:
    """Raises :class:`ExerciseNotDone` if ``actual`` is the stub, :class:`ExerciseWrong` if its shape differs from
    ``expected``'s (naming both) or if ``|actual − expected| > atol + rtol·|expected|`` somewhere (reporting the
    largest relative error and where). Accepts floats, numpy arrays and torch tensors."""
    require_done(actual, what)
    a, e = _as_array(actual, what), _as_array(expected, what)
    if a.shape != e.shape:
        raise _wrong(what, f"shape {tuple(a.shape)}, expected {tuple(e.shape)}", hint)
    if not np.all(np.isfinite(a)):
        raise _wrong(what, "contains NaN or inf", hint)
    bad = np.abs(a - e) > atol + rtol * np.abs(e)
    if bad.any():
        relative = np.abs(a - e) / np.maximum(np.abs(e), atol)
        where = np.unravel_index(int(np.argmax(relative)), a.shape) if a.ndim else ()
        at = f" at index {tuple(int(i) for i in where)}" if a.ndim else ""
        raise _wrong(what, f"off by {100 * float(relative.max()):.3g} %{at} "
                           f"(got {float(a[where]):.6g}, expected {float(e[where]):.6g}; "
                           f"{int(bad.sum())} of {bad.size} values outside the tolerance)", hint)


def expect(condition: bool, what: str, hint: str) -> None:
    """Raises :class:`ExerciseWrong` with ``hint`` (what is off) unless ``condition`` holds."""
    if not bool(condition):
        raise _wrong(what, hint)


def passed(what: str, detail: str = "") -> None:
    """Prints "✓ <what>: <detail>" (or "✓ <what>")."""
    print(f"✓ {what}" + (f": {detail}" if detail else ""))
