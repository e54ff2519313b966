"""The I/O signature the application expects, and whether a candidate keeps it.

A device refuses a model whose inputs or outputs differ (dtype or shape) from the model it runs
(`io_signature_mismatch`). The worker therefore keeps the original model's signature unless
told otherwise (`--io`): `int8` asks for int8 inputs and outputs (a full-integer pipeline such
as an Edge TPU application), a `.tflite` path for the signature of that model (the one the
devices run now). A candidate whose signature differs is marked and never chosen.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from cloud.compress.errors import InputRejected
from cloud.modelinfo import read_io_signature
from shared.documents import IOSignature
from shared.errors import InvalidModel
from shared.verify import describe_io

__all__ = ["IO_CHOICES", "expected_io", "io_change", "read_io", "wants_int8_io"]

IO_CHOICES = ("int8", "float32")


def read_io(path: Path) -> IOSignature:
    try:
        return read_io_signature(path)
    except InvalidModel as e:
        raise InputRejected(str(e)) from e


def expected_io(original: IOSignature, io: str | Path | None) -> IOSignature:
    """The signature candidates must keep: the original's, or what `io` names."""
    if io is None:
        return original
    if str(io) in IO_CHOICES:
        dtype = str(io)
        return IOSignature(
            tuple(replace(t, dtype=dtype, scale=None, zero_point=None) for t in original.inputs),
            tuple(replace(t, dtype=dtype, scale=None, zero_point=None) for t in original.outputs),
        )
    path = Path(io)
    if not path.is_file():
        raise InputRejected(f"--io {io}: expected int8, float32 or the path of a .tflite")
    named = read_io(path)
    if not named.fits(original) and not _same_shapes(named, original):
        raise InputRejected(
            f"--io {path}: its signature ({describe_io(named)}) has other shapes than the "
            f"model's ({describe_io(original)})"
        )
    return named


def _same_shapes(a: IOSignature, b: IOSignature) -> bool:
    return [t.shape for t in a.inputs] == [t.shape for t in b.inputs] and [
        t.shape for t in a.outputs
    ] == [t.shape for t in b.outputs]


def wants_int8_io(expected: IOSignature) -> bool:
    return all(t.dtype == "int8" for t in (*expected.inputs, *expected.outputs))


def io_change(expected: IOSignature, actual: IOSignature) -> str | None:
    """None when `actual` fits `expected`; else one phrase saying how it differs."""
    if actual.fits(expected):
        return None
    return (
        f"changes I/O: {describe_io(actual)} where the application expects {describe_io(expected)}"
    )
