"""Every source kind, through the real loop with real models (videos and files made here)."""

from __future__ import annotations

import http.server
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from agent.loop import InferenceLoop, LoopOptions, LoopSnapshot
from agent.runtime import LoadedModel, load_model
from agent.sources import (
    BadSample,
    Feed,
    Frame,
    FrameNeed,
    Source,
    SourceEnded,
    VideoSource,
    open_source,
)

ROOT = Path(__file__).resolve().parents[2]
DIGITS = ROOT / "examples" / "models" / "digits.tflite"
VIBRATION = ROOT / "examples" / "models" / "vibration.tflite"
FAST = LoopOptions(reconnect_max_s=0.3)


def write_video(path: Path, frames: int, size: tuple[int, int] = (160, 120)) -> Path:
    """An MJPG .avi whose frame i is filled with gray level (i * 7) % 256."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, size)
    assert writer.isOpened()
    for i in range(frames):
        writer.write(np.full((size[1], size[0], 3), (i * 7) % 256, dtype=np.uint8))
    writer.release()
    return path


def wait_for(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.02)


@pytest.fixture(scope="module")
def digits() -> Iterator[LoadedModel]:
    model = load_model(DIGITS, threads=1)
    yield model
    model.close()


@pytest.fixture(scope="module")
def vibration() -> Iterator[LoadedModel]:
    model = load_model(VIBRATION, threads=1)
    yield model
    model.close()


def running(model: LoadedModel, uri: str, options: LoopOptions = FAST) -> InferenceLoop:
    source = open_source(uri, sensor_channels=3)
    loop = InferenceLoop(model, source, threading.Event(), options)
    loop.start()
    return loop


def run_to_the_end(model: LoadedModel, uri: str) -> tuple[InferenceLoop, LoopSnapshot, list[int]]:
    """Run a loop over a finite source until every frame was inferred: the loop, its last
    snapshot and the source index of each inferred frame."""
    indexes: list[int] = []
    loop = InferenceLoop(model, open_source(uri), threading.Event(), FAST)
    loop.add_listener(lambda r: indexes.append(r.index))
    loop.start()
    try:
        wait_for(lambda: loop.finished)
        snap = loop.snapshot()
    finally:
        loop.stop()
    return loop, snap, indexes


def test_video_file_every_frame_then_ended(tmp_path: Path, digits: LoadedModel) -> None:
    video = write_video(tmp_path / "clip.avi", 40)
    _, snap, indexes = run_to_the_end(digits, f"file://{video}")
    assert snap.source_status == "ended"
    assert (snap.frames, snap.inferences, snap.errors, snap.dropped_frames) == (40, 40, 0, 0)
    assert indexes == list(range(40))


def test_a_paced_video_file_plays_like_a_camera_and_still_delivers_every_frame(
    tmp_path: Path, digits: LoadedModel
) -> None:
    video = write_video(tmp_path / "clip.avi", 10)
    indexes: list[int] = []
    loop = InferenceLoop(digits, open_source(f"file://{video}?fps=20"), threading.Event(), FAST)
    loop.add_listener(lambda r: indexes.append(r.index))
    started = time.monotonic()
    loop.start()
    try:
        wait_for(lambda: loop.finished)
        took = time.monotonic() - started
    finally:
        loop.stop()
    assert indexes == list(range(10))
    assert took >= 9 / 20  # ten frames at 20 fps: no burst at the start (a lower bound only)


def test_missing_video_file_reports_down(tmp_path: Path, digits: LoadedModel) -> None:
    loop = running(digits, f"file://{tmp_path}/nothing.avi")
    try:
        wait_for(lambda: loop.snapshot().source_status.startswith("down"))
        assert "does not exist" in loop.snapshot().source_status
        time.sleep(0.6)
        assert loop.capture.reconnects >= 2  # it keeps trying, with backoff
        beat = loop.snapshot().heartbeat
        wait_for(lambda: loop.snapshot().heartbeat > beat)  # the loop is alive meanwhile
    finally:
        loop.stop()


def test_camera_path_that_appears_later(tmp_path: Path, digits: LoadedModel) -> None:
    camera = tmp_path / "video0"
    statuses: list[str] = []
    loop = InferenceLoop(digits, open_source(f"camera:{camera}"), threading.Event(), FAST)
    loop.add_event_listener(lambda kind, detail: statuses.append(detail.get("status", "")))
    loop.start()
    try:
        wait_for(lambda: loop.snapshot().source_status.startswith("down"))
        assert loop.snapshot().inferences == 0
        staged = write_video(tmp_path / "staged.avi", 60)
        os.replace(staged, camera)  # the device appears
        wait_for(lambda: loop.snapshot().inferences >= 10)
        assert "up" in statuses and statuses[0].startswith("down")
    finally:
        loop.stop()


def test_live_source_drops_stale_frames_and_counts_them(
    tmp_path: Path, digits: LoadedModel
) -> None:
    video = write_video(tmp_path / "cam.avi", 200)
    loop = InferenceLoop(digits, open_source(f"camera:{video}"), threading.Event(), FAST)
    loop.add_listener(lambda r: time.sleep(0.004))  # a slow consumer: the camera outruns it
    loop.start()
    try:
        wait_for(lambda: loop.snapshot().dropped_frames >= 20)
        snap = loop.snapshot()
    finally:
        loop.stop()
    assert loop.feed.latest_wins
    assert snap.inferences > 0
    # every captured frame was either inferred, dropped, or is the one in hand / in the slot
    assert 0 <= snap.frames - snap.inferences - snap.dropped_frames <= 2


def test_image_folder_with_an_unreadable_file(tmp_path: Path, digits: LoadedModel) -> None:
    for i in range(5):
        cv2.imwrite(str(tmp_path / f"img{i:02d}.png"), np.full((60, 80, 3), i * 40, np.uint8))
    (tmp_path / "img99.png").write_bytes(b"not a png")
    (tmp_path / "notes.txt").write_text("ignored")
    loop = running(digits, f"images://{tmp_path}")
    try:
        wait_for(lambda: loop.finished)
        snap = loop.snapshot()
    finally:
        loop.stop()
    assert (snap.inferences, snap.errors, snap.source_status) == (5, 1, "ended")


def vibration_lines(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return [",".join(f"{v:.4f}" for v in rng.normal(0, 1, 3)) for _ in range(n)]


def test_csv_with_a_malformed_line(tmp_path: Path, vibration: LoadedModel) -> None:
    lines = ["x,y,z", *vibration_lines(64), "0.1,oops,0.3", *vibration_lines(64, 1), "1,2"]
    csv = tmp_path / "samples.csv"
    csv.write_text("\n".join(lines) + "\n")
    loop = running(vibration, f"sensor+csv://{csv}")
    try:
        wait_for(lambda: loop.finished)
        snap = loop.snapshot()
    finally:
        loop.stop()
    # two full windows of 64 samples; the bad line and the 2-wide line are errors, not crashes
    assert (snap.inferences, snap.errors, snap.source_status) == (2, 2, "ended")
    assert snap.outputs["kind"] == "classification"


def test_csv_from_a_pipe_is_live_and_reconnects(tmp_path: Path, vibration: LoadedModel) -> None:
    fifo = tmp_path / "sensor.fifo"
    os.mkfifo(fifo)
    loop = running(vibration, f"sensor+csv://{fifo}")
    try:
        for round_ in range(2):  # two writers, one after the other
            with open(fifo, "w") as writer:
                writer.write("\n".join(vibration_lines(64 * 3, round_)) + "\n")
            wait_for(lambda r=round_: loop.snapshot().inferences >= 1 + r)  # type: ignore[misc]
            wait_for(lambda: loop.snapshot().source_status.startswith("down"))
        assert loop.feed.latest_wins
    finally:
        loop.stop()


def test_serial_device_lines(vibration: LoadedModel) -> None:
    master, slave = os.openpty()
    path = os.ttyname(slave)
    loop = running(vibration, f"sensor+serial://{path}?baud=115200")
    try:
        wait_for(lambda: loop.snapshot().source_status == "up")
        os.write(master, ("\r\n".join(vibration_lines(64 * 2)) + "\r\n").encode())
        wait_for(lambda: loop.snapshot().inferences >= 1)
        assert loop.snapshot().errors == 0
    finally:
        loop.stop()
        os.close(master)
        os.close(slave)


def test_synthetic_sources(digits: LoadedModel, vibration: LoadedModel) -> None:
    for model, uri in (
        (digits, "synthetic:image"),
        (vibration, "synthetic:sensor"),
        (digits, "synthetic:image?fps=50"),
    ):
        loop = running(model, uri)
        try:
            wait_for(lambda lp=loop: lp.snapshot().inferences >= 5)  # type: ignore[misc]
            assert loop.snapshot().source_status == "up"
        finally:
            loop.stop()


def test_http_stream_is_live_and_reconnects_at_its_end(tmp_path: Path, digits: LoadedModel) -> None:
    write_video(tmp_path / "stream.avi", 30)

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            super().__init__(*args, directory=str(tmp_path), **kwargs)

        def log_message(self, *args) -> None:  # type: ignore[no-untyped-def]
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    statuses: list[str] = []
    source = open_source(f"http://127.0.0.1:{server.server_address[1]}/stream.avi")
    loop = InferenceLoop(digits, source, threading.Event(), FAST)
    loop.add_event_listener(lambda kind, detail: statuses.append(detail.get("status", "")))
    loop.start()
    try:
        wait_for(lambda: loop.snapshot().inferences >= 5)
        wait_for(lambda: any(s.startswith("down") for s in statuses))  # the stream ended
        wait_for(lambda: statuses.count("up") >= 2)  # and was opened again
    finally:
        loop.stop()
        server.shutdown()
        server.server_close()


def test_unknown_uri_is_refused() -> None:
    with pytest.raises(ValueError):
        open_source("ftp://example/video")
    with pytest.raises(ValueError):
        open_source("sensor+serial:///dev/ttyS0?baud=12345")


def write_big_video(path: Path, frames: int, fourcc: str = "MJPG") -> Path:
    """A 640x480 video of a white disc on gray, moving a little from frame to frame."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), 30.0, (640, 480))
    assert writer.isOpened()
    for i in range(frames):
        frame = np.full((480, 640, 3), 60, np.uint8)
        cv2.circle(frame, (320 + 4 * i, 240), 150, (255, 255, 255), -1)
        cv2.rectangle(frame, (100, 100), (200, 380), (30, 160, 220), -1)
        writer.write(frame)
    writer.release()
    return path


