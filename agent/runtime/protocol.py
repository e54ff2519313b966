"""What the agent needs of a loaded model, whatever runtime loaded it (`LoadedModel` is one)."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

from shared.documents import IOSignature

__all__ = ["Model", "ModelLoader"]


class Model(Protocol):
    """A model ready to invoke: `sha256` names exactly the bytes it runs."""

    @property
    def sha256(self) -> str: ...

    @property
    def signature(self) -> IOSignature: ...

    @property
    def invoked(self) -> bool:
        """Whether it ran once (a runtime may allocate and pack weights on the first invoke)."""
        ...

    @property
    def closed(self) -> bool: ...

    def invoke(self, inputs: list[np.ndarray]) -> list[np.ndarray]: ...

    def sample_input(self) -> list[np.ndarray]: ...

    def close(self) -> None: ...


class ModelLoader(Protocol):
    """Load and smoke-test a model file (`InvalidModel` when it will not load or invoke)."""

    def __call__(self, path: Path, threads: int, delegates: tuple[str, ...], /) -> Model: ...
