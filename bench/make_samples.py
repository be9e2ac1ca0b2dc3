"""Make the shipped samples from scikit-image's public-domain `astronaut` photo (NASA, Eileen Collins).

i2nq/assets/sample.png: a 288x216 crop, the HR reference of `i2nq demo` (divisible by scales 2, 3, 4).
i2nq/assets/sample.mp4: a 2 s, 24 fps, 160x120 slow pan and zoom over the photo (H.264), with a
440 Hz sine tone as a mono AAC track, so the demo shows audio being carried over.

Run: python bench/make_samples.py [--out i2nq/assets]   (needs scikit-image)
"""

from __future__ import annotations

import argparse
from pathlib import Path

import av
import cv2
import numpy as np
from skimage import data

FPS, SECONDS, SIZE, RATE = 24, 2, (160, 120), 48000


def make_image(path: Path, photo: np.ndarray) -> None:
    """Save a detailed crop (helmet, face, flag) as 8-bit PNG."""
    crop = photo[40:256, 136:424]
    cv2.imwrite(str(path), crop, [cv2.IMWRITE_PNG_COMPRESSION, 9])


def make_clip(path: Path, photo: np.ndarray) -> None:
    """Encode a pan/zoom over the photo plus a sine tone."""
    width, height = SIZE
    frames = FPS * SECONDS
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=FPS, options={"crf": "26", "preset": "veryslow"})
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        audio = out.add_stream("aac", rate=RATE, layout="mono", options={"b": "48k"})
        for i in range(frames):
            t = i / (frames - 1)
            zoom = 1.6 + 0.8 * t  # source pixels per output pixel: a widening window, a slow zoom out
            cx, cy = 180 + 120 * t, 200 - 60 * t
            matrix = np.array([[zoom, 0, cx - zoom * width / 2], [0, zoom, cy - zoom * height / 2]])
            rgb = cv2.warpAffine(photo[..., ::-1], matrix, SIZE, flags=cv2.WARP_INVERSE_MAP | cv2.INTER_AREA,
                                 borderMode=cv2.BORDER_REFLECT)
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            frame.pts = i
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
        samples = RATE * SECONDS
        t = np.arange(samples) / RATE
        tone = (0.2 * np.sin(2 * np.pi * 440 * t) * np.minimum(1, np.minimum(t, SECONDS - t) * 10))
        tone = tone.astype(np.float32)[None]
        for start in range(0, samples, 1024):
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(tone[:, start:start + 1024]), format="fltp",
                                               layout="mono")
            frame.sample_rate, frame.pts = RATE, start
            out.mux(audio.encode(frame))
        out.mux(audio.encode(None))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "i2nq" / "assets")
    args = parser.parse_args()
    photo = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)
    make_image(args.out / "sample.png", photo)
    make_clip(args.out / "sample.mp4", photo)
    for name in ("sample.png", "sample.mp4"):
        print(f"{args.out / name}: {(args.out / name).stat().st_size / 1024:.0f} KiB")


if __name__ == "__main__":
    main()
