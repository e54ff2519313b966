"""Pre- and postprocessing derived from the model signature, against hand-computed values."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from agent.processing import (
    ImagePrep,
    InputMismatch,
    OutputSummary,
    Postprocess,
    PrepOptions,
    SensorPrep,
    Windower,
    dequantize,
    output_kind,
    prep_for,
)
from agent.processing.preprocess import auto_normalization
from agent.runtime import load_model
from agent.sources import FrameNeed
from shared.documents import IOSignature, TensorSpec

ROOT = Path(__file__).resolve().parents[2]


def spec(
    shape: tuple[int, ...],
    dtype: str = "float32",
    scale: str | None = None,
    zero_point: int | None = None,
    name: str = "x",
) -> TensorSpec:
    return TensorSpec(name, shape, dtype, scale, zero_point)


def gray_frame(values: list[int]) -> np.ndarray:
    """A 1 x len(values) BGR frame whose pixels are the given gray levels."""
    row = np.array(values, dtype=np.uint8)[None, :, None]
    return np.repeat(row, 3, axis=2)


def test_int8_quantization_matches_hand_computation() -> None:
    # int8, scale 1/128, zero point -1, normalization [-1, 1]:
    #   pixel 0   -> real -1         -> -128 - 1 = -129 -> clipped to -128
    #   pixel 64  -> real -0.498039  -> round(-63.749) = -64, -1 -> -65
    #   pixel 128 -> real 0.0039216  -> round(0.50196) = 1,   -1 -> 0
    #   pixel 255 -> real 1          -> 128 - 1 = 127
    prep = ImagePrep(
        spec((1, 1, 4, 1), "int8", "0.0078125", -1),
        PrepOptions(normalization="-1_1", crop="stretch"),
    )
    out = prep(gray_frame([0, 64, 128, 255]))[0]
    assert out.dtype == np.int8 and out.shape == (1, 1, 4, 1)
    assert out.ravel().tolist() == [-128, -65, 0, 127]


def test_uint8_quantization_matches_hand_computation() -> None:
    # uint8, scale 0.5, zero point 10, normalization none (real = pixel value):
    #   pixel 0 -> 10; 3 -> round(6) + 10 = 16; 100 -> 210; 200 -> 410 -> clipped to 255
    prep = ImagePrep(
        spec((1, 1, 4, 1), "uint8", "0.5", 10), PrepOptions(normalization="none", crop="stretch")
    )
    out = prep(gray_frame([0, 3, 100, 200]))[0]
    assert out.dtype == np.uint8
    assert out.ravel().tolist() == [10, 16, 210, 255]


def test_auto_normalization_follows_the_quantized_range() -> None:
    assert auto_normalization(spec((1, 2, 2, 3), "uint8", repr(1 / 255), 0)) == "0_1"
    assert auto_normalization(spec((1, 2, 2, 3), "int8", repr(1 / 255), -128)) == "0_1"
    assert auto_normalization(spec((1, 2, 2, 3), "int8", repr(2 / 255), 0)) == "-1_1"
    assert auto_normalization(spec((1, 2, 2, 3), "uint8", "1.0", 0)) == "none"
    assert auto_normalization(spec((1, 2, 2, 3), "float32")) == "0_1"


def test_real_quantized_model_gets_its_pixels_through_scale_and_zero_point() -> None:
    model = load_model(ROOT / "tests" / "data" / "tiny_int8.tflite", threads=1)
    s = model.signature.inputs[0]
    prep = prep_for(model.signature)
    frame = np.full((48, 64, 3), 200, dtype=np.uint8)
    x = prep(frame)[0]
    expected = round(200 / 255 / float(s.scale or 1)) + (s.zero_point or 0)
    assert x.shape == (1, 16, 16, 3) and x.dtype == np.int8
    assert np.all(x == expected)
    assert model.invoke([x])[0].shape == (1, 4)


def test_float_normalizations() -> None:
    frame = gray_frame([0, 51, 255])
    zero_one = ImagePrep(spec((1, 1, 3, 1)), PrepOptions(crop="stretch"))(frame)[0].ravel()
    np.testing.assert_allclose(zero_one, [0.0, 0.2, 1.0], atol=1e-6)
    minus = ImagePrep(spec((1, 1, 3, 1)), PrepOptions("-1_1", crop="stretch"))(frame)[0].ravel()
    np.testing.assert_allclose(minus, [-1.0, -0.6, 1.0], atol=1e-6)
    raw = ImagePrep(spec((1, 1, 3, 1)), PrepOptions("none", crop="stretch"))(frame)[0].ravel()
    np.testing.assert_allclose(raw, [0.0, 51.0, 255.0])


def test_colour_order_and_layout() -> None:
    bgr = np.zeros((4, 4, 3), dtype=np.uint8)
    bgr[..., 0], bgr[..., 1], bgr[..., 2] = 10, 20, 30  # B, G, R
    nhwc = ImagePrep(spec((1, 4, 4, 3)), PrepOptions("none"))(bgr)[0]
    assert nhwc[0, 0, 0].tolist() == [30, 20, 10]  # RGB by default
    keep = ImagePrep(spec((1, 4, 4, 3)), PrepOptions("none", "bgr"))(bgr)[0]
    assert keep[0, 0, 0].tolist() == [10, 20, 30]
    nchw = ImagePrep(spec((1, 3, 4, 4)), PrepOptions("none"))(bgr)[0]
    assert nchw.shape == (1, 3, 4, 4) and nchw[0, :, 0, 0].tolist() == [30, 20, 10]
    f16 = ImagePrep(spec((1, 4, 4, 3), "float16"))(bgr)[0]
    assert f16.dtype == np.float16


def test_centre_crop_keeps_the_aspect_ratio() -> None:
    frame = np.zeros((480, 640, 3), dtype=np.uint8)
    frame[:, 80:560] = 255  # a white centre square, black side bars
    square = ImagePrep(spec((1, 28, 28, 1)))(frame)[0]
    assert square.min() == pytest.approx(1.0)  # nothing of the bars survives
    stretched = ImagePrep(spec((1, 28, 28, 1)), PrepOptions(crop="stretch"))(frame)[0]
    assert stretched[0, :, 0, 0].min() == pytest.approx(0.0)


def test_gray_model_refuses_rgb_colour() -> None:
    with pytest.raises(InputMismatch):
        ImagePrep(spec((1, 8, 8, 1)), PrepOptions(color="rgb"))


def test_sensor_windows_for_rank_3_and_rank_2_inputs() -> None:
    w = Windower(values=6, channels=3)
    assert w.add(np.array([1, 2, 3])) is None
    window = w.add(np.array([4, 5, 6]))
    assert window is not None and window.tolist() == [1, 2, 3, 4, 5, 6]
    x = SensorPrep(spec((1, 2, 3)))(window)[0]
    assert x.shape == (1, 2, 3) and x[0, 1].tolist() == [4, 5, 6]
    with pytest.raises(InputMismatch):
        w.add(np.array([1.0, 2.0]))  # a 2-wide sample for a 3-channel model
    flat = Windower(values=4, channels=None)
    assert flat.add(np.array([1.0])) is None
    assert flat.add(np.array([2.0, 3.0])) is None
    assert flat.add(np.array([4.0])).tolist() == [1, 2, 3, 4]  # type: ignore[union-attr]


def test_sliding_sensor_windows() -> None:
    w = Windower(values=4, channels=1, hop=2)
    out = [w.add(np.array([float(i)])) for i in range(8)]
    windows = [o.tolist() for o in out if o is not None]
    assert windows == [[0, 1, 2, 3], [2, 3, 4, 5], [4, 5, 6, 7]]


def test_quantized_sensor_input() -> None:
    x = SensorPrep(spec((1, 4), "int8", "0.5", 3))(np.array([0.0, 1.0, -2.0, 100.0]))[0]
    assert x.dtype == np.int8 and x.ravel().tolist() == [3, 5, -1, 127]


def test_classification_top_k_with_labels_and_dequantized_scores() -> None:
    sig = IOSignature((spec((1, 8, 8, 3)),), (spec((1, 4), "uint8", "0.00390625", 0),))
    post = Postprocess(sig, ["cat", "dog", "bird", "fish"], top_k=2)
    assert post.kind == "classification"
    result = post([np.array([[10, 200, 30, 16]], dtype=np.uint8)])
    assert [(c, label) for c, label, _ in result.top] == [(1, "dog"), (2, "bird")]
    assert result.top[0][2] == pytest.approx(200 / 256)


def test_detection_outputs_over_threshold() -> None:
    sig = IOSignature(
        (spec((1, 8, 8, 3)),),
        (
            spec((1, 3, 4), name="boxes"),
            spec((1, 3), name="classes"),
            spec((1, 3), name="scores"),
            spec((1,), name="count"),
        ),
    )
    assert output_kind(sig) == "detection"
    post = Postprocess(sig, ["person", "car"], threshold=0.5)
    boxes = np.array([[[0.1, 0.1, 0.5, 0.5], [0.2, 0.2, 0.4, 0.4], [0, 0, 1, 1]]], np.float32)
    result = post(
        [
            boxes,
            np.array([[1.0, 0.0, 0.0]], np.float32),
            np.array([[0.9, 0.3, 0.6]], np.float32),
            np.array([3.0], np.float32),
        ]
    )
    assert [(d["label"], d["score"]) for d in result.detections] == [("car", 0.9), ("person", 0.6)]
    assert result.detections[0]["box"] == [0.1, 0.1, 0.5, 0.5]


def test_other_models_get_a_compact_summary() -> None:
    sig = IOSignature((spec((1, 8)),), (spec((1, 4, 4, 2), name="map"), spec((1, 3), name="v")))
    assert output_kind(sig) == "generic"
    result = Postprocess(sig, [])(
        [np.ones((1, 4, 4, 2), np.float32), np.array([[1.0, 2.0, 3.0]], np.float32)]
    )
    assert result.values[0]["mean"] == 1.0 and result.values[1]["max"] == 3.0
    summary = OutputSummary("generic")
    summary.add(result)
    assert summary.take()["outputs"][1]["name"] == "v"


def test_summary_counts_top_labels_and_mean_confidence() -> None:
    sig = IOSignature((spec((1, 8)),), (spec((1, 3)),))
    post = Postprocess(sig, ["a", "b", "c"])
    summary = OutputSummary(post.kind)
    for scores in ([0.8, 0.1, 0.1], [0.6, 0.3, 0.1], [0.1, 0.9, 0.0]):
        summary.add(post([np.array([scores], np.float32)]))
    taken = summary.take()
    assert taken["top"] == [{"label": "a", "count": 2}, {"label": "b", "count": 1}]
    assert taken["mean_confidence"] == pytest.approx((0.8 + 0.6 + 0.9) / 3, abs=1e-4)
    assert summary.take()["count"] == 0


def test_dequantize_passes_floats_through() -> None:
    values = np.array([1.5], np.float32)
    assert dequantize(values, spec((1,))).tolist() == [1.5]


@pytest.mark.parametrize(
    "dtype, scale", [("uint8", "0.00390625"), ("int8", "0.0078125"), ("float32", None)]
)
def test_a_batch_is_interpreted_as_frame_by_frame(dtype: str, scale: str | None) -> None:
    sig = IOSignature((spec((1, 8)),), (spec((1, 50), dtype, scale, -3 if scale else None),))
    post = Postprocess(sig, [f"class{i}" for i in range(40)], top_k=4)
    rng = np.random.default_rng(7)
    outputs = [[rng.permutation(100)[:50].reshape(1, 50).astype(dtype)] for _ in range(30)]
    batch = post.batch(outputs)
    single = [post(o) for o in outputs]
    assert [[(c, label) for c, label, _ in r.top] for r in batch] == [
        [(c, label) for c, label, _ in r.top] for r in single
    ]
    assert [s for r in batch for *_, s in r.top] == pytest.approx(
        [s for r in single for *_, s in r.top]
    )
    assert all(isinstance(s, float) and isinstance(c, int) for r in batch for c, _, s in r.top)


@pytest.mark.parametrize(
    "dtype, scale, shape",
    [("uint8", "0.00390625", (1, 9)), ("float32", None, (1, 9)), ("float32", None, (9,))],
)
def test_a_classifier_batch_summarised_as_arrays_counts_as_frame_by_frame(
    dtype: str, scale: str | None, shape: tuple[int, ...]
) -> None:
    sig = IOSignature((spec((1, 8)),), (spec(shape, dtype, scale, -3 if scale else None),))
    post = Postprocess(sig, [f"class{i}" for i in range(6)])  # classes 6+ have no label
    rng = np.random.default_rng(11)  # 9 classes: all fit in the summary's top 10
    outputs = [[rng.permutation(100)[:9].reshape(shape).astype(dtype)] for _ in range(64)]
    one_by_one, at_once = OutputSummary(post.kind), OutputSummary(post.kind)
    for o in outputs:
        one_by_one.add(post(o))
    classes, scores = post.top1(outputs)
    assert classes.tolist() == [post(o).top[0][0] for o in outputs]
    at_once.add_top1(classes, scores, post.label)
    expected, got = one_by_one.take(), at_once.take()
    assert got["count"] == expected["count"] == 64
    assert sorted(got["top"], key=str) == sorted(expected["top"], key=str)
    assert {"class0", "8"} <= {d["label"] for d in got["top"]}
    assert got["mean_confidence"] == pytest.approx(expected["mean_confidence"], abs=1e-4)


def test_top1_is_only_for_classifiers() -> None:
    sig = IOSignature((spec((1, 8)),), (spec((1, 4, 4, 2), name="map"), spec((1, 3), name="v")))
    with pytest.raises(ValueError, match="generic"):
        Postprocess(sig, []).top1([[np.zeros((1, 4, 4, 2), np.float32)]])


def test_a_batch_of_other_outputs_is_interpreted_one_by_one() -> None:
    sig = IOSignature((spec((1, 8)),), (spec((1, 4, 4, 2), name="map"), spec((1, 3), name="v")))
    post = Postprocess(sig, [])
    outputs = [
        [np.full((1, 4, 4, 2), i, np.float32), np.array([[i, 2.0, 3.0]], np.float32)]
        for i in range(3)
    ]
    assert [r.values[0]["mean"] for r in post.batch(outputs)] == [0.0, 1.0, 2.0]


def test_frame_need_picks_the_largest_jpeg_scale_that_keeps_the_model_size() -> None:
    assert FrameNeed(160, 160).scale(640, 480) == 2  # 480 / 160 = 3
    assert FrameNeed(224, 224).scale(640, 480) == 2
    assert FrameNeed(28, 28).scale(640, 480) == 8
    assert FrameNeed(100, 50).scale(640, 480) == 4  # the width decides: 6.4
    assert FrameNeed(300, 300).scale(640, 480) == 1
    assert FrameNeed(640, 480).scale(640, 480) == 1
