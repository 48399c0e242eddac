"""RTSP servers this project did not write, from Debian's packages (``make system-deps``), on loopback:

* :class:`PublishPlayRelay`: ``rtsp-server-perl``, a publish/play relay of
  the kind go2rtc and mediamtx are. A publisher (``ffmpeg -f rtsp``, standing
  in for a camera) pushes to one port, viewers read from another. Like many
  relays it takes and serves RTP over UDP only (a TCP SETUP gets ``400 Bad Request``)
  and answers ``404`` while nobody publishes. The publisher can be stopped
  and started again, as a camera behind a relay drops and comes back.
* :class:`VlcRtspServer`: VLC (``cvlc``) streaming a file over RTSP, which
  answers a TCP SETUP with ``461 Unsupported Transport``. VLC refuses to run
  as root, so it runs as ``nobody`` when this process is root.

* :class:`MotionMjpegServer`: the ``motion`` CCTV daemon reading an RTSP
  camera and serving it again as MJPEG over HTTP (``stream_port``), the way
  many home setups expose a camera.

All are real servers, started as child processes and killed on exit.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from tools.testbed.ports import free_port


def _wait_for_port(port: int, process: subprocess.Popen, what: str, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not start (run `make system-deps`)") from None
            time.sleep(0.05)


def _require(program: str) -> str:
    path = shutil.which(program)
    if path is None:
        raise RuntimeError(f"{program} is not installed: run `make system-deps`")
    return path


class PublishPlayRelay:
    """rtsp-server-perl with an ffmpeg publisher looping ``video`` (copied, not re-encoded) into it."""

    def __init__(self, video: Path, path: str = "cam1", read_rate: float = 1.0) -> None:
        self.video = Path(video)
        self.read_rate = read_rate  # below 1: the camera falls behind real time, as over a congested link
        self.play_port = free_port()
        self.publish_port = free_port()
        self.url = f"rtsp://127.0.0.1:{self.play_port}/{path}"
        self._publish_url = f"rtsp://127.0.0.1:{self.publish_port}/{path}"
        self._relay: subprocess.Popen | None = None
        self._publisher: subprocess.Popen | None = None

    def start(self, publish: bool = True) -> "PublishPlayRelay":
        self._relay = subprocess.Popen(
            [_require("rtsp-server-perl"), "--clientport", str(self.play_port), "--serverport", str(self.publish_port),
             "--client_listen_address", "127.0.0.1", "--source_listen_address", "127.0.0.1",
             "--rtp_start_port", str(20000 + free_port() % 20000)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        _wait_for_port(self.play_port, self._relay, "rtsp-server-perl")
        _wait_for_port(self.publish_port, self._relay, "rtsp-server-perl")
        if publish:
            self.publish()
        return self

    def publish(self) -> None:
        """The camera behind the relay (re)starts publishing; returns once the relay serves it."""
        self._publisher = subprocess.Popen(
            [_require("ffmpeg"), "-loglevel", "error", "-readrate", f"{self.read_rate:g}", "-stream_loop", "-1",
             "-i", str(self.video),
             "-c", "copy", "-f", "rtsp", self._publish_url],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while not self.serving():
            if self._publisher.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the ffmpeg publisher did not reach the relay")
            time.sleep(0.1)

    def serving(self) -> bool:
        """The relay has a publisher for the path (it answers DESCRIBE with 200)."""
        request = f"DESCRIBE {self.url} RTSP/1.0\r\nCSeq: 1\r\nAccept: application/sdp\r\n\r\n".encode()
        try:
            with socket.create_connection(("127.0.0.1", self.play_port), timeout=1.0) as connection:
                connection.sendall(request)
                return connection.recv(64).startswith(b"RTSP/1.0 200")
        except OSError:
            return False

    def unpublish(self) -> None:
        """The camera behind the relay goes away (the relay stays up and answers 404). It hangs up as a
        camera that loses its uplink does not: the relay keeps a publisher killed outright as a session
        that never sends again, and serves nothing on that path until it is restarted."""
        if self._publisher is not None:
            self._publisher.send_signal(signal.SIGINT)  # ffmpeg sends TEARDOWN and exits
            try:
                self._publisher.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._publisher.kill()
                self._publisher.wait(timeout=10)
            self._publisher = None

    def stop(self) -> None:
        self.unpublish()
        if self._relay is not None:
            self._relay.kill()
            self._relay.wait(timeout=10)
            self._relay = None

    def __enter__(self) -> "PublishPlayRelay":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class VlcRtspServer:
    """VLC streaming ``video`` in a loop at rtsp://127.0.0.1:PORT/cam (RTP over UDP)."""

    def __init__(self, video: Path) -> None:
        self.port = free_port()
        self.url = f"rtsp://127.0.0.1:{self.port}/cam"
        self._video = Path(video)
        self._folder: tempfile.TemporaryDirectory | None = None
        self._process: subprocess.Popen | None = None

    def start(self) -> "VlcRtspServer":
        # VLC runs as nobody when we are root: the video must be readable by anyone, its home writable.
        self._folder = tempfile.TemporaryDirectory(prefix="actionpipe-vlc-")
        folder = Path(self._folder.name)
        os.chmod(folder, 0o777)
        video = folder / self._video.name
        shutil.copyfile(self._video, video)
        os.chmod(video, 0o644)
        command = [_require("cvlc"), "--intf", "dummy", "--no-audio", "--loop", str(video),
                   "--sout", f"#rtp{{sdp=rtsp://127.0.0.1:{self.port}/cam}}"]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "nobody", "--", *command]
        env = {**os.environ, "HOME": str(folder)}
        # Its own session: runuser does not pass a SIGKILL on, so the whole group is killed.
        self._process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
                                         start_new_session=True)
        _wait_for_port(self.port, self._process, "VLC")
        return self

    def stop(self) -> None:
        if self._process is not None:
            try:
                os.killpg(self._process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass  # it had already exited
            self._process.wait(timeout=10)
            self._process = None
        if self._folder is not None:
            self._folder.cleanup()
            self._folder = None

    def __enter__(self) -> "VlcRtspServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class MotionMjpegServer:
    """``motion`` reading the RTSP camera at ``camera_url`` and serving it as MJPEG at http://127.0.0.1:PORT/.
    It can be stopped and started again on the same port, as a CCTV box that reboots."""

    def __init__(self, camera_url: str, size: tuple[int, int] = (640, 360), fps: int = 15) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self._camera_url = camera_url
        self._size = size
        self._fps = fps
        self._folder: tempfile.TemporaryDirectory | None = None
        self._process: subprocess.Popen | None = None

    def start(self) -> "MotionMjpegServer":
        if self._folder is None:
            self._folder = tempfile.TemporaryDirectory(prefix="actionpipe-motion-")
        folder = Path(self._folder.name)
        width, height = self._size
        (folder / "motion.conf").write_text(
            "daemon off\nsetup_mode off\nlog_level 4\n"
            f"target_dir {folder}\nnetcam_url {self._camera_url}\nnetcam_params rtsp_transport=tcp\n"
            f"width {width}\nheight {height}\nframerate {self._fps}\n"
            f"stream_port {self.port}\nstream_localhost on\nstream_maxrate {self._fps}\nstream_quality 70\n"
            "webcontrol_port 0\npicture_output off\nmovie_output off\n"
        )
        self._process = subprocess.Popen([_require("motion"), "-n", "-c", str(folder / "motion.conf")],
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_for_port(self.port, self._process, "motion", timeout_s=20.0)
        return self

    def stop(self, keep_folder: bool = False) -> None:
        if self._process is not None:
            self._process.kill()
            self._process.wait(timeout=10)
            self._process = None
        if not keep_folder and self._folder is not None:
            self._folder.cleanup()
            self._folder = None

    def restart(self) -> None:
        self.stop(keep_folder=True)
        self.start()

    def __enter__(self) -> "MotionMjpegServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
