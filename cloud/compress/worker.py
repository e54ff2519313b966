"""The compression worker: one model in, measured candidates and a choice out.

`compress()` is the whole job. It keeps no state between calls: everything it needs comes in
as arguments, everything it makes goes to `out_dir` and into the returned `Report`.

Inputs and the methods each supports:

| input | baseline | float16, dynamic_int8, int8 | weight_only_int8 | prune, distill, qat |
|---|---|---|---|---|
| float `.tflite` | the file | ai-edge-quantizer | ai-edge-quantizer | - |
| `.keras` / `.h5` | TF converter, float32 | TF converter | ai-edge-quantizer on the baseline | Keras 3 training |
| SavedModel folder | TF converter, float32 | TF converter | ai-edge-quantizer on the baseline | - |

The `.tflite` path never imports TensorFlow.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from cloud.compress.choose import choose
from cloud.compress.data import Dataset, load_dataset
from cloud.compress.errors import InputRejected, MethodUnavailable
from cloud.compress.litert import TFLiteModel, weight_stats
from cloud.compress.measure import Measurement, measure
from cloud.compress.options import CompressOptions
from cloud.compress.quantize import quantize_tflite
from cloud.compress.report import Report, Skipped
from shared.atomic import write_atomic
from shared.profile import DeviceProfile

__all__ = ["DEFAULT_METHODS", "METHODS", "ProgressCallback", "compress"]

log = logging.getLogger(__name__)

METHODS = ("float16", "weight_only_int8", "dynamic_int8", "int8", "prune", "distill", "qat")
DEFAULT_METHODS = {
    "tflite": ("float16", "weight_only_int8", "dynamic_int8", "int8"),
    "keras": ("float16", "weight_only_int8", "dynamic_int8", "int8", "prune", "distill"),
    "saved_model": ("float16", "weight_only_int8", "dynamic_int8", "int8"),
}
RANDOM_EVAL_SAMPLES = 64

# (steps done, steps in all, what is happening now)
ProgressCallback = Callable[[int, int, str], None]


def compress(
    model_path: str | Path,
    profile: DeviceProfile,
    train_data: str | Path | Dataset | None,
    eval_data: str | Path | Dataset | None,
    methods: Iterable[str] | None,
    out_dir: str | Path,
    *,
    options: CompressOptions | None = None,
    progress: ProgressCallback | None = None,
) -> Report:
    """Build, measure and choose among compressed candidates of `model_path` for `profile`.

    `train_data` feeds calibration and the training methods; `eval_data` is held out for the
    figures (without labels the quality figure is agreement with the original). `methods`
    defaults to every method the input supports except `qat`. Writes `float32.tflite` (the
    original as LiteRT runs it), `<method>.tflite` per candidate and `report.{json,md,png}`
    into `out_dir`.
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
    if kind == "tflite":
        base_blob = model_path.read_bytes()
        if not weight_stats(base_blob).float_model:
            raise InputRejected(f"{model_path}: already quantized; give the float model")
        base_recipe = "float32: the input model"
    else:
        from cloud.compress import keras_convert

        source: Any = model_path
        if kind == "keras":
            keras_model = source = keras_convert.load_keras(model_path)
        try:
            base_blob, base_recipe = keras_convert.convert(source, "float32")
        except MethodUnavailable as e:
            raise InputRejected(f"{model_path}: cannot convert to TFLite: {e}") from e
    input_shape = TFLiteModel(base_blob).input.shape
    train = _dataset(train_data, input_shape)
    evaluation, eval_source = _eval_dataset(eval_data, train, input_shape, options)
    calibration = None if train is None else train.subset(options.calibration_samples, options.seed)

    out.mkdir(parents=True, exist_ok=True)
    step("measuring the original")
    threads = profile.runtime.threads
    base_path = out / "float32.tflite"
    write_atomic(base_path, base_blob)
    baseline, reference = measure(
        base_blob,
        method="float32",
        path=str(base_path),
        recipe=base_recipe,
        eval_data=evaluation,
        reference=None,
        threads=threads,
        options=options,
        build_seconds=0.0,
    )

    candidates: list[Measurement] = []
    skipped: list[Skipped] = []
    for method in wanted:
        step(f"building {method}")
        began = time.monotonic()
        try:
            blob, recipe = _build(
                method, kind, model_path, keras_model, base_blob, train, calibration, options
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
            eval_data=evaluation,
            reference=reference,
            threads=threads,
            options=options,
            build_seconds=time.monotonic() - began,
        )
        log.info("%s: %d bytes, quality %.4f", method, figures.bytes, figures.quality)
        candidates.append(figures)

    step("choosing and writing the report")
    choice = choose(baseline, candidates, profile)
    chosen = next((m for m in (*choice.candidates, baseline) if m.method == choice.method), None)
    report = Report(
        model=str(model_path),
        input_kind=kind,
        profile=profile.name,
        threads=threads,
        eval_source=eval_source,
        eval_samples=len(evaluation),
        labelled=evaluation.labelled,
        baseline=baseline,
        candidates=choice.candidates,
        skipped=tuple(skipped),
        chosen=choice.method,
        chosen_path=None if chosen is None else chosen.path,
        reason=choice.reason,
        provenance=None if chosen is None else _provenance(model_path, profile, baseline, chosen),
        seconds=time.monotonic() - started,
    )
    report.write(out)
    if progress is not None:
        progress(total, total, "done")
    return report


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


