"""The inputs a model is calibrated and evaluated on: given data, or generated when there is none.

Models are fed from the interpreter's input details, one array per input. Data (`--data`,
`--eval`) gives one array per input (see `data`). Generated inputs are seeded and lie in the model's input range:
[0, 1) for float inputs (the usual image scaling), the whole representable range for integer
ones. The report says when its figures come from generated inputs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cloud.compress.data import Dataset, load_dataset
from cloud.compress.errors import InputRejected
from cloud.compress.litert import TensorInfo
from cloud.compress.options import CompressOptions

__all__ = [
    "GENERATED_SAMPLES",
    "Samples",
    "calibration_samples",
    "evaluation_samples",
    "generated",
    "load",
]

GENERATED_SAMPLES = 64


@dataclass(frozen=True)
class Samples:
    inputs: list[np.ndarray]  # one [N, ...] array per model input
    labels: np.ndarray | None
    source: str
    generated: bool

    def __len__(self) -> int:
        return len(self.inputs[0])


def load(data: object, inputs: list[TensorInfo]) -> Dataset | None:
    """`data` (a path or a Dataset) for a model with these inputs; None stays None."""
    if data is None or isinstance(data, Dataset):
        dataset = data
    else:
        try:
            dataset = load_dataset(data, *(spec.shape for spec in inputs))  # type: ignore[arg-type]
        except InputRejected as e:
            if len(inputs) == 1:
                raise
            order = ", ".join(
                f"x{k} = {spec.name} {list(spec.shape)}" for k, spec in enumerate(inputs)
            )
            raise InputRejected(f"{e} (the model's inputs: {order})") from e
    if dataset is not None and len(dataset.inputs) != len(inputs):
        raise InputRejected(
            f"{dataset.source}: {len(dataset.inputs)} input arrays for a model with "
            f"{len(inputs)} inputs"
        )
    return dataset


def generated(inputs: list[TensorInfo], n: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    arrays = []
    for spec in inputs:
        shape = (n, *spec.shape[1:])
        if spec.quantized:
            info = np.iinfo(spec.dtype)
            raw = rng.integers(info.min, info.max, size=shape, endpoint=True)
            arrays.append(((raw - spec.zero_point) * spec.scale).astype(np.float32))
        elif np.issubdtype(spec.dtype, np.integer):
            arrays.append(rng.integers(0, 256, size=shape).astype(np.float32))
        else:
            arrays.append(rng.random(shape, dtype=np.float32))
    return arrays


def evaluation_samples(
    evaluation: Dataset | None,
    train: Dataset | None,
    inputs: list[TensorInfo],
    options: CompressOptions,
) -> Samples:
    if evaluation is not None:
        chosen, source = evaluation, evaluation.source
    elif train is not None:
        chosen, source = train, f"{train.source} (the training data: no --eval given)"
    else:
        arrays = generated(inputs, GENERATED_SAMPLES, options.seed)
        ranges = ", ".join(_range(spec) for spec in inputs)
        source = (
            f"{GENERATED_SAMPLES} generated inputs, seeded, in the model's input range ({ranges})"
        )
        return Samples(arrays, None, source, generated=True)
    chosen = chosen.subset(options.max_eval_samples, options.seed)
    return Samples(chosen.inputs, chosen.y, source, generated=False)


def calibration_samples(train: Dataset | None, options: CompressOptions) -> list[np.ndarray] | None:
    if train is None:
        return None
    return train.subset(options.calibration_samples, options.seed).inputs


def _range(spec: TensorInfo) -> str:
    if spec.quantized:
        info = np.iinfo(spec.dtype)
        low = (info.min - spec.zero_point) * spec.scale
        high = (info.max - spec.zero_point) * spec.scale
        return f"{spec.name}: [{low:.4g}, {high:.4g}]"
    if np.issubdtype(spec.dtype, np.integer):
        return f"{spec.name}: integers [0, 255]"
    return f"{spec.name}: [0, 1)"
