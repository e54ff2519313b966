"""The compression worker's TensorFlow-free path: float `.tflite` in, measured candidates out.

Real models (examples/models/digits.tflite and tests/data/foreign_mobilenet.tflite), real
ai-edge-quantizer, real LiteRT. The Keras path is in test_compress_train.py.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest

from cloud.compress import (
    CompressOptions,
    Dataset,
    InputRejected,
    Report,
    compress,
    load_dataset,
)
from cloud.compress.choose import choose
from cloud.compress.cli import main as compress_main
from device_profiles import load_profile
from device_profiles.profile import Budget, DeviceProfile
from shared.canonical import check_canonical_types

REPO = Path(__file__).resolve().parents[2]
DIGITS = REPO / "examples" / "models" / "digits.tflite"
TRAIN = REPO / "examples" / "data" / "digits-train.npz"
EVAL = REPO / "examples" / "data" / "digits-eval.npz"
FOREIGN = REPO / "tests" / "data" / "foreign_mobilenet.tflite"
TFLITE_METHODS = ("float16", "weight_only_int8", "dynamic_int8", "int8")
FAST = CompressOptions(latency_warmup=3, latency_runs=20)


def _foreign_scenes(n: int, seed: int) -> np.ndarray:
    spec = importlib.util.spec_from_file_location(
        "make_foreign_model", REPO / "tests" / "data" / "make_foreign_model.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    scenes: np.ndarray = module.scenes(n, seed)
    return scenes


@pytest.fixture(scope="module")
def profile() -> DeviceProfile:
    return load_profile("x86-gateway")


@pytest.fixture(scope="module")
def digits_report(
    tmp_path_factory: pytest.TempPathFactory, profile: DeviceProfile
) -> tuple[Report, Path]:
    out = tmp_path_factory.mktemp("digits")
    return compress(DIGITS, profile, TRAIN, EVAL, TFLITE_METHODS, out, options=FAST), out


def test_dynamic_int8_is_under_a_third_of_the_bytes_within_one_point(
    digits_report: tuple[Report, Path],
) -> None:
    report, _ = digits_report
    base = report.baseline
    dyn = report.candidate("dynamic_int8")
    assert base.accuracy is not None and base.accuracy >= 0.95
    assert dyn.bytes <= 0.35 * base.bytes
    assert dyn.accuracy is not None and dyn.accuracy >= base.accuracy - 0.01
    assert dyn.input_dtype == "float32"


def test_every_tflite_method_is_built_measured_and_written(
    digits_report: tuple[Report, Path],
) -> None:
    report, out = digits_report
    assert [c.method for c in report.candidates] == list(TFLITE_METHODS)
    assert report.skipped == ()
    for c in report.candidates:
        path = Path(c.path)
        assert path == out / f"{c.method}.tflite" and path.stat().st_size == c.bytes
        assert 0 < c.zstd_bytes <= c.bytes
        assert c.latency_p50_ms > 0 and c.latency_p95_ms >= c.latency_p50_ms
        assert c.params == report.baseline.params == 52330
        assert c.accuracy is not None and c.accuracy >= report.baseline.accuracy - 0.01  # type: ignore[operator]
        assert 0.0 <= c.mean_abs_error <= c.max_abs_error < 0.5
    int8 = report.candidate("int8")
    # full integer inside, float32 at the edges: the application's I/O is kept
    assert int8.input_dtype == "float32" and int8.io_change is None
    assert "float32 inputs and outputs" in int8.recipe
    assert report.candidate("float16").bytes < 0.55 * report.baseline.bytes
    assert report.candidate("weight_only_int8").bytes < 0.35 * report.baseline.bytes


def test_report_files_and_json_shape(digits_report: tuple[Report, Path]) -> None:
    report, out = digits_report
    doc = json.loads((out / "report.json").read_text())
    assert doc["chosen"] == report.chosen == "dynamic_int8"  # x86-gateway prefers it
    assert doc["reason"].startswith("dynamic_int8 is the first candidate in profile x86-gateway's")
    assert {c["method"] for c in doc["candidates"]} == set(TFLITE_METHODS)
    for key in ("bytes", "zstd_bytes", "accuracy", "latency_p50_ms", "latency_p95_ms", "params"):
        assert key in doc["baseline"] and all(key in c for c in doc["candidates"])
    assert doc["eval"] == {
        "source": str(EVAL),
        "samples": 450,
        "labelled": True,
        "generated": False,
        "quality": "accuracy",
    }
    assert (out / "float32.tflite").read_bytes() == DIGITS.read_bytes()
    md = (out / "report.md").read_text()
    assert "| **dynamic_int8** | 60," in md and "## Recipes" in md
    png = (out / "report.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 10_000


def test_provenance_is_ready_for_a_signed_release(digits_report: tuple[Report, Path]) -> None:
    report, _ = digits_report
    prov = report.provenance
    assert prov is not None
    check_canonical_types(prov)  # no floats: it goes into signed documents
    assert set(prov) == {"parent_sha256", "recipe", "metrics"}
    import hashlib

    assert prov["parent_sha256"] == hashlib.sha256(DIGITS.read_bytes()).hexdigest()
    assert prov["recipe"].startswith("dynamic_int8: ") and "ai-edge-quantizer" in prov["recipe"]
    m = prov["metrics"]
    chosen = report.candidate("dynamic_int8")
    assert m["sha256"] == hashlib.sha256(Path(chosen.path).read_bytes()).hexdigest()
    assert m["bytes"] == chosen.bytes and m["profile"] == "x86-gateway"
    assert m["accuracy"] == f"{chosen.accuracy:.4f}"


def test_choice_follows_budget_then_preference(digits_report: tuple[Report, Path]) -> None:
    report, _ = digits_report
    base, cands = report.baseline, list(report.candidates)
    int8 = report.candidate("int8")

    def profile(quantizations: tuple[str, ...], **budget: object) -> DeviceProfile:
        return DeviceProfile(
            name="tiny",
            arch="armv7l",
            quantizations=quantizations,
            budget=Budget(**budget),  # type: ignore[arg-type]
        )

    # int8 preferred but a byte too big: the next preference wins, and the reason says why
    tight = profile(("int8", "dynamic_int8"), max_model_bytes=int8.bytes - 1)
    choice = choose(base, cands, tight)
    assert choice.method == "dynamic_int8"
    assert "Passed over: int8" in choice.reason and "budget" in choice.reason
    # nothing preferred fits: the smallest fitting candidate
    assert choose(base, cands, profile(("qat",))).method == min(cands, key=lambda c: c.bytes).method
    # a latency budget nothing can meet
    none = choose(base, cands, profile(("int8",), max_latency_ms=1e-6))
    assert none.method is None and "nothing fits" in none.reason
    assert all(not c.fits_budget and c.misses for c in none.candidates)
    # an accuracy drop beyond the budget rules a candidate out
    worse = replace(int8, accuracy=(base.accuracy or 0) - 0.02)
    assert choose(base, [worse], profile(("int8",))).method is None
    # the original is eligible only when the profile lists float32
    assert choose(base, [], profile(("float32",))).method == "float32"


def test_fidelity_without_labels(tmp_path: Path, profile: DeviceProfile) -> None:
    with np.load(EVAL) as npz:
        np.savez(tmp_path / "x-only.npz", x=npz["x"][:120])
    report = compress(
        DIGITS,
        profile,
        TRAIN,
        tmp_path / "x-only.npz",
        ["dynamic_int8", "int8"],
        tmp_path / "out",
        options=FAST,
    )
    assert not report.baseline.accuracy and report.baseline.accuracy is None
    assert report.labelled is False and report.eval_samples == 120
    for c in report.candidates:
        assert c.accuracy is None
        assert 0.95 <= c.agreement <= 1.0
        assert 0.0 < c.mean_abs_error <= c.max_abs_error < 0.5
    doc = json.loads((tmp_path / "out" / "report.json").read_text())
    assert doc["eval"]["quality"] == "agreement"
    assert "accuracy" not in doc["provenance"]["metrics"]
    assert "agreement" in (tmp_path / "out" / "report.md").read_text()


def test_a_foreign_float_model_goes_through_with_fidelity(
    tmp_path: Path, profile: DeviceProfile
) -> None:
    """A MobileNetV2-style network (depthwise convs, residual adds, RGB 96x96) made by
    tests/data/make_foreign_model.py, calibrated and evaluated on unlabelled images."""
    np.savez(tmp_path / "calib.npz", x=_foreign_scenes(64, seed=2))
    np.savez(tmp_path / "eval.npz", x=_foreign_scenes(48, seed=3))
    report = compress(
        FOREIGN,
        profile,
        tmp_path / "calib.npz",
        tmp_path / "eval.npz",
        None,
        tmp_path / "out",
        options=FAST,
    )
    assert report.input_kind == "tflite" and report.labelled is False
    assert [c.method for c in report.candidates] == list(TFLITE_METHODS)
    assert report.baseline.params > 5000
    for c in report.candidates:
        assert c.bytes < report.baseline.bytes
        assert 0.5 <= c.agreement <= 1.0 and c.max_abs_error < 1.0
    f16 = report.candidate("float16")
    assert f16.agreement >= 0.97 and f16.max_abs_error < 0.05
    assert report.candidate("int8").input_dtype == "float32"
    assert (tmp_path / "out" / "report.png").is_file()


def test_image_folder_gives_the_same_accuracy_as_the_npz(
    tmp_path: Path, profile: DeviceProfile
) -> None:
    with np.load(EVAL) as npz:
        xs, ys = npz["x"][:200], npz["y"][:200]
    for i, (x, y) in enumerate(zip(xs, ys, strict=True)):
        folder = tmp_path / "images" / str(int(y))
        folder.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(folder / f"{i:04d}.png"), np.round(x[..., 0] * 255).astype(np.uint8))
    loaded = load_dataset(tmp_path / "images", (1, 28, 28, 1))
    assert loaded.labelled and len(loaded) == 200 and loaded.x.shape == (200, 28, 28, 1)
    assert sorted(loaded.y.tolist()) == sorted(ys.tolist())  # type: ignore[union-attr]
    report = compress(
        DIGITS,
        profile,
        None,
        tmp_path / "images",
        ["weight_only_int8"],
        tmp_path / "out",
        options=FAST,
    )
    npz_report = compress(
        DIGITS,
        profile,
        None,
        Dataset(xs, ys, "eval[:200]"),
        ["weight_only_int8"],
        tmp_path / "out2",
        options=FAST,
    )
    assert report.baseline.accuracy == pytest.approx(npz_report.baseline.accuracy, abs=0.01)


def test_int8_without_calibration_data_is_skipped_with_a_reason(
    tmp_path: Path, profile: DeviceProfile
) -> None:
    report = compress(DIGITS, profile, None, EVAL, ["int8", "prune"], tmp_path, options=FAST)
    assert report.candidates == ()
    reasons = {s.method: s.reason for s in report.skipped}
    assert "--data" in reasons["int8"] and ".keras" in reasons["prune"]
    assert report.chosen is None


def test_bad_inputs_are_rejected(tmp_path: Path, profile: DeviceProfile) -> None:
    with pytest.raises(InputRejected, match="no such file"):
        compress(tmp_path / "missing.tflite", profile, None, EVAL, None, tmp_path)
    with pytest.raises(InputRejected, match="unknown methods"):
        compress(DIGITS, profile, None, EVAL, ["zip"], tmp_path)
    with pytest.raises(InputRejected, match="cannot read"):
        compress(DIGITS, profile, None, TRAIN.parent / "nope.npz", None, tmp_path)
    np.savez(tmp_path / "wrong.npz", x=np.zeros((4, 32, 32, 3), np.float32))
    with pytest.raises(InputRejected, match=r"shaped \[32, 32, 3\]"):
        compress(DIGITS, profile, None, tmp_path / "wrong.npz", None, tmp_path)
    quantized = compress(DIGITS, profile, TRAIN, EVAL, ["int8"], tmp_path / "q", options=FAST)
    with pytest.raises(InputRejected, match="already quantized"):
        compress(quantized.candidate("int8").path, profile, None, EVAL, None, tmp_path)


def test_cli_json_and_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    code = compress_main(
        [
            str(DIGITS),
            "--profile",
            "x86-gateway",
            "--data",
            str(TRAIN),
            "--eval",
            str(EVAL),
            "--methods",
            "weight_only_int8,dynamic_int8",
            "--out",
            str(out),
            "--json",
        ]
    )
    assert code == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["chosen"] == "dynamic_int8" and (out / "report.md").is_file()
    assert compress_main([str(DIGITS), "--profile", "no-such-profile", "--out", str(out)]) == 2
    assert compress_main([str(tmp_path / "nope.tflite"), "--profile", "x86-gateway"]) == 2
    # nothing fits (a 1 kB budget): exit 3, and the reason says why
    profile_file = tmp_path / "tiny.toml"
    profile_file.write_text('name = "tiny"\narch = "armv6l"\n[budget]\nmax_model_bytes = 1000\n')
    capsys.readouterr()
    code = compress_main(
        [
            str(DIGITS),
            "--profile",
            str(profile_file),
            "--eval",
            str(EVAL),
            "--methods",
            "dynamic_int8",
            "--out",
            str(tmp_path / "tiny"),
        ]
    )
    assert code == 3
    assert "nothing fits profile tiny's budget" in capsys.readouterr().out


BLOCK_TENSORFLOW = """
import importlib.abc
import sys

