"""Helpers for tests that run the real multi-process pipeline."""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from pipeline.config import validate_config
from pipeline.supervision.report import RunSummary
from pipeline.supervision.supervisor import Supervisor
from tests.conftest import REPO_ROOT
from tools.testbed.ports import free_port
from tools.testbed.scrape import scrape  # noqa: F401 (the system tests' one Prometheus scrape)

MODEL = REPO_ROOT / "models" / "synthactions_gru.safetensors"


def config(**sections):
    """A pipeline config for tests: the demo model, nothing on fixed ports, no stdout events."""
    data = {"model": str(MODEL), "metrics": {"port": 0}, "control": {"port": 0}, "outputs": {"stdout": False}}
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return validate_config(data)


def stream_row(supervisor: Supervisor, name: str) -> dict:
    rows = [r for r in supervisor.view.streams() if r["name"] == name]
    return rows[0] if rows else {}


def run_until(supervisor: Supervisor, done: Callable[[Supervisor], bool], timeout_s: float = 90.0,
              during: Callable[[Supervisor], None] | None = None) -> RunSummary:
    """Run the pipeline; ask it to stop (as SIGINT would) once ``done`` holds, or after ``timeout_s``.

    ``during`` is polled on the side while the run goes on (to kill a stage, restart a server, ...).
    """
    failures: list[BaseException] = []

    def watch() -> None:
        deadline = time.monotonic() + timeout_s
        try:
            while time.monotonic() < deadline:
                if supervisor.started and done(supervisor):
                    break
                if during is not None and supervisor.started:
                    during(supervisor)
                time.sleep(0.1)
        except BaseException as exc:  # surfaced by the test after the run
            failures.append(exc)
        finally:
            supervisor.request_stop()

    threading.Thread(target=watch, daemon=True).start()
    summary = supervisor.run()
    if failures:
        raise failures[0]
    return summary


def http(method: str, url: str, body: dict | None = None, token: str | None = None) -> tuple[int, dict]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=15) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


class MosquittoBroker:
    """A real Mosquitto broker (Debian's ``mosquitto``, installed by ``make system-deps``) on a loopback
    port, with persistence on, that can be stopped (SIGTERM: it saves its sessions) and started again."""

    def __init__(self, folder, port: int | None = None) -> None:
        import getpass
        import shutil

        if shutil.which("mosquitto") is None and not Path("/usr/sbin/mosquitto").exists():
            raise RuntimeError("mosquitto is not installed: make system-deps installs it")
        self.binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.config = self.folder / "mosquitto.conf"
        self.config.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence true\n"
            f"persistence_location {self.folder}/\nuser {getpass.getuser()}\n"
        )
        self.log = self.folder / "mosquitto.log"
        self.process = None
        self.start()

    def start(self) -> None:
        import subprocess

        self.process = subprocess.Popen([self.binary, "-c", str(self.config)], stdout=subprocess.DEVNULL,
                                        stderr=self.log.open("a"))
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"mosquitto did not start: {self.log.read_text()[-2000:]}")
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        self.process = None


class MqttRecorder:
    """A subscriber with a persistent session (clean session off, QoS 1): what a consumer that must not
    miss events across a broker restart runs. Records (topic, payload, retained) in arrival order.

    A broker that stops before the recorder acknowledged a message sends it again after its restart,
    flagged DUP (MQTT's at-least-once on that leg); those redeliveries of a message already
    recorded are counted in ``redelivered``, not recorded again. A publisher that published twice
    would show here as two messages without the flag."""

    def __init__(self, port: int, topics: str = "#", client_id: str = "test-recorder", clean: bool = False) -> None:
        import paho.mqtt.client as mqtt

        self.messages: list[tuple[str, str, bool]] = []
        self.redelivered = 0
        self._subscribed = threading.Event()
        self._client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311,
                                   clean_session=clean)
        self._client.reconnect_delay_set(min_delay=1, max_delay=2)

        def on_connect(client, userdata, flags, reason_code, properties):
            client.subscribe(topics, qos=1)

        def on_subscribe(client, userdata, mid, reason_codes, properties):
            self._subscribed.set()

        def on_message(client, userdata, message):
            record = (message.topic, message.payload.decode(), bool(message.retain))
            if message.dup and record in self.messages:
                self.redelivered += 1
                return
            self.messages.append(record)

        self._client.on_connect = on_connect
        self._client.on_subscribe = on_subscribe
        self._client.on_message = on_message
        self._client.connect("127.0.0.1", port, keepalive=5)
        self._client.loop_start()
        if not self._subscribed.wait(10):
            raise RuntimeError("the test subscriber could not subscribe")

    def payloads(self, topic: str) -> list[str]:
        return [payload for t, payload, _ in self.messages if t == topic]

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


def wait_until(predicate: Callable[[], bool], timeout_s: float = 5.0, poll_s: float = 0.01) -> None:
    """Polls ``predicate`` until it holds; fails the test after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(poll_s)


def synth_videos(root: Path, count: int, seed: int, duration_range: tuple[float, float]) -> list[Path]:
    """``count`` small SynthActions videos (320x240, 15 fps) rendered under ``root``, sorted."""
    from tools.synthactions.dataset import write_dataset

    write_dataset(root, count=count, seed=seed, sizes=(320, 240), fps=15.0, duration_range=duration_range,
                  progress=False)
    return sorted((Path(root) / "videos").glob("*.mp4"))


class Receiver:
    """An HTTP server that answers from a script of statuses (then 200), records what it accepted,
    and can be stopped and started again on the same port."""

    def __init__(self, statuses: list[int] | None = None) -> None:
        self.statuses = list(statuses or [])
        self.accepted: list[dict] = []
        self.requests = 0
        self.headers: list[dict] = []
        self.server: ThreadingHTTPServer | None = None
        self.port = 0
        self.start()

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests += 1
                receiver.headers.append(dict(self.headers))
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                if status == 200:
                    receiver.accepted.append(json.loads(body))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.allow_reuse_address = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"