def read_all(source: Source) -> list[np.ndarray | str]:
    """Every item of a finite source; "bad" for an item it reports as bad."""
    items: list[np.ndarray | str] = []
    source.open()
    try:
        while True:
            try:
                item = source.read(1.0)
            except BadSample:
                items.append("bad")
                continue
            except SourceEnded:
                return items
            assert item is not None
            items.append(item)
    finally:
        source.close()


def test_mjpg_video_is_decoded_at_the_size_and_colour_the_model_needs(tmp_path: Path) -> None:
    video = write_big_video(tmp_path / "big.avi", 6)
    full = read_all(open_source(f"file://{video}"))
    sizes = {}
    for name, need in [
        ("full", None),
        ("half", FrameNeed(160, 160)),
        ("eighth-gray", FrameNeed(28, 28, gray=True)),
        ("too-big", FrameNeed(400, 400)),
    ]:
        source = open_source(f"file://{video}")
        source.want(need)
        frames = read_all(source)
        assert isinstance(source, VideoSource) and source.packets  # JPEG packets, decoded here
        assert len(frames) == 6
        sizes[name] = {f.shape for f in frames if isinstance(f, np.ndarray)}
        if need is not None and not need.gray:  # scaled in the DCT: a good downscale
            for big, small in zip(full, frames, strict=True):
                assert isinstance(big, np.ndarray) and isinstance(small, np.ndarray)
                expected = cv2.resize(big, small.shape[1::-1], interpolation=cv2.INTER_AREA)
                assert np.abs(expected.astype(int) - small.astype(int)).mean() < 4
    assert sizes == {
        "full": {(480, 640, 3)},
        "half": {(240, 320, 3)},
        "eighth-gray": {(60, 80)},
        "too-big": {(480, 640, 3)},
    }


