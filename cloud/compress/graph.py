"""Preparing a published `.tflite` for the quantizer, by editing its flatbuffer (no TensorFlow).

Two things published models often do that ai-edge-quantizer does not handle on its own:

* **float16 weights behind `DEQUANTIZE` ops** (what the TFLite converter's float16 option
  writes). The quantizer sees the convolution's weight as the output of an op, not as a
  constant, and leaves it alone: every candidate comes out the size of the original.
  `fold_float16_weights` replaces each `DEQUANTIZE` of a float16 constant by the float32
  constant it computes, so the quantizer starts from an ordinary float32 model.
* **no SignatureDef**: the quantizer's calibration runs signatures. `with_signature` adds one
  (`serving_default`, inputs `input_0`..., outputs `output_0`...) over the subgraph's own
  inputs and outputs; it changes neither tensors nor their order.

The flatbuffer is read and written with the schema bindings LiteRT ships
(`ai_edge_litert.tools.flatbuffer_utils`), the ones the quantizer itself uses.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from cloud.compress.errors import InputRejected

__all__ = [
    "SIGNATURE_KEY",
    "Folded",
    "copy_io_names",
    "fold_float16_weights",
    "has_signature",
    "with_signature",
]

SIGNATURE_KEY = "serving_default"
_FLOAT32, _FLOAT16 = 0, 1
_DEQUANTIZE = 6


@dataclass(frozen=True)
class Folded:
    blob: bytes
    folded: int  # DEQUANTIZE ops replaced by float32 constants
    float16_params: int  # weights that were stored as float16


def _read(blob: bytes) -> Any:
    from ai_edge_litert.tools import flatbuffer_utils

    try:
        return flatbuffer_utils.read_model_from_bytearray(bytearray(blob))
    except Exception as e:  # the reader raises whatever the bytes trigger
        raise InputRejected(f"not a TFLite flatbuffer: {e}") from e


def _write(model: Any) -> bytes:
    from ai_edge_litert.tools import flatbuffer_utils

    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def _opcode(model: Any, index: int) -> int:
    code = model.operatorCodes[index]
    return int(max(code.builtinCode, code.deprecatedBuiltinCode))


def fold_float16_weights(blob: bytes) -> Folded:
    """Replace `DEQUANTIZE(float16 constant) -> float32` by the float32 constant itself.

    Returns the model unchanged (`folded == 0`) when it has no such op.
    """
    from ai_edge_litert import schema_py_generated as schema

    model = _read(blob)
    folded = params = 0
    for subgraph_index, subgraph in enumerate(model.subgraphs or []):
        kept, sources = [], []
        for op in subgraph.operators or []:
            source = _float16_constant(model, subgraph, op)
            if source is None:
                kept.append(op)
                continue
            values, count = source
            out = subgraph.tensors[op.outputs[0]]
            buffer = schema.BufferT()
            buffer.data = np.frombuffer(values.astype("<f4").tobytes(), dtype=np.uint8)
            model.buffers.append(buffer)
            out.buffer = len(model.buffers) - 1
            sources.append(op.inputs[0])
            folded += 1
            params += count
        subgraph.operators = kept
        referenced = {i for op in kept for i in (*op.inputs, *op.outputs)}
        referenced |= {*subgraph.inputs, *subgraph.outputs}
        _remove_tensors(model, subgraph_index, {i for i in sources if i not in referenced})
    if not folded:
        return Folded(blob, 0, 0)
    _drop_unused_buffers(model)
    return Folded(_write(model), folded, params)


def _float16_constant(model: Any, subgraph: Any, op: Any) -> tuple[np.ndarray, int] | None:
    """The float16 values an op dequantizes, when it is a DEQUANTIZE of a float16 constant
    into a float32 tensor; else None."""
    if _opcode(model, op.opcodeIndex) != _DEQUANTIZE or len(op.inputs) != 1:
        return None
    src = subgraph.tensors[op.inputs[0]]
    dst = subgraph.tensors[op.outputs[0]]
    if src.type != _FLOAT16 or dst.type != _FLOAT32 or not src.buffer:
        return None
    data = model.buffers[src.buffer].data
    if data is None or len(data) == 0:
        return None
    count = int(np.prod(src.shape)) if src.shape is not None else 0
    raw = np.asarray(data, dtype=np.uint8)
    if raw.size != 2 * count:
        return None
    return raw.view("<f2").astype(np.float32), count


def _remove_tensors(model: Any, subgraph_index: int, unused: set[int]) -> None:
    """Remove the tensors `unused` (referenced by nothing) and renumber the rest: the
    interpreter would leave them without data, and the quantizer reads every tensor."""
    if not unused:
        return
    subgraph = model.subgraphs[subgraph_index]
    new_index: dict[int, int] = {}
    kept: list[Any] = []
    for index, tensor in enumerate(subgraph.tensors):
        if index not in unused:
            new_index[index] = len(kept)
            kept.append(tensor)
    subgraph.tensors = kept

    def renumber(indices: Any) -> Any:
        if indices is None:
            return None
        return [-1 if i < 0 else new_index[int(i)] for i in indices]

    for op in subgraph.operators or []:
        op.inputs, op.outputs = renumber(op.inputs), renumber(op.outputs)
        op.intermediates = renumber(op.intermediates)
    subgraph.inputs, subgraph.outputs = renumber(subgraph.inputs), renumber(subgraph.outputs)
    for signature in model.signatureDefs or []:
        if signature.subgraphIndex == subgraph_index:
            for m in (*(signature.inputs or []), *(signature.outputs or [])):
                m.tensorIndex = new_index[m.tensorIndex]


def _drop_unused_buffers(model: Any) -> None:
    """Empty the buffers no tensor refers to any more (the float16 originals)."""
    used = {t.buffer for sg in model.subgraphs or [] for t in sg.tensors or []}
    for index, buffer in enumerate(model.buffers):
        if index and index not in used and buffer.data is not None:
            buffer.data = None


def has_signature(blob: bytes) -> bool:
    return bool(_read(blob).signatureDefs)


def with_signature(blob: bytes) -> bytes:
    """`blob` with a `serving_default` signature over subgraph 0's inputs and outputs, when it
    has no signature; else `blob` itself."""
    from ai_edge_litert import schema_py_generated as schema

    model = _read(blob)
    if model.signatureDefs:
        return blob
    subgraph = model.subgraphs[0]

    def tensor_maps(indices: Any, prefix: str) -> list[Any]:
        maps = []
        for k, index in enumerate(indices):
            m = schema.TensorMapT()
            m.name, m.tensorIndex = f"{prefix}_{k}", int(index)
            maps.append(m)
        return maps

    signature = schema.SignatureDefT()
    signature.inputs = tensor_maps(subgraph.inputs, "input")
    signature.outputs = tensor_maps(subgraph.outputs, "output")
    signature.signatureKey = SIGNATURE_KEY
    signature.subgraphIndex = 0
    model.signatureDefs = [signature]
    return _write(model)


def copy_io_names(source: bytes, target: bytes) -> bytes:
    """`target` with its graph inputs and outputs named as `source`'s are (the quantizer names
    the float32 edge tensors it adds `<name>_dequant`; an application may look tensors up by
    name). A tensor inside `target` that held the name gets `<name>_inner`."""
    src, dst = _read(source), _read(target)
    a, b = src.subgraphs[0], dst.subgraphs[0]
    pairs = [*zip(a.inputs, b.inputs, strict=False), *zip(a.outputs, b.outputs, strict=False)]
    if len(a.inputs) != len(b.inputs) or len(a.outputs) != len(b.outputs):
        return target
    changed = False
    for si, ti in pairs:
        wanted = a.tensors[si].name
        if b.tensors[ti].name == wanted:
            continue
        for tensor in b.tensors:
            if tensor.name == wanted:
                tensor.name = wanted + (b"_inner" if isinstance(wanted, bytes) else "_inner")
        b.tensors[ti].name = wanted
        changed = True
    return _write(dst) if changed else target
