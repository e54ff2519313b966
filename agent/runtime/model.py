"""A `.tflite` model loaded into an interpreter, smoke-tested and ready to invoke.

`load_model` reads the file once, hashes the bytes it loads (so `sha256` names exactly what
runs), builds the interpreter with the profile's threads and delegates, and invokes it once on a
sample input. Anything that fails on the way is `InvalidModel`: the caller keeps serving what it
had.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import threading
from pathlib import Path
from typing import Any

import numpy as np

from agent.runtime.backend import Backend, NoRuntime, backend
from agent.runtime.signature import Interpreter, io_signature
from shared.documents import IOSignature, TensorSpec
from shared.errors import InvalidModel

logger = logging.getLogger(__name__)

__all__ = ["LoadedModel", "load_model", "sample_for"]

MAX_MODEL_BYTES = 512 * 1024 * 1024  # a sanity cap; deployments carry their own, smaller, caps


class LoadedModel:
    """An interpreter holding one model. `invoke` is serialised: one caller at a time."""

    def __init__(
        self,
        path: Path,
        sha256: str,
        interpreter: Interpreter,
        backend_name: str,
        threads: int,
        delegates: tuple[str, ...],
    ) -> None:
        self.path = path
        self.sha256 = sha256
        self.backend = backend_name
        self.threads = threads
        self.delegates = delegates  # the delegate libraries actually in use
        self.signature: IOSignature = io_signature(interpreter)
        self._interpreter: Interpreter | None = interpreter
        self._inputs = tuple(int(d["index"]) for d in interpreter.get_input_details())
        self._outputs = tuple(int(d["index"]) for d in interpreter.get_output_details())
        self._lock = threading.Lock()
        self.invoked = False  # the first invoke does lazy work (allocation, weight packing)

    def invoke(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        """Set the inputs, run the model, return copies of the outputs."""
        with self._lock:
            interpreter = self._interpreter
            if interpreter is None:
                raise RuntimeError(f"model {self.sha256[:12]} is closed")
            for index, value in zip(self._inputs, inputs, strict=True):
                interpreter.set_tensor(index, value)
            interpreter.invoke()
            self.invoked = True
            return [interpreter.get_tensor(index) for index in self._outputs]

    def sample_input(self) -> list[np.ndarray]:
        """A valid input for smoke tests: seeded noise over each input's range."""
        rng = np.random.default_rng(0)
        return [sample_for(spec, rng) for spec in self.signature.inputs]

    @property
    def closed(self) -> bool:
        return self._interpreter is None

    def close(self) -> None:
        """Release the interpreter; later `invoke` calls raise `RuntimeError`."""
        with self._lock:
            self._interpreter = None

    def __repr__(self) -> str:
        return f"LoadedModel({self.path.name}, sha256={self.sha256[:12]}, backend={self.backend})"


def sample_for(spec: TensorSpec, rng: np.random.Generator) -> np.ndarray:
    dtype = np.dtype(spec.dtype)
    if dtype.kind == "f":
        return rng.random(spec.shape, dtype=np.float32).astype(dtype)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        low, high = max(info.min, -128), min(info.max, 255)
        return rng.integers(low, high, size=spec.shape, endpoint=True).astype(dtype)
    if dtype.kind == "b":
        return rng.random(spec.shape) > 0.5
    raise InvalidModel(f"input {spec.name!r} has unsupported dtype {spec.dtype}")


def _delegates(runtime: Backend, names: tuple[str, ...]) -> list[tuple[str, Any]]:
    loaded = []
    for name in names:
        try:  # probe first: a failed load_delegate leaves a half-built object behind
            ctypes.CDLL(name)
        except OSError as e:
            logger.warning("delegate %s is not available (%s); running on the CPU", name, e)
            continue
        try:
            loaded.append((name, runtime.load_delegate(name)))
        except (ValueError, OSError, RuntimeError) as e:
            logger.warning("delegate %s did not load (%s); running on the CPU", name, e)
    return loaded


def load_model(
    path: Path, threads: int = 2, delegates: tuple[str, ...] = (), backend_name: str | None = None
) -> LoadedModel:
    """Load, allocate and smoke-test `path`; raise `InvalidModel` if it will not run."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            content = f.read(MAX_MODEL_BYTES + 1)
    except OSError as e:
        raise InvalidModel(f"{path}: cannot read: {e.strerror}") from e
    if len(content) > MAX_MODEL_BYTES:
        raise InvalidModel(f"{path}: larger than {MAX_MODEL_BYTES} bytes")
    if len(content) < 8 or content[4:8] != b"TFL3":
        raise InvalidModel(f"{path}: not a TFLite flatbuffer (no TFL3 identifier)")
    sha256 = hashlib.sha256(content).hexdigest()
    try:
        runtime = backend(backend_name)
    except NoRuntime as e:
        raise InvalidModel(str(e)) from e
    extra = _delegates(runtime, delegates)
    interpreter = None
    if extra:
        try:
            interpreter = runtime.interpreter(
                model_content=content,
                num_threads=threads,
                experimental_delegates=[d for _, d in extra],
            )
            interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as e:
            logger.warning(
                "model %s does not run with delegates %s (%s); running on the CPU",
                path.name,
                ", ".join(n for n, _ in extra),
                e,
            )
            interpreter, extra = None, []
    try:
        if interpreter is None:
            interpreter = runtime.interpreter(model_content=content, num_threads=threads)
            interpreter.allocate_tensors()
        model = LoadedModel(
            path, sha256, interpreter, runtime.name, threads, tuple(n for n, _ in extra)
        )
        outputs = model.invoke(model.sample_input())
    except InvalidModel:
        raise
    except Exception as e:  # the runtime raises ValueError/RuntimeError, sometimes others
        raise InvalidModel(f"{path}: does not load or invoke: {e}") from e
    if not outputs:
        raise InvalidModel(f"{path}: the model has no outputs")
    logger.info(
        "loaded %s (sha256 %s, %s, %d threads%s)",
        path.name,
        sha256[:12],
        runtime.name,
        threads,
        ", delegates " + ", ".join(model.delegates) if model.delegates else "",
    )
    return model
