"""Opening the sources a user points the pipeline at, as timestamped frame readers.

    file        path to a video (mp4, avi, mkv, ...)          replay
    image dir   folder of images, in name order               replay (``fps``, default 10)
    camera      index ("0") or V4L2 device ("/dev/video0")    live
    network     rtsp://, rtsp(s)://, http(s):// URLs          live

Replay sources are stamped from their frame rate (frame ``i`` at ``i / fps``);
live sources are stamped by the monotonic clock at read time. A read that
fails ends the reader: a black frame is never invented.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from pipeline.video_io import VIDEO_SUFFIXES, VideoOpenError, open_video

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
NETWORK_SCHEMES = ("rtsp://", "rtsps://", "http://", "https://")
DEFAULT_IMAGE_FPS = 10.0


class SourceError(RuntimeError):
    """A source that cannot be opened or read; the message names it without credentials."""


@dataclass(frozen=True)
class RawFrame:
    t: float  # seconds of stream time
    image: np.ndarray  # BGR uint8 [H, W, 3]


class FrameReader(Protocol):
    is_live: bool
    fps: float | None

    def read(self) -> RawFrame | None:
        """The next frame, or None at the end of the stream."""

    def close(self) -> None: ...


def redact(uri: str) -> str:
    """A URI fit for logs and errors: user:password@ removed."""
    if "://" not in uri:
        return uri
    scheme, rest = uri.split("://", 1)
    host_part, sep, path = rest.partition("/")
    if "@" in host_part:
        host_part = "***@" + host_part.rsplit("@", 1)[1]
    return f"{scheme}://{host_part}{sep}{path}"


class VideoFileReader:
    is_live = False

    def __init__(self, path: Path) -> None:
        try:
            self._capture, info = open_video(path)
        except VideoOpenError as exc:
            raise SourceError(str(exc)) from exc
        self.fps: float | None = info.fps
        self._index = 0
        self._path = path

    def read(self) -> RawFrame | None:
        ok, image = self._capture.read()
        if not ok or image is None:
            return None
        frame = RawFrame(t=self._index / self.fps, image=image)
        self._index += 1
        return frame

    def close(self) -> None:
        self._capture.release()


class ImageFolderReader:
    is_live = False

    def __init__(self, folder: Path, fps: float = DEFAULT_IMAGE_FPS) -> None:
        self._paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not self._paths:
            raise SourceError(f"image folder {folder} holds no images ({', '.join(IMAGE_SUFFIXES)})")
        self.fps = fps
        self._index = 0

    def read(self) -> RawFrame | None:
        if self._index >= len(self._paths):
            return None
        path = self._paths[self._index]
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise SourceError(f"image {path} cannot be decoded")
        frame = RawFrame(t=self._index / self.fps, image=image)
        self._index += 1
        return frame

    def close(self) -> None:
        self._paths = []


class LiveCaptureReader:
    """A camera or network stream: stamped by arrival on the monotonic clock."""

    is_live = True

    def __init__(self, capture: cv2.VideoCapture, description: str, clock: Callable[[], float] = time.monotonic) -> None:
        self._capture = capture
        self._description = description
        self._clock = clock
        self._t0: float | None = None
        fps = float(capture.get(cv2.CAP_PROP_FPS) or 0.0)
        self.fps = fps if fps > 0 else None

    def read(self) -> RawFrame | None:
        ok, image = self._capture.read()
        if not ok or image is None:
            return None
        now = self._clock()
        if self._t0 is None:
            self._t0 = now
        return RawFrame(t=now - self._t0, image=image)

    def close(self) -> None:
        self._capture.release()


def is_live_uri(uri: str) -> bool:
    return uri.isdigit() or uri.startswith("/dev/video") or uri.lower().startswith(NETWORK_SCHEMES)


def open_source(uri: str, image_fps: float | None = None, open_timeout_s: float = 10.0) -> FrameReader:
    """Open ``uri``; raises SourceError with what to do when it cannot be used."""
    lowered = uri.lower()
    if lowered.startswith(NETWORK_SCHEMES):
        capture = cv2.VideoCapture(
            uri,
            cv2.CAP_FFMPEG,
            [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(open_timeout_s * 1000), cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(open_timeout_s * 1000)],
        )
        if not capture.isOpened():
            raise SourceError(f"cannot open stream {redact(uri)}: check the URL, credentials and that the server is up")
        return LiveCaptureReader(capture, redact(uri))
    if uri.isdigit() or uri.startswith("/dev/video"):
        index_or_path: int | str = int(uri) if uri.isdigit() else uri
        if isinstance(index_or_path, str) and not Path(index_or_path).exists():
            raise SourceError(f"camera device {uri} does not exist (is the camera plugged in? see `ls /dev/video*`)")
        capture = cv2.VideoCapture(index_or_path, cv2.CAP_V4L2)
        if not capture.isOpened():
            raise SourceError(f"cannot open camera {uri}: no such device, or it is busy or not permitted")
        return LiveCaptureReader(capture, f"camera {uri}")
    path = Path(uri)
    if path.is_dir():
        return ImageFolderReader(path, image_fps or DEFAULT_IMAGE_FPS)
    if path.is_file():
        if path.suffix.lower() not in VIDEO_SUFFIXES:
            raise SourceError(f"{uri}: not a video file ({', '.join(VIDEO_SUFFIXES)}) nor a folder of images")
        return VideoFileReader(path)
    raise SourceError(
        f"source {uri!r} not found: give a video file, an image folder, a camera index or /dev/videoN, "
        "or an rtsp:// or http(s):// URL"
    )


def iter_frames(reader: FrameReader) -> Iterator[RawFrame]:
    while (frame := reader.read()) is not None:
        yield frame
