"""From a raw frame or sensor window to the model's input tensor, derived from its signature.

Images (BGR uint8 frames from OpenCV): centre crop to the model's aspect ratio (or stretch),
resize, colour order, layout (NHWC, or NCHW when the channel axis is second), normalization
and quantization. Normalization and quantization together are a function of the 8-bit pixel
value, so they are one 256-entry lookup table applied by `cv2.LUT`. OpenCV is imported when an
image model's preprocessing is built (a sensor agent never loads it).

Sensor windows (float32 `[T, C]` or `[N]`): reshape to `[1, N]` or `[1, T, C]`, quantized when
the input is.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from agent.opencv import opencv
from agent.processing.quantize import quantize, real_range
from shared.documents import IOSignature, TensorSpec

__all__ = [
    "ImagePrep",
    "InputMismatch",
    "PrepOptions",
    "SensorPrep",
    "input_kind",
    "pixel_table",
    "prep_for",
]

NORMALIZATIONS = {  # pixel p in 0..255 -> real value a * p + b
    "0_1": (1.0 / 255.0, 0.0),
    "-1_1": (2.0 / 255.0, -1.0),
    "none": (1.0, 0.0),
}


class InputMismatch(ValueError):
    """A frame or window that cannot become this model's input (wrong width, rank, ...)."""


@dataclass(frozen=True)
class PrepOptions:
    normalization: str = "auto"  # auto | 0_1 | -1_1 | none
    color: str = "auto"  # auto | rgb | bgr | gray
    crop: str = "center"  # center | stretch


def input_kind(signature: IOSignature) -> str:
    """ "image" for NHWC/NCHW inputs with 1 or 3 channels, otherwise "sensor"."""
    shape = signature.inputs[0].shape
    if len(shape) == 4 and (shape[3] in (1, 3) or shape[1] in (1, 3)):
        return "image"
    return "sensor"


def auto_normalization(spec: TensorSpec) -> str:
    """Float inputs: [0, 1]. Quantized inputs: the range their scale and zero point cover."""
    covered = real_range(spec)
    if covered is None:
        return "none" if np.dtype(spec.dtype).kind in "iu" else "0_1"
    low, high = covered
    candidates = {"0_1": (0.0, 1.0), "-1_1": (-1.0, 1.0), "none": (0.0, 255.0)}
    return min(candidates, key=lambda k: abs(candidates[k][0] - low) + abs(candidates[k][1] - high))


def pixel_table(spec: TensorSpec, normalization: str) -> np.ndarray:
    """256 entries: the input value (in the input's dtype) for each 8-bit pixel value."""
    name = auto_normalization(spec) if normalization == "auto" else normalization
    a, b = NORMALIZATIONS[name]
    real = np.arange(256, dtype=np.float64) * a + b
    dtype = np.dtype(spec.dtype)
    if spec.scale is not None:
        return quantize(real, float(spec.scale), spec.zero_point or 0, dtype)
    if dtype.kind == "f":
        return real.astype(np.float32)
    info = np.iinfo(dtype)  # an integer input without quantization: raw pixel values
    return np.clip(np.arange(256) + (info.min if info.min < 0 else 0), info.min, info.max).astype(
        dtype
    )


