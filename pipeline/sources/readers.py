"""Opening the sources a user points the pipeline at, as timestamped frame readers.

What a URI is (file, folder, camera, network) is decided in :mod:`pipeline.sources.uri`.

Time is the source's own:

* video files are stamped with the container's presentation times, counted
  from the first frame (variable-frame-rate files stay right);
* image folders at ``i / fps`` (``fps`` per source, default 10);
* live sources on the monotonic clock, from an origin the caller keeps
  across reconnects, so a stream's time never goes backwards: RTSP streams
  by their own timestamps anchored to arrival (a buffered burst shows as
  old: :mod:`pipeline.sources.live_time`), cameras and HTTP by arrival.

A reader never invents a frame. A file's damaged frames are skipped and
counted (``decode_errors``) while later frames still decode; a file that
cannot be read further ends (``ended_early`` says it stopped short of the
frame count its container announced). A corrupt image in a folder is skipped
and counted the same way. ``read`` takes a ``want(t)`` predicate: frames it
rejects are demuxed but not converted to pixels (``image`` is None), so
sampling costs no colour conversion.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path

import cv2

from pipeline.sources.frames import FrameReader, RawFrame, SourceOpenError, want_all
from pipeline.sources.uri import IMAGE_SUFFIXES, VIDEO_SUFFIXES, SourceKind, SourceUri, classify, redact

DEFAULT_IMAGE_FPS = 10.0
# Consecutive failed reads before a file with no usable frame count is taken as ended.
MAX_CONSECUTIVE_READ_FAILURES = 64


class VideoFileReader:
    """A recorded video, stamped with its presentation times; damaged frames skipped and counted."""

    is_live = False

    def __init__(self, path: Path, max_consecutive_failures: int = MAX_CONSECUTIVE_READ_FAILURES,
                 decoder_threads: int = 0) -> None:
        self._path = path
        self._capture = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG, [cv2.CAP_PROP_N_THREADS, decoder_threads])
        if not self._capture.isOpened():
            self._capture.release()
            raise SourceOpenError(f"{path}: OpenCV cannot open it: {_what_the_file_looks_like(path)}", True)
        fps = float(self._capture.get(cv2.CAP_PROP_FPS))
        if not (fps > 0 and math.isfinite(fps)):
            self._capture.release()
            raise SourceOpenError(f"{path}: the container reports no frame rate, so frames cannot be timestamped", True)
        self.fps: float | None = fps
        self.frame_count = max(0, int(self._capture.get(cv2.CAP_PROP_FRAME_COUNT)))
        self.width = int(self._capture.get(cv2.CAP_PROP_FRAME_WIDTH))
        self.height = int(self._capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
        self._max_failures = max_consecutive_failures
        self._first_pts: float | None = None
        self._last_t = 0.0
        self.frames_read = 0
        self.decode_errors = 0
        self.ended_early = False
        self.non_monotonic = 0

    def _timestamp(self) -> float:
        pts = self._capture.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
        if not math.isfinite(pts):
            pts = self.frames_read / self.fps
        if self._first_pts is None:
            self._first_pts = pts
        t = pts - self._first_pts
        if t < self._last_t:
            # A broken container can step back; stream time must not.
            self.non_monotonic += 1
            t = self._last_t
        self._last_t = t
        return t

    def read(self, want: Callable[[float], bool] = want_all) -> RawFrame | None:
        failures = 0
        while True:
            if not self._capture.grab():
                failures += 1
                if self._gives_up(failures):
                    self._note_end(failures)
                    return None
                continue
            # Failed reads followed by a good one were damaged frames, not the end.
            self.decode_errors += failures
            failures = 0
            t = self._timestamp()
            self.frames_read += 1
            if not want(t):
                return RawFrame(t, None)
            ok, image = self._capture.retrieve()
            if ok and image is not None:
                return RawFrame(t, image)
            self.frames_read -= 1
            self.decode_errors += 1

    def _gives_up(self, failures: int) -> bool:
        position = self.frames_read + self.decode_errors
        if self.frame_count and position + failures > self.frame_count:
            return True  # past the announced end: this is the end
        # Before the announced end, keep trying as long as frames may remain.
        limit = max(self._max_failures, self.frame_count - position) if self.frame_count else self._max_failures
        return failures > limit

    def _note_end(self, failures: int) -> None:
        position = self.frames_read + self.decode_errors
        # Containers round their frame count; one frame short is not a truncation.
        self.ended_early = bool(self.frame_count) and position < self.frame_count - 1

    def close(self) -> None:
        self._capture.release()


def _what_the_file_looks_like(path: Path) -> str:
    try:
        head = path.open("rb").read(512)
    except OSError as exc:
        return f"it cannot be read ({exc.strerror})"
    if head and all(32 <= b < 127 or b in (9, 10, 13) for b in head):
        return "it is a text file, not a video"
    if path.suffix.lower() in (".mp4", ".m4v", ".mov") and b"ftyp" not in head[:64]:
        return "it is not an MP4 container (no 'ftyp' box): damaged or misnamed"
    return "not a video, damaged beyond its header, or a codec this build lacks (a truncated MP4 whose index is at the end cannot be opened)"


class ImageFolderReader:
    """A folder of images in name order at ``fps``; an image that cannot be decoded is skipped and counted."""

    is_live = False
    ended_early = False

    def __init__(self, folder: Path, fps: float = DEFAULT_IMAGE_FPS) -> None:
        try:
            self._paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        except OSError as exc:
            raise SourceOpenError(f"image folder {folder} cannot be listed: {exc.strerror}", True) from exc
        if not self._paths:
            raise SourceOpenError(f"image folder {folder} holds no images ({', '.join(IMAGE_SUFFIXES)})", True)
        self.fps: float | None = fps
        self._index = 0
        self.decode_errors = 0
        self.last_bad_image: Path | None = None

    def read(self, want: Callable[[float], bool] = want_all) -> RawFrame | None:
        while self._index < len(self._paths):
            path = self._paths[self._index]
            t = self._index / self.fps
            self._index += 1
            if not want(t):
                return RawFrame(t, None)
            image = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if image is not None:
                return RawFrame(t, image)
            self.decode_errors += 1
            self.last_bad_image = path
        return None

    def close(self) -> None:
        self._paths = []


class LiveCaptureReader:
    """A camera or network stream, stamped by arrival on the monotonic clock from ``origin``."""

    is_live = True
    decode_errors = 0
    ended_early = False

    def __init__(self, capture: cv2.VideoCapture, origin: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._capture = capture
        self._clock = clock
        self._origin = origin
        fps = float(capture.get(cv2.CAP_PROP_FPS) or 0.0)
        self.fps = fps if 0 < fps < 1000 else None

    def read(self, want: Callable[[float], bool] = want_all) -> RawFrame | None:
        if not self._capture.grab():
            return None
        t = self._clock() - self._origin
        if not want(t):
            return RawFrame(t, None)
        ok, image = self._capture.retrieve()
        if not ok or image is None:
            return None
        return RawFrame(t, image)

    def close(self) -> None:
        self._capture.release()


def is_live_uri(uri: str) -> bool:
    return classify(uri).live


def open_source(
    source: SourceUri | str,
    image_fps: float | None = None,
    open_timeout_s: float = 10.0,
    read_timeout_s: float = 10.0,
    origin: float | None = None,
    clock: Callable[[], float] = time.monotonic,
    decoder_threads: int = 0,
    rtsp_transport: str = "auto",
) -> FrameReader:
    """Open a source; raises SourceOpenError (saying whether retrying can help) when it cannot be used.
    RTSP goes through PyAV (:mod:`pipeline.sources.rtsp`: a transport per stream); the rest through OpenCV."""
    if isinstance(source, str):
        source = classify(source)
    uri = source.raw
    if source.kind is SourceKind.NETWORK and uri.lower().startswith(("rtsp://", "rtsps://")):
        from pipeline.sources.rtsp import open_rtsp

        return open_rtsp(uri, rtsp_transport, open_timeout_s, read_timeout_s, origin, clock, decoder_threads)
    if source.kind is SourceKind.NETWORK:
        capture = cv2.VideoCapture(
            uri, cv2.CAP_FFMPEG,
            [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(open_timeout_s * 1000),
             cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(read_timeout_s * 1000), cv2.CAP_PROP_N_THREADS, decoder_threads],
        )
        if not capture.isOpened():
            capture.release()
            from pipeline.sources.probe import explain_open_failure

            failure = explain_open_failure(uri, min(open_timeout_s, 5.0))
            raise SourceOpenError(failure.message, failure.permanent, failure.needs_person)
        return LiveCaptureReader(capture, clock() if origin is None else origin, clock)
    if source.kind is SourceKind.CAMERA:
        index_or_path: int | str = int(uri) if uri.isdigit() else uri
        if isinstance(index_or_path, str) and not Path(index_or_path).exists():
            # A USB camera may be plugged in later: not permanent.
            raise SourceOpenError(f"camera device {uri} does not exist (plugged in? see `ls /dev/video*`)", False)
        capture = cv2.VideoCapture(index_or_path, cv2.CAP_V4L2)
        if not capture.isOpened():
            capture.release()
            raise SourceOpenError(f"cannot open camera {uri}: no such device, or it is busy or not permitted", False)
        return LiveCaptureReader(capture, clock() if origin is None else origin, clock)
    path = Path(uri)
    if source.kind is SourceKind.FOLDER:
        return ImageFolderReader(path, image_fps or DEFAULT_IMAGE_FPS)
    if not path.exists():
        raise SourceOpenError(
            f"source {redact(uri)!r} not found: give a video file, an image folder, a camera index or /dev/videoN, "
            "or an rtsp:// or http(s):// URL", True,
        )
    if not path.is_file():
        raise SourceOpenError(f"{uri}: not a regular file nor a folder", True)
    if path.suffix.lower() not in VIDEO_SUFFIXES:
        raise SourceOpenError(f"{uri}: not a video file ({', '.join(VIDEO_SUFFIXES)}) nor a folder of images", True)
    if path.stat().st_size == 0:
        raise SourceOpenError(f"{uri}: the file is empty (0 bytes)", True)
    return VideoFileReader(path, decoder_threads=decoder_threads)
