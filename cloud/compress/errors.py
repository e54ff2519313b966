"""Errors of the compression worker.

    CompressError
    +-- InputRejected       the model or the data cannot be used as given (format, shape, dtype)
    +-- MethodUnavailable   a method cannot run here (TensorFlow missing, no data, wrong input kind)

`MethodUnavailable` never ends a run: the method is listed as skipped in the report, with the
reason. `InputRejected` on the model or the evaluation data ends the run.
"""

from __future__ import annotations

__all__ = ["CompressError", "InputRejected", "MethodUnavailable"]


class CompressError(Exception):
    """Root of the compression worker's errors."""


class InputRejected(CompressError):
    """The model or the data is not usable as given."""


class MethodUnavailable(CompressError):
    """A compression method cannot run with this input or in this environment."""
