"""A deliberately slower variant of a model with the same I/O and the same outputs: every
operator of the main graph runs `repeats` more times on copies of its intermediate tensors
(LiteRT executes every operator of the graph, used or not). No TensorFlow needed."""

from __future__ import annotations

import copy
from typing import Any


def slow_variant(blob: bytes, repeats: int) -> bytes:
    from ai_edge_litert.tools import flatbuffer_utils

    model: Any = flatbuffer_utils.read_model_from_bytearray(bytearray(blob))
    graph = model.subgraphs[0]
    produced = sorted({o for op in graph.operators for o in op.outputs})
    extra = []
    for r in range(repeats):
        remap = {}
        for t in produced:
            tensor = copy.deepcopy(graph.tensors[t])
            name = tensor.name or b""
            tensor.name = (
                name if isinstance(name, bytes) else name.encode()
            ) + f"/slow{r}".encode()
            remap[t] = len(graph.tensors)
            graph.tensors.append(tensor)
        for op in graph.operators:
            twin = copy.deepcopy(op)
            twin.inputs = [remap.get(i, i) if i >= 0 else i for i in op.inputs]
            twin.outputs = [remap[o] for o in op.outputs]
            extra.append(twin)
    graph.operators = extra + list(graph.operators)
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))