def test_other_codecs_are_decoded_by_opencv_in_full(tmp_path: Path) -> None:
    video = write_big_video(tmp_path / "big.mp4", 5, fourcc="mp4v")
    source = open_source(f"file://{video}")
    source.want(FrameNeed(28, 28, gray=True))
    frames = read_all(source)
    assert isinstance(source, VideoSource) and not source.packets
    assert [f.shape for f in frames if isinstance(f, np.ndarray)] == [(480, 640, 3)] * 5


def test_a_corrupt_mjpg_frame_is_a_counted_error_and_the_rest_are_inferred(
    tmp_path: Path, digits: LoadedModel
) -> None:
    video = write_big_video(tmp_path / "big.avi", 12)
    data = bytearray(video.read_bytes())
    starts = [i for i in range(len(data) - 1) if data[i : i + 2] == b"\xff\xd8"]
    assert len(starts) == 12
    data[starts[5] : starts[5] + 2] = b"\x00\x00"  # frame 5 is no longer a JPEG image
    video.write_bytes(bytes(data))
    loop, snap, indexes = run_to_the_end(digits, f"file://{video}")
    assert loop.capture.source.packets  # type: ignore[attr-defined]
    assert (snap.frames, snap.inferences, snap.errors) == (11, 11, 1)
    assert indexes == list(range(11))


def test_feed_wakes_a_waiting_producer_only_at_its_low_water_mark() -> None:
    feed = Feed(4, latest_wins=False)
    wakes = 0
    notify = feed._room.notify

    def counted(n: int = 1) -> None:
        nonlocal wakes
        wakes += 1
        notify(n)

    feed._room.notify = counted  # type: ignore[method-assign]
    wait = feed._room.wait
    # the producer's periodic re-check (0.25 s) must not blur what wakes it on a slow machine
    feed._room.wait = lambda timeout=None: wait(10.0)  # type: ignore[method-assign]
    stop = threading.Event()
    for i in range(4):
        assert feed.put(Frame(i, 0.0, np.zeros(1), [], None), stop)
    producer = threading.Thread(target=feed.put, args=(Frame(4, 0.0, np.zeros(1), [], None), stop))
    producer.start()
    wait_for(lambda: feed._producer_waits, timeout=5)
    taken = []
    for _ in range(2):
        frame = feed.get(1.0)
        assert frame is not None
        taken.append(frame.index)
    assert wakes == 0  # three and two frames left: the producer is not disturbed yet
    frame = feed.get(1.0)
    assert frame is not None and wakes == 1  # one left (the low-water mark): wake it
    producer.join(5)
    assert not producer.is_alive()
    rest = [feed.get(1.0) for _ in range(2)]
    assert taken + [frame.index] + [f.index for f in rest if f is not None] == [0, 1, 2, 3, 4]