def _dataset(data: str | Path | Dataset | None, input_shape: tuple[int, ...]) -> Dataset | None:
    if data is None or isinstance(data, Dataset):
        return data
    return load_dataset(data, input_shape)


def _eval_dataset(
    data: str | Path | Dataset | None,
    train: Dataset | None,
    input_shape: tuple[int, ...],
    options: CompressOptions,
) -> tuple[Dataset, str]:
    evaluation = _dataset(data, input_shape)
    if evaluation is not None:
        source = evaluation.source
    elif train is not None:
        evaluation, source = train, f"{train.source} (the training data: no --eval given)"
    else:
        rng = np.random.default_rng(options.seed)
        x = rng.random((RANDOM_EVAL_SAMPLES, *input_shape[1:]), dtype=np.float32)
        source = f"{RANDOM_EVAL_SAMPLES} seeded uniform [0, 1) inputs (no data given)"
        evaluation = Dataset(x, None, source)
    return evaluation.subset(options.max_eval_samples, options.seed), source


def _build(
    method: str,
    kind: str,
    model_path: Path,
    keras_model: Any,
    base_blob: bytes,
    train: Dataset | None,
    calibration: Dataset | None,
    options: CompressOptions,
) -> tuple[bytes, str]:
    calib_x = None if calibration is None else calibration.x
    if kind == "tflite" or method == "weight_only_int8":
        if method in ("prune", "distill", "qat"):
            raise MethodUnavailable(f"{method}: needs a Keras model (.keras), not a .tflite")
        q = quantize_tflite(base_blob, method, calib_x)
        return q.blob, q.recipe

    from cloud.compress import keras_convert

    if method in ("float16", "dynamic_int8", "int8"):
        source = keras_model if keras_model is not None else model_path
        return keras_convert.convert(source, method, calib_x)
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
        blob, converted = keras_convert.convert(tuned, "int8", calib_x)
    return blob, f"{recipe}; converted as {converted}"


def _sha256_of(path: Path) -> str:
    """The file's sha256, or for a SavedModel folder the sha256 of its sorted file list with
    each file's sha256 (one `<sha256>  <relative path>` line per file)."""
    if path.is_file():
        return hashlib.sha256(path.read_bytes()).hexdigest()
    lines = "".join(
        f"{hashlib.sha256(f.read_bytes()).hexdigest()}  {f.relative_to(path).as_posix()}\n"
        for f in sorted(path.rglob("*"))
        if f.is_file()
    )
    return hashlib.sha256(lines.encode()).hexdigest()


def _provenance(
    model_path: Path, profile: DeviceProfile, baseline: Measurement, chosen: Measurement
) -> dict[str, Any]:
    """What a release records about where its model came from: strings and integers only."""
    metrics: dict[str, str | int] = {
        "method": chosen.method,
        "profile": profile.name,
        "sha256": chosen.sha256,
        "bytes": chosen.bytes,
        "zstd_bytes": chosen.zstd_bytes,
        "params": chosen.params,
        "nonzero_params": chosen.nonzero_params,
        "agreement": f"{chosen.agreement:.4f}",
        "max_abs_error": f"{chosen.max_abs_error:.6g}",
        "mean_abs_error": f"{chosen.mean_abs_error:.6g}",
        "latency_p50_us": round(chosen.latency_p50_ms * 1000),
        "latency_p95_us": round(chosen.latency_p95_ms * 1000),
        "threads": profile.runtime.threads,
        "baseline_sha256": baseline.sha256,
        "baseline_bytes": baseline.bytes,
    }
    if chosen.accuracy is not None and baseline.accuracy is not None:
        metrics["accuracy"] = f"{chosen.accuracy:.4f}"
        metrics["baseline_accuracy"] = f"{baseline.accuracy:.4f}"
    return {
        "parent_sha256": _sha256_of(model_path),
        "recipe": chosen.recipe,
        "metrics": metrics,
    }


