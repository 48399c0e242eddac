"""HTTP from a test: one JSON request, a webhook receiver that answers from a script, and a fake PipelineView
for the web servers' own tests."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from pipeline.config import SourceConfig


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


HANG = "hang"  # in a Receiver's script: take the request, then answer nothing for ``hang_s``


class Receiver:
    """An HTTP server that answers from a script of statuses (then 200), records what it accepted,
    and can be stopped and started again on the same port.

    A script entry ``HANG`` takes the request and answers only after ``hang_s`` (the sender has
    timed out by then). Like a receiver that honours idempotency keys, it keeps the first copy of
    each event id it was sent, whatever it answered: ``kept_ids``, in the order first seen."""

    def __init__(self, statuses: list | None = None, hang_s: float = 3.0) -> None:
        self.statuses = list(statuses or [])
        self.hang_s = hang_s
        self.accepted: list[dict] = []
        self.requests = 0
        self.headers: list[dict] = []
        self.kept_ids: list[str] = []
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
                event = json.loads(body)
                if event.get("id") and event["id"] not in receiver.kept_ids:
                    receiver.kept_ids.append(event["id"])
                if status == HANG:
                    time.sleep(receiver.hang_s)
                    status = 200
                elif status == 200:
                    receiver.accepted.append(event)
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


class FakeView:
    """A PipelineView with a script: what it answers, what it refuses, what it was asked."""

    def __init__(self) -> None:
        self.rows = [{"name": "dock", "state": "live", "processed": 12, "dropped": {"sampling": 30}, "events": 2,
                      "reconnects": 0}]
        self.healthy = True
        self.ready = True
        self.refuse: Exception | None = None
        self.added: list[SourceConfig] = []
        self.removed: list[str] = []

    def streams(self) -> list[dict]:
        return [dict(r) for r in self.rows]

    def stages(self) -> list[dict]:
        return [{"name": "temporal", "pid": 42, "ready": True, "restarts": 0, "given_up": False}]

    def health(self) -> tuple[bool, dict]:
        return self.healthy, {"status": "ok" if self.healthy else "stalled"}

    def readiness(self) -> tuple[bool, dict]:
        return self.ready, {"status": "ready" if self.ready else "starting"}

    def add_stream(self, source: SourceConfig) -> dict:
        if self.refuse is not None:
            raise self.refuse
        self.added.append(source)
        return {"name": source.name or "x", "state": "connecting"}

    def remove_stream(self, name: str) -> dict:
        if self.refuse is not None:
            raise self.refuse
        self.removed.append(name)
        return {"name": name, "state": "live"}
