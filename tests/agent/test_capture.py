"""Sample capture on the device with real digits inferences: off means nothing is kept or
sent (with a positive control), the rate limit and the disk budget hold, an operator's
`capture N` keeps N frames, and upload grants are bounded before they are used."""

from __future__ import annotations

import itertools
import threading
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from agent.capture.recorder import SampleRecorder
from agent.capture.store import SampleStore
from agent.capture.uploader import SampleUploader
from agent.config import CaptureConfig
from agent.loop import InferenceResult
from agent.references import ReferenceBook
from agent.runtime import load_model
from cloud.compress.reference import read_reference
from shared.errors import MalformedDocument
from shared.messages import Command, ModelIdentity, decode_message
from tests.agent.drift_helpers import DIGITS, EVAL, digits_reference

IDENTITY = ModelIdentity("digits", 1, "0" * 64)


@pytest.fixture(scope="module")
def model():  # type: ignore[no-untyped-def]
    m = load_model(DIGITS, threads=1)
    yield m
    m.close()


def results(model, count: int, step: float = 1.0, start: float = 0.0):  # type: ignore[no-untyped-def]
    x = np.load(EVAL)["x"][:count]
    out = []
    for i, image in enumerate(x):
        inputs = [image[None].astype(np.float32)]
        out.append(
            InferenceResult(
                model.sha256,
                True,
                1.0,
                inputs,
                i,
                start + i * step,
                [o.copy() for o in model.invoke(inputs)],
                True,
            )
        )
    return out


def recorder(
    tmp_path: Path,
    model,
    config: CaptureConfig,
    budget: int = 10**7,  # type: ignore[no-untyped-def]
    confidence_pct: int = 100,
) -> SampleRecorder:
    book = ReferenceBook(tmp_path / "state")
    ref = read_reference(digits_reference(tmp_path / "ref"))
    book.remember(model.sha256, replace(ref, confidence_threshold_pct=confidence_pct))
    store = SampleStore(tmp_path / "state" / "samples", budget)
    return SampleRecorder(
        config,
        store,
        tmp_path / "state" / "capture.json",
        book,
        lambda sha: model.signature,
        lambda: IDENTITY,
        threading.Event(),
    )


def test_off_keeps_nothing_on_keeps_samples(tmp_path: Path, model) -> None:  # type: ignore[no-untyped-def]
    frames = results(model, 40, step=10.0)
    off = recorder(tmp_path / "off", model, CaptureConfig(enabled=False, max_per_hour=3600))
    for r in frames:
        off.observe(r)
    assert off.drain() == 0 and not (tmp_path / "off" / "state" / "samples").exists()
    on = recorder(tmp_path / "on", model, CaptureConfig(enabled=True, max_per_hour=3600))
    for r in frames:
        on.observe(r)
    kept = on.drain()
    assert kept > 0  # positive control: the same frames trigger when capture is on
    files = sorted(p.suffix for p in (tmp_path / "on" / "state" / "samples").iterdir())
    assert files.count(".jpg") == files.count(".json") == kept


def test_the_rate_limit_holds_and_commands_count_toward_the_hour(tmp_path: Path, model) -> None:  # type: ignore[no-untyped-def]
    rec = recorder(tmp_path, model, CaptureConfig(enabled=True, max_per_hour=4))
    frames = results(model, 120, step=60.0)  # a frame a minute for two hours
    kept_at = []
    for r in frames:
        before = len(rec._pending)
        rec.observe(r)
        if len(rec._pending) > before:
            kept_at.append(r.ts)
    assert kept_at  # positive control
    for t in kept_at:  # never more than 4 in any hour, at least 900 s apart
        assert sum(1 for u in kept_at if t <= u < t + 3600) <= 4
    assert all(b - a >= 900 for a, b in itertools.pairwise(kept_at))

    command = recorder(tmp_path / "cmd", model, CaptureConfig(enabled=False, max_per_hour=3))
    command.request(5)
    for r in results(model, 10, step=0.1):
        command.observe(r)
    assert command.drain() == 3  # asked for 5, the hour allows 3


def test_the_disk_budget_holds(tmp_path: Path, model) -> None:  # type: ignore[no-untyped-def]
    rec = recorder(tmp_path, model, CaptureConfig(enabled=True, max_per_hour=3600), budget=4000)
    rec.request(40)
    for r in results(model, 40, step=0.1):
        rec.observe(r)
    kept = rec.drain()
    assert 0 < kept < 40
    assert rec.store.used_bytes() <= 4000
    assert rec.store.refused > 0


def test_nothing_is_published_without_samples_and_grants_are_bounded(tmp_path: Path) -> None:
    store = SampleStore(tmp_path / "samples", 10**6)
    sent: list[bytes] = []
    uploader = SampleUploader(store, "dev-1", sent.append, threading.Event(), retry_s=0.0)
    assert uploader.step() == 0 and sent == []  # nothing waits: nothing leaves
    store.keep("20260101T000000-0123abcd", "npy", b"x" * 10, {"trigger": "command"})
    uploader.step()
    request = decode_message(sent[0])
    assert request.files == {
        "20260101T000000-0123abcd.npy": 10,  # type: ignore[union-attr]
        "20260101T000000-0123abcd.json": 22,
    }

    def command(urls: object) -> Command:
        return Command(
            "dev-1",
            "upload",
            "2026-01-01T00:00:00Z",
            "2026-01-01T00:15:00Z",
            "n" * 16,
            {"urls": urls},
        )

    for bad in (
        {"../etc/passwd": "http://x/y"},
        {"20260101T000000-0123abcd.npy": "file:///x"},
        {"20260101T000000-0123abcd.npy": "http://x/" + "a" * 5000},
        ["http://x"],
        {f"20260101T000000-0123ab{i:02x}.npy": "http://x/y" for i in range(17)},
    ):
        with pytest.raises(MalformedDocument):
            uploader.grant(command(bad))
    # a grant whose server refuses keeps the file for the next request
    uploader.grant(command({"20260101T000000-0123abcd.npy": "http://127.0.0.1:9/nowhere"}))
    uploader.timeout_s = 2.0
    uploader.step()
    assert (tmp_path / "samples" / "20260101T000000-0123abcd.npy").exists()
    assert uploader.failed == 1


