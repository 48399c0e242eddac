"""Simulated cameras on loopback, real servers all: GStreamer's RTSP server (a file re-streamed,
or an endless live H.264 camera), an HTTP MJPEG server, and misbehaving ones (a server that
accepts and never sends, a closed port). The live-source tests and ``tools.soak`` use them."""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from pathlib import Path

import cv2

from tools.testbed.frames import first_frames
from tools.testbed.ports import free_port

SERVERS = Path(__file__).resolve().parent


def write_jpeg_frames(video: Path, folder: Path, count: int, size: tuple[int, int] = (640, 360)) -> Path:
    """``count`` frames of ``video`` as 00000.jpg, ... (what the endless RTSP camera loops over)."""
    folder.mkdir(parents=True, exist_ok=True)
    written = 0
    for image in first_frames(video, count):
        cv2.imwrite(str(folder / f"{written:05d}.jpg"), cv2.resize(image, size))
        written += 1
    if not written:
        raise RuntimeError(f"no frames decoded from {video}")
    return folder


class RtspServer:
    """GStreamer's RTSP server in a child process (system Python), stoppable and restartable on its port."""

    def __init__(self, port: int, *, file: Path | None = None, frames: Path | None = None, fps: int = 25) -> None:
        self.port = port
        self._args = ["--file", str(file)] if file else ["--frames", str(frames), "--fps", str(fps)]
        self.url = f"rtsp://127.0.0.1:{port}/{'clip' if file else 'cam'}"
        self._process: subprocess.Popen | None = None

    def start(self) -> "RtspServer":
        deadline = time.monotonic() + 10
        while True:  # the port may still be held for a moment after a stop
            self._process = subprocess.Popen(
                ["/usr/bin/python3", str(SERVERS / "rtsp_server.py"), str(self.port), *self._args],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            )
            line = self._process.stdout.readline().strip()
            if line == "ready":
                return self
            error = self._process.stderr.read()[-2000:]
            self._process.wait()
            if time.monotonic() > deadline:
                raise RuntimeError(f"RTSP server did not start (run `make system-deps`): {error}")
            time.sleep(0.2)

    def stop(self) -> None:
        if self._process is not None:
            self._process.kill()
            self._process.wait(timeout=10)
            self._process = None

    def __enter__(self) -> "RtspServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class SilentServer:
    """Accepts TCP connections and never sends a byte: a camera that hangs."""

    def __init__(self) -> None:
        self._socket = socket.socket()
        self._socket.bind(("127.0.0.1", 0))
        self._socket.listen(16)
        self.port = self._socket.getsockname()[1]
        self._held: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def _accept(self) -> None:
        self._socket.settimeout(0.2)
        while not self._stop.is_set():
            try:
                connection, _ = self._socket.accept()
            except OSError:
                continue
            self._held.append(connection)

    def __enter__(self) -> "SilentServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(2)
        for connection in self._held:
            connection.close()
        self._socket.close()


def closed_port() -> int:
    """A port nothing listens on."""
    return free_port()
