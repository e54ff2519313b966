"""The compression worker on models made like published ones, and the application's I/O.

The models come from tests/data/make_fp16_models.py: float16 weights behind DEQUANTIZE ops, no
SignatureDef, a two-output detector, a segmenter. Real ai-edge-quantizer, real LiteRT, no
TensorFlow (this is the `make test` path).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from cloud.compress import CompressOptions, InputRejected, Report, compress
from cloud.compress.choose import choose
from cloud.modelinfo import read_io_signature
from device_profiles import load_profile
from device_profiles.profile import Budget, DeviceProfile

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "tests" / "data"
DIGITS = REPO / "examples" / "models" / "digits.tflite"
TRAIN = REPO / "examples" / "data" / "digits-train.npz"
EVAL = REPO / "examples" / "data" / "digits-eval.npz"
FAST = CompressOptions(
    latency_warmup=2, latency_runs=10, calibration_samples=64, max_eval_samples=120
)
QUANTIZED = ("weight_only_int8", "dynamic_int8", "int8")
# model file, input size, float16 weights?, expected output kinds (interpreter order)
MODELS = {
    "fp16_classifier": (64, True, ["classes"]),
    "fp16_nosig_classifier": (64, True, ["classes"]),
    "fp16_detector": (96, True, ["classes", "boxes"]),
    "float_segmenter": (64, False, ["mask"]),
}
PROFILES = sorted(p.stem for p in (REPO / "device_profiles").glob("*.toml"))


def _scenes(n: int, seed: int, size: int) -> np.ndarray:
    spec = importlib.util.spec_from_file_location(
        "make_foreign_model", DATA / "make_foreign_model.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    images: np.ndarray = module.scenes(n, seed)
    if size != images.shape[1]:
        images = np.stack(
            [cv2.resize(i, (size, size), interpolation=cv2.INTER_AREA) for i in images]
        )
    return images


def loose(
    name: str = "loose", quantizations: tuple[str, ...] = ("int8", "dynamic_int8"), **budget: object
) -> DeviceProfile:
    """A profile whose budget any real compression fits (random-weight models disagree with
    themselves on near-ties more than trained ones)."""
    return DeviceProfile(
        name=name,
        arch="x86_64",
        quantizations=quantizations,
        budget=Budget(**{"max_accuracy_drop": 0.2, **budget}),
    )  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def model_reports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Report]:
    reports = {}
    for name, (size, _, _) in MODELS.items():
        root = tmp_path_factory.mktemp(name)
        np.savez(root / "calib.npz", x=_scenes(48, 7, size))
        np.savez(root / "eval.npz", x=_scenes(32, 8, size))
        reports[name] = compress(
            DATA / f"{name}.tflite",
            loose(),
            root / "calib.npz",
            root / "eval.npz",
            None,
            root / "out",
            options=FAST,
        )
    return reports


@pytest.mark.parametrize("name", list(MODELS))
def test_each_model_gets_an_int8_candidate_at_the_expected_size(
    model_reports: dict[str, Report], name: str
) -> None:
    report = model_reports[name]
    _, float16, _ = MODELS[name]
    base = report.baseline
    assert report.skipped == ()  # full int8 included, from the calibration data
    limit = 0.55 if float16 else 0.30
    small = [
        c for c in report.candidates if c.method in QUANTIZED and c.bytes <= limit * base.bytes
    ]
    assert small, [(c.method, c.bytes / base.bytes) for c in report.candidates]
    for c in report.candidates:
        assert c.io_change is None and c.input_dtype == "float32"
        if c.method in QUANTIZED:
            assert c.no_effect is None and c.bytes <= 0.56 * base.bytes
    assert report.chosen in QUANTIZED and report.provenance is not None
    assert report.provenance["metrics"]["sha256"] == report.candidate(report.chosen).sha256


@pytest.mark.parametrize("name", list(MODELS))
def test_fidelity_is_reported_per_output(model_reports: dict[str, Report], name: str) -> None:
    report = model_reports[name]
    kinds = MODELS[name][2]
    assert report.labelled is False and report.generated_inputs is False
    assert [o.kind for o in report.baseline.outputs] == kinds
    assert all(o.agreement == 1.0 and o.max_abs_error == 0.0 for o in report.baseline.outputs)
    for c in report.candidates:
        assert [o.kind for o in c.outputs] == kinds
        for o in c.outputs:
            assert 0.8 <= o.agreement <= 1.0 and 0.0 <= o.mean_abs_error <= o.max_abs_error < 1.0
        assert c.agreement == min(o.agreement for o in c.outputs)
    doc = json.loads((Path(report.chosen_path or "").parent / "report.json").read_text())
    assert [len(c["outputs"]) for c in doc["candidates"]] == [len(kinds)] * len(report.candidates)
    md = (Path(report.chosen_path or "").parent / "report.md").read_text()
    assert "## Fidelity per output" in md and f"| {kinds[-1]} |" in md


def test_float16_on_float16_weights_has_no_effect_and_is_never_chosen(
    model_reports: dict[str, Report],
) -> None:
    for name in ("fp16_classifier", "fp16_nosig_classifier", "fp16_detector"):
        report = model_reports[name]
        f16 = report.candidate("float16")
        assert f16.no_effect is not None and "no effect" in f16.no_effect
        assert "float16" not in report.provenances
    # the segmenter's weights are float32: float16 halves it
    seg = model_reports["float_segmenter"].candidate("float16")
    assert (
        seg.no_effect is None
        and seg.bytes <= 0.55 * model_reports["float_segmenter"].baseline.bytes
    )

    report = model_reports["fp16_classifier"]
    base, cands = report.baseline, list(report.candidates)
    # a profile that prefers float16 gets the next method that did something
    choice = choose(base, cands, loose(quantizations=("float16", "dynamic_int8")))
    assert choice.method == "dynamic_int8" and "Passed over: float16 (no effect" in choice.reason
    # when nothing had an effect, the original is kept and the report says so
    only = [c for c in cands if c.method == "float16"]
    kept = choose(base, only, loose(quantizations=("float16",)))
    assert kept.method == "original" and "nothing compressed this model" in kept.reason


def test_budgets_apply_to_agreement_without_labels(model_reports: dict[str, Report]) -> None:
    report = model_reports["fp16_detector"]
    worst = min(report.candidates, key=lambda c: c.agreement)
    assert worst.agreement < 1.0
    strict = choose(
        report.baseline,
        list(report.candidates),
        loose(quantizations=(worst.method,), max_accuracy_drop=0.0),
    )
    assert strict.method != worst.method
    assert (
        "agreement drop"
        in next(c for c in strict.candidates if c.method == worst.method).misses[-1]
    )


@pytest.mark.parametrize("profile_name", PROFILES)
def test_the_default_choice_keeps_the_applications_io(tmp_path: Path, profile_name: str) -> None:
    profile = load_profile(profile_name)
    report = compress(DIGITS, profile, TRAIN, EVAL, None, tmp_path, options=FAST)
    assert report.chosen is not None, report.reason
    chosen = read_io_signature(tmp_path / "chosen.tflite")
    assert chosen == read_io_signature(DIGITS)  # dtypes, shapes and names
    assert report.candidate("int8").io_change is None
    if profile_name == "coral-usb":
        assert report.chosen == "int8"


def test_io_int8_asks_for_int8_edges_and_marks_the_rest(tmp_path: Path) -> None:
    report = compress(
        DIGITS,
        load_profile("x86-gateway"),
        TRAIN,
        EVAL,
        ["dynamic_int8", "int8"],
        tmp_path,
        options=FAST,
        io="int8",
    )
    int8 = report.candidate("int8")
    assert int8.input_dtype == "int8" and int8.io_change is None
    dyn = report.candidate("dynamic_int8")
    assert dyn.io_change is not None and dyn.io_change.startswith("changes I/O")
    assert report.chosen == "int8"  # x86-gateway prefers dynamic_int8, which would change it
    assert "dynamic_int8" not in report.provenances


BLOCK_TENSORFLOW = """
import importlib.abc, sys
class _NoTensorFlow(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"tensorflow", "keras", "tf_keras"}:
            raise ImportError(f"{name} is blocked for this process")
        return None
