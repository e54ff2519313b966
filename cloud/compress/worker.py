"""The compression worker: one model in, measured candidates and a choice out.

`compress()` is the whole job. It keeps no state between calls: everything it needs comes in
as arguments, everything it makes goes to `out_dir` and into the returned `Report`.

Inputs and the methods each supports:

| input | baseline | float16, dynamic_int8, int8 | weight_only_int8 | prune, distill, qat |
|---|---|---|---|---|
| float `.tflite` | the file | ai-edge-quantizer | ai-edge-quantizer | - |
| `.keras` / `.h5` | TF converter, float32 | TF converter | ai-edge-quantizer on the baseline | Keras 3 training |
| SavedModel folder | TF converter, float32 | TF converter | ai-edge-quantizer on the baseline | - |

The `.tflite` path never imports TensorFlow. A `.tflite` whose weights are float16 behind
`DEQUANTIZE` ops is quantized from its float32 fold (`graph.fold_float16_weights`); figures are
always against the input model itself.

Two promises the report keeps:

* **It never claims what did not happen.** A candidate whose size and zstd size did not move
  beyond `NO_EFFECT_MARGIN` of the original's is marked "no effect" with the reason, never chosen and
  never given a provenance. When nothing compressed the model, the report says so and keeps
  the original (chosen `original`).
* **It keeps the application's I/O.** Candidates must keep the original's input and output
  dtypes and shapes (or those `io` names); one that changes them is marked and never chosen.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from cloud.compress import samples as sampling
from cloud.compress.choose import ORIGINAL, choose
from cloud.compress.data import Dataset
from cloud.compress.errors import InputRejected, MethodUnavailable
from cloud.compress.graph import fold_float16_weights
from cloud.compress.iospec import expected_io, io_change, read_io, wants_int8_io
from cloud.compress.litert import TFLiteModel, weight_stats
from cloud.compress.measure import Measurement, measure
from cloud.compress.options import CompressOptions
from cloud.compress.provenance import provenance, sha256_of
from cloud.compress.quantize import quantize_tflite
from cloud.compress.reference import compute_reference, write_reference
from cloud.compress.report import Report, Skipped
from device_profiles.profile import DeviceProfile
from localio.atomic import write_atomic
from shared.verify import describe_io as describe

__all__ = ["DEFAULT_METHODS", "METHODS", "ProgressCallback", "compress"]

log = logging.getLogger(__name__)

METHODS = ("float16", "weight_only_int8", "dynamic_int8", "int8", "prune", "distill", "qat")
DEFAULT_METHODS = {
    "tflite": ("float16", "weight_only_int8", "dynamic_int8", "int8"),
    "keras": ("float16", "weight_only_int8", "dynamic_int8", "int8", "prune", "distill"),
    "saved_model": ("float16", "weight_only_int8", "dynamic_int8", "int8"),
}
NO_EFFECT_MARGIN = 0.02  # a candidate within 2 % of the original's bytes compressed nothing

# (steps done, steps in all, what is happening now)
ProgressCallback = Callable[[int, int, str], None]


def compress(  # noqa: C901 — the compression pipeline in order; each branch is an optional stage
    model_path: str | Path,
    profile: DeviceProfile,
    train_data: str | Path | Dataset | None,
    eval_data: str | Path | Dataset | None,
    methods: Iterable[str] | None,
    out_dir: str | Path,
    *,
    options: CompressOptions | None = None,
    progress: ProgressCallback | None = None,
    io: str | Path | None = None,
) -> Report:
    """Build, measure and choose among compressed candidates of `model_path` for `profile`.

    `train_data` feeds calibration and the training methods; `eval_data` is held out for the
    figures (without labels the quality figure is agreement with the original; without any
    data, generated inputs). `methods` defaults to every method the input supports except
    `qat`. `io` names the I/O signature candidates must keep (default: the original's; see
    `iospec`). Writes `float32.tflite` (the original as LiteRT runs it), `<method>.tflite` per
    candidate, `chosen.tflite` (a copy of the chosen one, when one is) and
    `report.{json,md,png}` and `reference.json` (the reference profile of the chosen model, or
    of the original when none is chosen) into `out_dir`.
    """
    started = time.monotonic()
    options = options or CompressOptions()
    model_path = Path(model_path)
    out = Path(out_dir)
    kind = input_kind(model_path)
    wanted = _resolve_methods(methods, kind)
    total = 3 + len(wanted)
    done = 0

    def step(description: str) -> None:
        nonlocal done
        if progress is not None:
            progress(done, total, description)
        done += 1

    step(f"loading {model_path.name}")
    keras_model: Any = None
    work_blob = None  # what the quantizer starts from, when not the original itself
    if kind == "tflite":
        base_blob = model_path.read_bytes()
        if not weight_stats(base_blob).float_model:
            raise InputRejected(f"{model_path}: already quantized; give the float model")
        base_recipe = "float32: the input model"
        folded = fold_float16_weights(base_blob)
        if folded.folded:
            work_blob = folded.blob
            base_recipe = (
                f"the input model ({folded.float16_params:,} weights stored as float16 behind "
                f"{folded.folded} DEQUANTIZE ops; the quantizers start from them folded to float32)"
            )
    else:
        from cloud.compress import keras_convert

        source: Any = model_path
        if kind == "keras":
            keras_model = source = keras_convert.load_keras(model_path)
        try:
            base_blob, base_recipe = keras_convert.convert(source, "float32")
        except MethodUnavailable as e:
            raise InputRejected(f"{model_path}: cannot convert to TFLite: {e}") from e
    model_inputs = TFLiteModel(base_blob).inputs
    train = sampling.load(train_data, model_inputs)
    evaluation = sampling.evaluation_samples(
        sampling.load(eval_data, model_inputs), train, model_inputs, options
    )
    calibration = sampling.calibration_samples(train, options)

    out.mkdir(parents=True, exist_ok=True)
    step("measuring the original")
    threads = profile.runtime.threads
    base_path = out / "float32.tflite"
    write_atomic(base_path, base_blob)
    original_io = read_io(base_path)
    expected = expected_io(original_io, io)
    baseline, reference = measure(
        base_blob,
        method="float32",
        path=str(base_path),
        recipe=base_recipe,
        inputs=evaluation.inputs,
        labels=evaluation.labels,
        reference=None,
        threads=threads,
        options=options,
        build_seconds=0.0,
    )
    baseline = replace(
        baseline, io=describe(original_io), io_change=io_change(expected, original_io)
    )

    candidates: list[Measurement] = []
    skipped: list[Skipped] = []
    for method in wanted:
        step(f"building {method}")
        began = time.monotonic()
        try:
            blob, recipe = _build(
                method,
                kind,
                model_path,
                keras_model,
                work_blob or base_blob,
                train,
                calibration,
                options,
                int8_io=wants_int8_io(expected),
            )
        except MethodUnavailable as e:
            log.info("skipping %s: %s", method, e)
            skipped.append(Skipped(method, str(e)))
            continue
        path = out / f"{method}.tflite"
        write_atomic(path, blob)
        figures, _ = measure(
            blob,
            method=method,
            path=str(path),
            recipe=recipe,
            inputs=evaluation.inputs,
            labels=evaluation.labels,
            reference=reference,
            threads=threads,
            options=options,
            build_seconds=time.monotonic() - began,
        )
        actual_io = read_io(path)
        figures = replace(
            figures,
            io=describe(actual_io),
            io_change=io_change(expected, actual_io),
            no_effect=_no_effect(figures, baseline),
        )
        log.info("%s: %d bytes, quality %.4f", method, figures.bytes, figures.quality)
        candidates.append(figures)

    step("choosing and writing the report")
    choice = choose(baseline, candidates, profile)
    parent = sha256_of(model_path)
    releasable = [*choice.candidates, replace(baseline, method=ORIGINAL)]
    if choice.method == baseline.method:  # the profile lists float32 and it won
        releasable.append(baseline)
    provenances = {
        c.method: provenance(parent, profile, baseline, c)
        for c in releasable
        if c.no_effect is None and c.io_change is None
    }
    chosen = next((m for m in releasable if m.method == choice.method), None)
    report = Report(
        model=str(model_path),
        input_kind=kind,
        profile=profile.name,
        threads=threads,
        eval_source=evaluation.source,
        eval_samples=len(evaluation),
        labelled=evaluation.labels is not None,
        generated_inputs=evaluation.generated,
        expected_io=describe(expected),
        baseline=baseline,
        candidates=choice.candidates,
        skipped=tuple(skipped),
        chosen=choice.method,
        chosen_path=None if chosen is None else chosen.path,
        reason=choice.reason,
        parent_sha256=parent,
        provenance=None if choice.method is None else provenances.get(choice.method),
        provenances=provenances,
        seconds=time.monotonic() - started,
    )
    if chosen is not None:
        write_atomic(out / "chosen.tflite", Path(chosen.path).read_bytes())
    else:
        (out / "chosen.tflite").unlink(missing_ok=True)  # never one left from an earlier run
    # what the released model sees and says on the evaluation set: devices measure drift on it
    profiled = Path(chosen.path) if chosen is not None else base_path
    write_reference(
        out, compute_reference(profiled.read_bytes(), read_io(profiled), evaluation.inputs, threads)
    )
    report.write(out)
    if progress is not None:
        progress(total, total, "done")
    return report


def _no_effect(candidate: Measurement, baseline: Measurement) -> str | None:
    """Why `candidate` is not a compression of the original, or None when it is one: neither
    its size nor its zstd size (where pruning shows) moved beyond `NO_EFFECT_MARGIN`."""
    keep = 1.0 - NO_EFFECT_MARGIN
    if candidate.bytes < keep * baseline.bytes or candidate.zstd_bytes < keep * baseline.zstd_bytes:
        return None
    return (
        f"no effect: {candidate.bytes:,} B ({candidate.zstd_bytes:,} B zstd) against the "
        f"original's {baseline.bytes:,} B ({baseline.zstd_bytes:,} B), within "
        f"{NO_EFFECT_MARGIN:.0%}: {candidate.method} changed no weights of this model"
    )


def input_kind(path: Path) -> str:
    """`tflite`, `keras` or `saved_model`, from what is at `path`."""
    if path.is_dir():
        if (path / "saved_model.pb").is_file():
            return "saved_model"
        raise InputRejected(f"{path}: a folder without saved_model.pb is not a SavedModel")
    if not path.is_file():
        raise InputRejected(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix == ".tflite":
        return "tflite"
    if suffix in (".keras", ".h5"):
        return "keras"
    raise InputRejected(f"{path}: expected a .tflite, .keras or .h5 file or a SavedModel folder")


def _resolve_methods(methods: Iterable[str] | None, kind: str) -> tuple[str, ...]:
    if methods is None:
        return DEFAULT_METHODS[kind]
    wanted = tuple(dict.fromkeys(m.strip() for m in methods if m.strip()))
    unknown = [m for m in wanted if m not in METHODS]
    if unknown:
        raise InputRejected(f"unknown methods {', '.join(unknown)}; known: {', '.join(METHODS)}")
    if not wanted:
        raise InputRejected("no methods given")
    return wanted


def _build(
    method: str,
    kind: str,
    model_path: Path,
    keras_model: Any,
    base_blob: bytes,
    train: Dataset | None,
    calibration: list[np.ndarray] | None,
    options: CompressOptions,
    *,
    int8_io: bool,
) -> tuple[bytes, str]:
    if kind == "tflite" or method == "weight_only_int8":
        if method in ("prune", "distill", "qat"):
            raise MethodUnavailable(f"{method}: needs a Keras model (.keras), not a .tflite")
        q = quantize_tflite(base_blob, method, calibration, int8_io=int8_io)
        return q.blob, q.recipe
    calib_x = None if calibration is None else calibration[0]

    from cloud.compress import keras_convert

    if method in ("float16", "dynamic_int8", "int8"):
        source = keras_model if keras_model is not None else model_path
        return keras_convert.convert(source, method, calib_x, int8_io=int8_io)
    if keras_model is None:
        raise MethodUnavailable(
            f"{method}: needs a Keras model (.keras); a SavedModel cannot be fine-tuned here"
        )
    from cloud.compress import keras_train

    if method == "prune":
        pruned, recipe = keras_train.prune(keras_model, train, options)
        blob, converted = keras_convert.convert(pruned, "float32")
    elif method == "distill":
        student, recipe = keras_train.distill(keras_model, train, options)
        blob, converted = keras_convert.convert(student, "float32")
    else:  # qat
        tuned, recipe = keras_train.qat(keras_model, train, options)
        blob, converted = keras_convert.convert(tuned, "int8", calib_x, int8_io=int8_io)
    return blob, f"{recipe}; converted as {converted}"
