"""A real HTTP MJPEG server (multipart/x-mixed-replace), as IP cameras serve, for live-source tests."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import cv2

from tools.testbed.frames import first_frames

BOUNDARY = "frameboundary"


def _jpeg_frames(video: Path, limit: int, sizes: list[tuple[int, int]] | None) -> list[bytes]:
    frames = []
    for image in first_frames(video, limit):
        if sizes:  # the camera changes resolution every len(frames) // len(sizes) frames
            image = cv2.resize(image, sizes[len(frames) * len(sizes) // limit])
        frames.append(cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 85])[1].tobytes())
    if not frames:
        raise RuntimeError(f"no frames decoded from {video}")
    return frames


class MjpegServer:
    """Serves ``video``'s frames at ``fps`` on http://127.0.0.1:PORT/stream.mjpg (any other path: 404).

    Each connection gets the frames once and is closed, or forever with ``loop``.
    ``sizes`` makes the stream change resolution part-way, as a reconfigured camera does.
    """

    def __init__(self, video: Path, fps: float = 25.0, limit: int = 250, loop: bool = False,
                 sizes: list[tuple[int, int]] | None = None) -> None:
        frames = _jpeg_frames(video, limit, sizes)
        period = 1.0 / fps
        stopping = self._stopping = threading.Event()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                if self.path.split("?")[0] != "/stream.mjpg":
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
                self.end_headers()
                start = time.monotonic()
                i = 0
                while not stopping.is_set() and (loop or i < len(frames)):
                    jpeg = frames[i % len(frames)]
                    delay = start + i * period - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                    try:
                        self.wfile.write(
                            f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n".encode()
                            + jpeg + b"\r\n"
                        )
                    except (BrokenPipeError, ConnectionResetError):
                        return
                    i += 1

            def log_message(self, *args) -> None:
                return None

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_port
        self.url = f"http://127.0.0.1:{self.port}/stream.mjpg"
        self.frames = len(frames)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> "MjpegServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
