"""The model runtime: LiteRT (or tflite-runtime) interpreters behind one small type.

model = load_model(path, threads=2, delegates=profile.runtime.delegates)
outputs = model.invoke(inputs)       # list of arrays in, list of arrays out
model.signature                      # shared.documents.IOSignature
model.close()
"""

from __future__ import annotations

from agent.runtime.backend import Backend, NoRuntime, backend
from agent.runtime.model import LoadedModel, load_model, sample_for
from agent.runtime.protocol import Model, ModelLoader
from agent.runtime.signature import io_signature, tensor_spec

__all__ = [
    "Backend",
    "LoadedModel",
    "Model",
    "ModelLoader",
    "NoRuntime",
    "backend",
    "io_signature",
    "load_model",
    "sample_for",
    "tensor_spec",
]
