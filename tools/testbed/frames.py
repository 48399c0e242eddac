"""The first frames of a video file, decoded by OpenCV: what the simulated cameras serve and the benchmark embeds."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np


def first_frames(video: Path, limit: int) -> Iterator[np.ndarray]:
    """Up to ``limit`` BGR frames from the start of ``video``; fewer when it is shorter or cannot be read."""
    capture = cv2.VideoCapture(str(video))
    try:
        for _ in range(limit):
            ok, image = capture.read()
            if not ok:
                return
            yield image
    finally:
        capture.release()
