"""Checking a freshly loaded model before it serves: it must fit the release and the app.

Off the hot path, on the updater's thread: the model's input/output signature against the one
the release declares and the one the application runs today, then a smoke invocation on a
sample input and on recent real frames, whose float outputs must be finite.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from shared.documents import IOSignature, Release
from shared.errors import InvalidModel, IOSignatureMismatch
from shared.verify import describe_io

if TYPE_CHECKING:
    from agent.runtime.protocol import Model

__all__ = ["check_model"]


def check_model(
    model: Model,
    release: Release,
    expected: IOSignature | None,
    recent_inputs: Sequence[list[np.ndarray]] = (),
) -> None:
    """Raise `IOSignatureMismatch` or `InvalidModel` when `model` may not serve."""
    if not model.signature.fits(release.io):
        raise IOSignatureMismatch(
            f"model has {describe_io(model.signature)}, the release declares "
            f"{describe_io(release.io)}"
        )
    if expected is not None and not model.signature.fits(expected):
        raise IOSignatureMismatch(
            f"model has {describe_io(model.signature)}, the application expects "
            f"{describe_io(expected)}"
        )
    for inputs in [model.sample_input(), *recent_inputs]:
        try:
            outputs = model.invoke(inputs)
        except Exception as e:
            raise InvalidModel(f"smoke test failed: {e}") from e
        for out in outputs:
            arr = np.asarray(out)
            if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
                raise InvalidModel("smoke test produced NaN or infinite outputs")