def test_shadow_frames_the_two_models_disagree_on_become_samples(tmp_path: Path, model) -> None:  # type: ignore[no-untyped-def]
    import json
    import time

    from agent.update.probation import Probation
    from shared.documents import ProbationPolicy

    bad = load_model(DIGITS.parent / "digits-bad.tflite", threads=1)
    rec = recorder(
        tmp_path, model, CaptureConfig(enabled=True, max_per_hour=3600, triggers=("disagreement",))
    )
    rec._spacing = 0.0  # every disagreement may be kept in this test (the hour cap holds)
    probation = Probation(
        model.sha256, ProbationPolicy(min_agreement_pct=50), None, bad, shadow_every=1
    )
    probation.on_disagreement = rec.disagreement
    for r in results(model, 40, step=0.01):
        probation.observe(r)
        time.sleep(0.005)  # let the shadow worker keep up (it drops frames when busy)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and probation._compared < 20:
        time.sleep(0.05)
    probation.stop()
    bad.close()
    disagreed = probation._compared - probation._agree
    assert disagreed > 0  # the bad model disagrees with the good one on some digits
    # every disagreement was handed over; the bounded hand-over keeps the newest few until
    # the capture thread (not running here) writes them
    assert rec.drain() == min(disagreed, rec._pending.maxlen or 0)
    metas = [json.loads(p.read_text()) for p in (tmp_path / "state" / "samples").glob("*.json")]
    assert {m["trigger"] for m in metas} == {"disagreement"}
    assert all(m["predicted"] != m["previous_predicted"] for m in metas)


def test_a_sensor_window_is_kept_as_npy_and_its_drift_is_per_axis(tmp_path: Path) -> None:
    import io
    import json

    from shared.features import FeatureExtractor, build_reference

    vibration = load_model(DIGITS.parent / "vibration.tflite", threads=1)
    windows = np.random.default_rng(1).normal(size=(60, 64, 3)).astype(np.float32)
    outputs = [np.concatenate([vibration.invoke([w[None]])[0] for w in windows])]
    reference = build_reference(
        vibration.signature,
        windows,
        outputs,
        drift_threshold_milli=250,
        confidence_threshold_pct=100,
    )
    assert [f.name for f in reference.features] == [
        "input.c0",
        "input.c1",
        "input.c2",
        "output.class",
        "output.score",
    ]
    assert len(reference.channels) == 3  # mean and std per axis
    assert FeatureExtractor(vibration.signature).names == tuple(f.name for f in reference.features)
    book = ReferenceBook(tmp_path / "state")
    book.remember(vibration.sha256, reference)
    store = SampleStore(tmp_path / "state" / "samples", 10**6)
    rec = SampleRecorder(
        CaptureConfig(enabled=False),
        store,
        tmp_path / "capture.json",
        book,
        lambda sha: vibration.signature,
        lambda: IDENTITY,
        threading.Event(),
    )
    rec.request(1)
    window = [windows[0][None]]
    rec.observe(
        InferenceResult(vibration.sha256, True, 1.0, window, 0, 0.0, vibration.invoke(window), True)
    )
    assert rec.drain() == 1
    (npy,) = (tmp_path / "state" / "samples").glob("*.npy")
    assert np.array_equal(np.load(io.BytesIO(npy.read_bytes())), windows[0])
    meta = json.loads(npy.with_suffix(".json").read_text())
    assert meta["encoding"] == "npy" and meta["trigger"] == "command" and meta["shape"] == [64, 3]
    vibration.close()


def test_drift_over_the_threshold_triggers_capture(tmp_path: Path, model) -> None:  # type: ignore[no-untyped-def]
    drifting = {"now": False}
    book = ReferenceBook(tmp_path / "state")
    store = SampleStore(tmp_path / "state" / "samples", 10**7)
    rec = SampleRecorder(
        CaptureConfig(enabled=True, max_per_hour=3600, triggers=("drift",)),
        store,
        tmp_path / "capture.json",
        book,
        lambda sha: model.signature,
        lambda: IDENTITY,
        threading.Event(),
        drifting=lambda: drifting["now"],
    )
    frames = results(model, 20, step=2.0)
    for r in frames[:10]:
        rec.observe(r)
    assert rec.drain() == 0  # under the threshold: nothing
    drifting["now"] = True
    for r in frames[10:]:
        rec.observe(r)
    kept = rec.drain()
    assert kept > 0
    import json

    metas = [json.loads(p.read_text()) for p in store.folder.glob("*.json")]
    assert len(metas) == kept and {m["trigger"] for m in metas} == {"drift"}
