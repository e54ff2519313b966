"""Make a test video of held-out digits for the camera source.

Each frame is 640x480 BGR: one digit from examples/data/digits-eval.npz, white on black,
scaled up to fill the centre 480x480 square (a centre crop resized to 28x28 gives back the
model's input), with its true label in small grey print in the left margin.
Consecutive frames step through the eval set, ``--hold`` frames per digit. The container follows
the file extension: ``.avi`` is written as MJPG, ``.mp4`` as mp4v. The script reads the file back
and fails if OpenCV cannot decode every frame.

    python examples/make_digits_video.py --out /tmp/digits.avi --frames 300 --fps 15
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

HERE = Path(__file__).resolve().parent
WIDTH, HEIGHT = 640, 480
FOURCC = {".avi": "MJPG", ".mp4": "mp4v"}


def render(digit: np.ndarray, label: int) -> np.ndarray:
    """A 640x480 BGR frame: the 28x28 digit in [0, 1] scaled to fill the centre 480x480."""
    frame = np.zeros((HEIGHT, WIDTH, 3), dtype=np.uint8)
    side = HEIGHT
    gray = (np.clip(digit[..., 0], 0.0, 1.0) * 255.0).astype(np.uint8)
    big = cv2.resize(gray, (side, side), interpolation=cv2.INTER_NEAREST)
    top, left = (HEIGHT - side) // 2, (WIDTH - side) // 2
    frame[top : top + side, left : left + side] = big[..., None]
    cv2.putText(frame, str(label), (8, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (90, 90, 90), 1)
    return frame


def write_video(out: Path, frames: int, fps: float, hold: int, data: Path) -> int:
    """Write ``frames`` frames to ``out``; return how many frames read back."""
    fourcc = FOURCC.get(out.suffix.lower())
    if fourcc is None:
        raise ValueError(f"unsupported extension {out.suffix!r}; use .avi or .mp4")
    with np.load(data) as npz:
        xs, ys = npz["x"], npz["y"]
    out.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*fourcc), fps, (WIDTH, HEIGHT))
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot open a {fourcc} writer for {out}")
    try:
        for i in range(frames):
            k = (i // hold) % len(ys)
            writer.write(render(xs[k], int(ys[k])))
    finally:
        writer.release()

    cap = cv2.VideoCapture(str(out))
    read = 0
    try:
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            if frame.shape != (HEIGHT, WIDTH, 3):
                raise RuntimeError(f"frame {read} read back as {frame.shape}")
            read += 1
    finally:
        cap.release()
    return read


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="output .avi (MJPG) or .mp4 (mp4v)")
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--fps", type=float, default=15.0)
    parser.add_argument("--hold", type=int, default=1, help="frames each digit stays on screen")
    parser.add_argument("--data", type=Path, default=HERE / "data" / "digits-eval.npz")
    args = parser.parse_args(argv)
    if args.frames < 1 or args.hold < 1 or args.fps <= 0:
        parser.error("--frames, --hold and --fps must be positive")

    read = write_video(args.out, args.frames, args.fps, args.hold, args.data)
    print(f"{args.out}  {args.out.stat().st_size} bytes  {read}/{args.frames} frames read back")
    return 0 if read == args.frames else 1


if __name__ == "__main__":
    sys.exit(main())