sys.meta_path.insert(0, _NoTensorFlow())
"""


def test_a_signature_less_detector_without_data_on_the_tensorflow_free_path(tmp_path: Path) -> None:
    """The command line, TensorFlow unimportable, no data: figures from generated inputs."""
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(BLOCK_TENSORFLOW)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(hook), str(REPO)])}
    out = tmp_path / "out"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "cloud.compress.cli",
            str(DATA / "fp16_detector.tflite"),
            "--profile",
            "x86-gateway",
            "--methods",
            "float16,dynamic_int8,int8",
            "--out",
            str(out),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode in (0, 3), proc.stderr[-3000:]
    assert "figures come from generated inputs" in proc.stdout
    assert "float16: no effect" in proc.stdout
    doc = json.loads((out / "report.json").read_text())
    assert doc["eval"]["generated"] is True and "generated inputs" in doc["eval"]["source"]
    assert [s["method"] for s in doc["skipped"]] == ["int8"]  # calibration needs real data
    dyn = next(c for c in doc["candidates"] if c["method"] == "dynamic_int8")
    assert dyn["bytes"] <= 0.55 * doc["baseline"]["bytes"]
    assert [o["kind"] for o in dyn["outputs"]] == ["classes", "boxes"]
    assert "generated inputs" in (out / "report.md").read_text()


def test_io_names_a_model_or_is_refused_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from cloud.compress.cli import main as compress_main

    report = compress(
        DIGITS, load_profile("rpi5"), TRAIN, EVAL, ["int8"], tmp_path / "a", options=FAST, io=DIGITS
    )  # the model the devices run now
    assert report.candidate("int8").io_change is None and report.chosen == "int8"
    for io in ("int4", str(REPO / "examples" / "models" / "vibration.tflite")):
        code = compress_main(
            [
                str(DIGITS),
                "--profile",
                "rpi5",
                "--methods",
                "dynamic_int8",
                "--io",
                io,
                "--out",
                str(tmp_path / "b"),
            ]
        )
        err = capsys.readouterr().err.strip()
        assert code == 2 and len(err.splitlines()) == 1 and err.startswith("error: --io"), err


def test_a_model_with_two_inputs_is_calibrated_and_compared_from_its_input_details(
    tmp_path: Path,
) -> None:
    """No signature, two inputs: one array per input, in the interpreter's order."""

    def features(n: int) -> np.ndarray:
        return np.random.default_rng(4).normal(0.0, 1.0, (n, 8)).astype(np.float32)

    model = DATA / "fp16_two_inputs.tflite"
    np.savez(tmp_path / "data.npz", x0=features(48), x1=_scenes(48, 3, 32))
    report = compress(
        model, loose(), tmp_path / "data.npz", None, None, tmp_path / "out", options=FAST
    )
    assert report.skipped == () and report.eval_samples == 48
    int8 = report.candidate("int8")
    assert int8.no_effect is None and int8.io_change is None and int8.agreement >= 0.8
    assert report.candidate("dynamic_int8").bytes <= 0.55 * report.baseline.bytes
    # the arrays the other way round: one line that says which input is which
    np.savez(tmp_path / "swapped.npz", x1=features(8), x0=_scenes(8, 3, 32))
    with pytest.raises(InputRejected, match=r"x0 = serving_default_features:0 \[1, 8\]"):
        compress(
            model, loose(), tmp_path / "swapped.npz", None, None, tmp_path / "o2", options=FAST
        )


def test_folding_float16_weights_keeps_the_model_exactly(tmp_path: Path) -> None:
    """The quantizer alone leaves a float16-weight model as it is (DEQUANTIZE-fed weights are
    not constants to it); folded, the same model computes exactly the same outputs."""
    from ai_edge_quantizer import quantizer, recipe

    from cloud.compress.graph import fold_float16_weights
    from cloud.compress.litert import TFLiteModel

    blob = (DATA / "fp16_detector.tflite").read_bytes()
    alone = bytes(quantizer.Quantizer(blob, recipe.dynamic_wi8_afp32()).quantize().quantized_model)
    assert len(alone) > 0.98 * len(blob)  # the bug the fold is for
    folded = fold_float16_weights(blob)
    assert folded.folded == 13 and folded.float16_params > 90_000
    assert fold_float16_weights(folded.blob).folded == 0  # nothing float16 left
    x = [_scenes(4, 9, 96)]
    for a, b in zip(TFLiteModel(blob).predict(x), TFLiteModel(folded.blob).predict(x), strict=True):
        assert np.array_equal(a, b)
