"""Decoding recorded video into timestamped frames, and shaping frames for the backbone.

The offline path (feature extraction, offline scoring) decodes through the
same reader as the streaming capture stage (``pipeline.sources.readers``), so both
see the same frames at the same presentation times.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

import cv2
import numpy as np

from engines.spec import EFFICIENTNET_LITE0, BackboneSpec
from pipeline.errors import ActionPipeError
from pipeline.sources.sampling import StepSampler
from pipeline.sources.uri import VIDEO_SUFFIXES


class VideoOpenError(ActionPipeError, RuntimeError):
    """A video source could not be opened or has no usable frame rate."""


@dataclass(frozen=True)
class DecodedFrame:
    index: int  # position among the frames that decoded
    t: float  # seconds from the first frame (presentation time)
    image: np.ndarray  # BGR uint8 [H, W, 3], as OpenCV decodes it


def iter_sampled_frames(path: str | Path, keep: Callable[[float], bool]) -> Iterator[DecodedFrame]:
    """Decode every frame, converting only those ``keep(t)`` accepts; damaged frames are skipped."""
    from pipeline.sources.frames import SourceError
    from pipeline.sources.readers import VideoFileReader

    path = Path(path)
    if not path.is_file():
        raise VideoOpenError(f"video file not found: {path}")
    try:
        reader = VideoFileReader(path)
    except SourceError as exc:
        raise VideoOpenError(str(exc)) from exc
    try:
        index = 0
        while (frame := reader.read(keep)) is not None:
            if frame.image is not None:
                yield DecodedFrame(index=index, t=frame.t, image=frame.image)
            index += 1
    finally:
        reader.close()


def prepare_frame(bgr: np.ndarray, width: int, height: int) -> np.ndarray:
    """BGR frame of any size -> RGB uint8 [height, width, 3] for the backbone (squashed, not cropped).

    Shrinking approximates OpenCV's area resampling (what the demo head was trained on) at a
    quarter of its cost: ``INTER_AREA`` at a non-integer ratio costs 2.2 ms per 640x360 frame and
    6.9 per 1280x720 here, a third of the substream's decode. Exact 2x2 means while the frame is 4x
    the input or more, then bilinear to twice the input and one more 2x2 mean: 0.5 and 1.8 ms, and
    embeddings at a cosine of 0.998 or more from ``INTER_AREA``'s, frame by frame
    (``python -m tools.benchmark_preparation``)."""
    rows, cols = bgr.shape[:2]
    if (cols, rows) == (width, height):
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    if cols < width:
        resized = cv2.resize(bgr, (width, height), interpolation=cv2.INTER_LINEAR)
    else:
        while cols >= 4 * width or rows >= 4 * height:
            cols, rows = cols // 2, rows // 2
            bgr = cv2.resize(bgr, (cols, rows), interpolation=cv2.INTER_AREA)
        doubled = cv2.resize(bgr, (2 * width, 2 * height), interpolation=cv2.INTER_LINEAR)
        resized = cv2.resize(doubled, (width, height), interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(resized, cv2.COLOR_BGR2RGB)


def calibration_frames(videos: Sequence[Path], count: int, spec: BackboneSpec = EFFICIENTNET_LITE0,
                       step_rate: float = 4.0) -> np.ndarray:
    """``count`` frames prepared exactly as capture prepares them (sampled by time, resized, RGB),
    spread over the videos, for INT8 calibration: uint8 [count, H, W, 3]."""
    if not videos:
        raise ValueError("calibration needs at least one video")
    per_video = -(-count // len(videos))
    frames: list[np.ndarray] = []
    for video in videos:
        sampled = iter_sampled_frames(video, StepSampler(step_rate).accept)
        frames += [prepare_frame(f.image, spec.input_width, spec.input_height) for f in islice(sampled, per_video)]
    if not frames:
        raise ValueError(f"no frames decoded from {[str(v) for v in videos]}")
    return np.stack(frames[:count])


def list_videos(folder: str | Path) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise VideoOpenError(f"video folder not found: {folder}")
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES)
