"""Decoding recorded video into timestamped frames, and shaping frames for the backbone."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".ts")


class VideoOpenError(RuntimeError):
    """A video source could not be opened or has no usable frame rate."""


@dataclass(frozen=True)
class VideoInfo:
    path: Path
    width: int
    height: int
    fps: float
    frame_count: int


@dataclass(frozen=True)
class DecodedFrame:
    index: int
    t: float  # seconds from the start of the stream
    image: np.ndarray  # BGR uint8 [H, W, 3], as OpenCV decodes it


def open_video(path: str | Path) -> tuple[cv2.VideoCapture, VideoInfo]:
    path = Path(path)
    if not path.is_file():
        raise VideoOpenError(f"video file not found: {path}")
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise VideoOpenError(f"OpenCV cannot open {path}: not a video, or a codec this build lacks")
    fps = float(capture.get(cv2.CAP_PROP_FPS))
    if not (fps > 0 and np.isfinite(fps)):
        capture.release()
        raise VideoOpenError(f"{path}: the container reports no frame rate, so frames cannot be timestamped")
    info = VideoInfo(
        path=path,
        width=int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)),
        height=int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)),
        fps=fps,
        frame_count=int(capture.get(cv2.CAP_PROP_FRAME_COUNT)),
    )
    return capture, info


def iter_sampled_frames(
    path: str | Path, keep: Callable[[float], bool]
) -> Iterator[DecodedFrame]:
    """Decode every frame, converting only those ``keep(t)`` accepts.

    Frame ``i`` is stamped ``i / fps``: recorded files here are constant-rate,
    and this keeps stamps identical across OpenCV builds, whose container
    timestamps for some codecs are off by a frame.
    """
    capture, info = open_video(path)
    try:
        index = 0
        while capture.grab():
            t = index / info.fps
            if keep(t):
                ok, image = capture.retrieve()
                if not ok or image is None:
                    raise VideoOpenError(f"{info.path}: frame {index} could not be decoded")
                yield DecodedFrame(index=index, t=t, image=image)
            index += 1
    finally:
        capture.release()


def prepare_frame(bgr: np.ndarray, width: int, height: int) -> np.ndarray:
    """BGR frame of any size -> RGB uint8 [height, width, 3] for the backbone (squashed, not cropped)."""
    interpolation = cv2.INTER_AREA if bgr.shape[1] >= width else cv2.INTER_LINEAR
    resized = cv2.resize(bgr, (width, height), interpolation=interpolation)
    return cv2.cvtColor(resized, cv2.COLOR_BGR2RGB)


def list_videos(folder: str | Path) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise VideoOpenError(f"video folder not found: {folder}")
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES)