class ImagePrep:
    """BGR (or gray) uint8 frame -> [input tensor] for one image model."""

    def __init__(self, spec: TensorSpec, options: PrepOptions = PrepOptions()) -> None:
        shape = spec.shape
        self.nchw = shape[3] not in (1, 3) and shape[1] in (1, 3)
        self.height, self.width, self.channels = (
            (shape[2], shape[3], shape[1]) if self.nchw else (shape[1], shape[2], shape[3])
        )
        self.shape = shape
        self.options = options
        color = options.color
        if color == "auto":
            color = "gray" if self.channels == 1 else "rgb"
        if (color == "gray") != (self.channels == 1):
            raise InputMismatch(
                f"colour {color!r} does not fit an input with {self.channels} channels"
            )
        self.color = color
        self.dtype = np.dtype(spec.dtype)
        self._cv = opencv("image models")
        table = pixel_table(spec, options.normalization)
        # cv2.LUT maps uint8 to the table's depth; int8 and float16 go through a same-size view
        # or a float32 table.
        if self.dtype == np.int8:
            self._table = table.view(np.uint8)
        elif self.dtype == np.float16:
            self._table = table.astype(np.float32)
        else:
            self._table = table

    def _crop(self, frame: np.ndarray) -> np.ndarray:
        if self.options.crop != "center":
            return frame
        h, w = frame.shape[:2]
        scale = min(h / self.height, w / self.width)
        ch, cw = round(self.height * scale), round(self.width * scale)
        top, left = (h - ch) // 2, (w - cw) // 2
        return frame[top : top + ch, left : left + cw]

    def _resize(self, frame: np.ndarray) -> np.ndarray:
        cv2 = self._cv
        h, w = frame.shape[:2]
        if (h, w) == (self.height, self.width):
            return frame
        if h >= 2 * self.height and w >= 2 * self.width:
            # bilinear to twice the size, then a 2x2 box filter: most of INTER_AREA's
            # anti-aliasing at a fraction of its cost for arbitrary factors
            double = cv2.resize(
                frame, (2 * self.width, 2 * self.height), interpolation=cv2.INTER_LINEAR
            )
            small: np.ndarray = cv2.resize(
                double, (self.width, self.height), interpolation=cv2.INTER_AREA
            )
            return small
        resized: np.ndarray = cv2.resize(
            frame, (self.width, self.height), interpolation=cv2.INTER_LINEAR
        )
        return resized

    def __call__(self, frame: np.ndarray) -> list[np.ndarray]:
        if frame.ndim not in (2, 3) or frame.dtype != np.uint8:
            raise InputMismatch(f"expected an 8-bit image, got {frame.dtype} {frame.shape}")
        cv2 = self._cv
        frame = self._crop(frame)
        if frame.ndim == 3 and self.color == "gray":
            frame = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)  # before resizing: a third the work
        image = self._resize(frame)
        if image.ndim == 2:
            if self.channels == 3:
                image = cv2.cvtColor(
                    image, cv2.COLOR_GRAY2RGB if self.color == "rgb" else cv2.COLOR_GRAY2BGR
                )
        elif self.color == "rgb":
            image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        values = cv2.LUT(np.ascontiguousarray(image), self._table)
        if self.dtype == np.int8:
            values = values.view(np.int8)
        elif self.dtype == np.float16:
            values = values.astype(np.float16)
        if values.ndim == 2:
            values = values[:, :, None]
        if self.nchw:
            values = values.transpose(2, 0, 1)
        return [np.ascontiguousarray(values.reshape(self.shape))]


class SensorPrep:
    """float32 window ([T, C] or [N]) -> [input tensor] for one sensor model."""

    def __init__(self, spec: TensorSpec) -> None:
        if len(spec.shape) not in (2, 3):
            raise InputMismatch(f"a sensor input is [1, N] or [1, T, C], not {list(spec.shape)}")
        self.shape = spec.shape
        self.values = int(np.prod(spec.shape[1:]))
        self.channels = spec.shape[2] if len(spec.shape) == 3 else None
        self.spec = spec
        self.dtype = np.dtype(spec.dtype)

    def __call__(self, window: np.ndarray) -> list[np.ndarray]:
        if window.size != self.values:
            raise InputMismatch(f"a window of {window.size} values for an input of {self.values}")
        real = window.reshape(self.shape)
        if self.spec.scale is not None:
            return [quantize(real, float(self.spec.scale), self.spec.zero_point or 0, self.dtype)]
        return [np.ascontiguousarray(real, dtype=self.dtype)]


Prep = Callable[[np.ndarray], list[np.ndarray]]


def prep_for(
    signature: IOSignature, options: PrepOptions = PrepOptions()
) -> ImagePrep | SensorPrep:
    """The preprocessing a model's (first) input needs."""
    if len(signature.inputs) != 1:
        raise InputMismatch(
            f"models with {len(signature.inputs)} inputs are not supported by "
            "the camera or sensor loop"
        )
    spec = signature.inputs[0]
    if input_kind(signature) == "image":
        return ImagePrep(spec, options)
    return SensorPrep(spec)