class _NoTensorFlow(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"tensorflow", "keras", "tf_keras", "tensorflow_model_optimization"}:
            raise ImportError(f"{name} is blocked for this process")
        return None

sys.meta_path.insert(0, _NoTensorFlow())
"""

CHILD = """
import json, sys
try:
    import tensorflow
    blocked = False
except ImportError:
    blocked = True
from cloud.compress.cli import main
code = main(sys.argv[2:])
loaded = sorted(m for m in sys.modules if m.split(".")[0] in {"tensorflow", "keras", "tf_keras"})
with open(sys.argv[1], "w") as f:
    json.dump({"blocked": blocked, "code": code, "loaded": loaded}, f)
"""


def test_tflite_path_runs_where_tensorflow_cannot_be_imported(tmp_path: Path) -> None:
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(BLOCK_TENSORFLOW)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(hook), str(REPO)])}
    status = tmp_path / "status.json"
    out = tmp_path / "out"
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            CHILD,
            str(status),
            str(DIGITS),
            "--profile",
            "x86-gateway",
            "--data",
            str(TRAIN),
            "--eval",
            str(EVAL),
            "--methods",
            "dynamic_int8,int8",
            "--out",
            str(out),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(status.read_text())
    assert result == {"blocked": True, "code": 0, "loaded": []}
    doc = json.loads((out / "report.json").read_text())
    assert doc["chosen"] == "dynamic_int8"
    assert doc["candidates"][0]["bytes"] <= 0.35 * doc["baseline"]["bytes"]


def test_keras_input_without_tensorflow_says_what_to_install(
    tmp_path: Path, profile: DeviceProfile
) -> None:
    if importlib.util.find_spec("tensorflow") is not None:
        pytest.skip("TensorFlow is installed here; test_compress_train.py covers .keras")
    code = compress_main(
        [
            str(REPO / "examples" / "models" / "digits.keras"),
            "--profile",
            "x86-gateway",
            "--out",
            str(tmp_path),
        ]
    )
    assert code == 2
