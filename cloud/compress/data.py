"""Training, calibration and evaluation data for the compression worker.

Two forms are accepted:

* an `.npz` file with an array `x` (samples, shaped like the model input without its batch
  dimension, or with a missing trailing channel axis of 1) and optionally `y` (integer labels);
  for a model with several inputs, one array per input instead, `x0`, `x1`, ... in the order
  the interpreter lists the inputs;
* a folder of images with one sub-folder per class. Sub-folders named by integers (`0`, `7`)
  give that integer as the label; otherwise the labels are the sorted sub-folder names' indices.
  Images are read with OpenCV, converted to the model's channel count (grey or RGB), resized to
  its input size and scaled to [0, 1].

Values are always real (float32): quantized models get their inputs quantized by the runner.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cloud.compress.errors import InputRejected

__all__ = ["Dataset", "load_dataset"]

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".pgm", ".ppm", ".webp", ".tif", ".tiff"}


@dataclass(frozen=True)
class Dataset:
    x: np.ndarray  # float32, [N, *input shape without batch]
    y: np.ndarray | None  # int64 [N], or None when the data has no labels
    source: str
    more: tuple[np.ndarray, ...] = ()  # the second, third ... inputs' samples, when several

    def __post_init__(self) -> None:
        if self.y is not None and len(self.y) != len(self.x):
            raise InputRejected(f"{self.source}: {len(self.x)} samples but {len(self.y)} labels")
        if len(self.x) == 0:
            raise InputRejected(f"{self.source}: no samples")
        if any(len(m) != len(self.x) for m in self.more):
            raise InputRejected(f"{self.source}: the inputs' arrays have different lengths")

    @property
    def inputs(self) -> list[np.ndarray]:
        """One [N, ...] array per model input."""
        return [self.x, *self.more]

    @property
    def labelled(self) -> bool:
        return self.y is not None

    def __len__(self) -> int:
        return len(self.x)

    def subset(self, n: int, seed: int) -> Dataset:
        """At most `n` samples, chosen with a seeded generator (the same ones every run)."""
        if len(self) <= n:
            return self
        idx = np.sort(np.random.default_rng(seed).choice(len(self), size=n, replace=False))
        return Dataset(
            self.x[idx],
            None if self.y is None else self.y[idx],
            self.source,
            tuple(m[idx] for m in self.more),
        )


def load_dataset(
    path: str | Path, input_shape: tuple[int, ...], *more_shapes: tuple[int, ...]
) -> Dataset:
    """Load `path` for a model whose input is `input_shape` (batch dimension first), or whose
    inputs are `input_shape` and `more_shapes`."""
    path = Path(path)
    sample_shape = tuple(input_shape[1:])
    if more_shapes:
        if path.suffix != ".npz":
            raise InputRejected(
                f"{path}: a model with several inputs takes an .npz with arrays "
                f"x0 ... x{len(more_shapes)}"
            )
        return _load_npz_inputs(path, [sample_shape, *(tuple(s[1:]) for s in more_shapes)])
    if path.is_dir():
        return _load_folder(path, sample_shape)
    if path.suffix == ".npz":
        return _load_npz(path, sample_shape)
    raise InputRejected(f"{path}: expected an .npz file or a folder of images by class")


def _load_npz_inputs(path: Path, sample_shapes: list[tuple[int, ...]]) -> Dataset:
    names = [f"x{k}" for k in range(len(sample_shapes))]
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [n for n in names if n not in npz.files]
            if missing:
                raise InputRejected(
                    f"{path}: the model has {len(names)} inputs; no array named "
                    f"{', '.join(missing)} (found {', '.join(npz.files)})"
                )
            arrays = [npz[n] for n in names]
            y = npz["y"] if "y" in npz.files else None
    except (OSError, ValueError) as e:
        raise InputRejected(f"{path}: cannot read: {e}") from e
    xs = []
    for name, x, shape in zip(names, arrays, sample_shapes, strict=True):
        if not np.issubdtype(x.dtype, np.number):
            raise InputRejected(f"{path}: {name} has dtype {x.dtype}, expected numbers")
        xs.append(_fit_shape(x.astype(np.float32), shape, f"{path}: {name}"))
    if y is not None:
        if not np.issubdtype(y.dtype, np.integer):
            raise InputRejected(f"{path}: y has dtype {y.dtype}, expected integer labels")
        y = y.reshape(-1).astype(np.int64)
    return Dataset(xs[0], y, str(path), tuple(xs[1:]))


def _fit_shape(x: np.ndarray, sample_shape: tuple[int, ...], source: str) -> np.ndarray:
    if x.shape[1:] == sample_shape:
        return x
    if (*x.shape[1:], 1) == sample_shape:
        return x[..., None]
    raise InputRejected(
        f"{source}: samples are shaped {list(x.shape[1:])}, the model takes {list(sample_shape)}"
    )


def _load_npz(path: Path, sample_shape: tuple[int, ...]) -> Dataset:
    try:
        with np.load(path, allow_pickle=False) as npz:
            if "x" not in npz.files:
                raise InputRejected(f"{path}: no array named 'x' (found {', '.join(npz.files)})")
            x = npz["x"]
            y = npz["y"] if "y" in npz.files else None
    except (OSError, ValueError) as e:
        raise InputRejected(f"{path}: cannot read: {e}") from e
    if not np.issubdtype(x.dtype, np.number):
        raise InputRejected(f"{path}: x has dtype {x.dtype}, expected numbers")
    x = _fit_shape(x.astype(np.float32), sample_shape, str(path))
    if y is not None:
        if not np.issubdtype(y.dtype, np.integer):
            raise InputRejected(f"{path}: y has dtype {y.dtype}, expected integer labels")
        y = y.reshape(-1).astype(np.int64)
    return Dataset(x, y, str(path))


def _load_folder(path: Path, sample_shape: tuple[int, ...]) -> Dataset:
    import cv2

    if len(sample_shape) != 3 or sample_shape[2] not in (1, 3):
        raise InputRejected(
            f"{path}: image folders need an NHWC model with 1 or 3 channels, "
            f"this one takes {list(sample_shape)}"
        )
    height, width, channels = sample_shape
    classes = sorted(p.name for p in path.iterdir() if p.is_dir())
    if not classes:
        raise InputRejected(f"{path}: no class sub-folders")
    numeric = all(c.isdigit() for c in classes)
    xs: list[np.ndarray] = []
    ys: list[int] = []
    for index, name in enumerate(classes):
        label = int(name) if numeric else index
        for file in sorted((path / name).iterdir()):
            if file.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            flag = cv2.IMREAD_GRAYSCALE if channels == 1 else cv2.IMREAD_COLOR
            image = cv2.imread(str(file), flag)
            if image is None:
                raise InputRejected(f"{file}: OpenCV cannot decode it")
            if channels == 3:
                image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
            image = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
            xs.append(image.reshape(sample_shape).astype(np.float32) / 255.0)
            ys.append(label)
    if not xs:
        raise InputRejected(f"{path}: no images in {', '.join(classes)}")
    return Dataset(np.stack(xs), np.asarray(ys, dtype=np.int64), str(path))
