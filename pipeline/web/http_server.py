"""One ASGI app served by uvicorn on a thread of its own, with its own event loop.

The control API and the live page each run in one of these inside the
supervisor process. What it guards against, and why each guard is here:

* Connections cost a socket and a small object on the event loop, not a
  thread: thousands of idle ones do not slow the answers to the others.
* Every connection must send a complete request head within
  ``REQUEST_HEAD_S`` of opening, or of its previous answer, or it is closed
  (uvicorn's keep-alive timeout starts only after a first answer, and any
  byte received resets it, so a client trickling a header would be kept
  forever).
* Connections beyond ``max_connections`` (a quarter of the process's
  file-descriptor limit, at most ``MAX_CONNECTIONS``) are closed as soon as
  they are accepted, so a flood cannot take the descriptors the stages' sockets
  and the metrics files need. uvicorn's own ``limit_concurrency`` is not used:
  it counts idle connections too, and would answer 503 to ``/healthz`` while
  a flood of idle connections is open.
* HTTP is parsed by h11, which refuses what it cannot frame for certain
  (``Content-Length: abc``, two different lengths) with a 400 and no traceback.

The socket is bound here, on the caller's thread, so a port in use raises
``OSError`` at once (``pipeline.web.servers`` names the option) and a port
of 0 is resolved before the caller reports the URL. Signals are left to the
supervisor: uvicorn's handlers are never installed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
import socket
import threading
import time
from collections.abc import Generator

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from pipeline.errors import ActionPipeError

logger = logging.getLogger(__name__)

REQUEST_HEAD_S = 5.0  # a connection that has not sent a whole request head by then is closed
KEEP_ALIVE_S = 5  # uvicorn's keep-alive after an answer (the head deadline above bounds it too)
MAX_CONNECTIONS = 4096
BACKLOG = 2048
START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 3.0  # answers in flight get this long to finish when the server stops

# uvicorn's INFO lines speak of "server process" and "CTRL+C", which are its own command line's business;
# its warnings (a request it could not parse, say) still reach the log.
logging.getLogger("uvicorn.error").setLevel(logging.WARNING)


class WebServerError(ActionPipeError, RuntimeError):
    """An HTTP server that did not start; the message names it."""


def connection_limit(limit: int = MAX_CONNECTIONS) -> int:
    """Open connections one server accepts: a quarter of the descriptors this process may open (two
    servers share the process with the stages' sockets and files), at most ``limit``."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return limit
    return max(16, min(limit, soft // 4))


class _GuardedH11(H11Protocol):
    """uvicorn's h11 protocol with a deadline for each request head and a cap on open connections."""

    max_connections = MAX_CONNECTIONS
    head_deadline_s = REQUEST_HEAD_S

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_timer: asyncio.TimerHandle | None = None
        if len(self.connections) > self.max_connections:
            # Closed before a byte is read: nothing to answer, and logging each one would flood the log.
            logger.debug("connection refused: %d open, at most %d", len(self.connections), self.max_connections)
            transport.close()
            return
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm_head_timer()

    def _arm_head_timer(self) -> None:
        self._cancel_head_timer()
        self._head_timer = self.loop.call_later(self.head_deadline_s, self._head_overdue)

    def _cancel_head_timer(self) -> None:
        timer = getattr(self, "_head_timer", None)
        if timer is not None:
            timer.cancel()
            self._head_timer = None

    def _head_overdue(self) -> None:
        self._head_timer = None
        # A request being answered is not idle; its answer arms the next deadline.
        if (self.cycle is None or self.cycle.response_complete) and not self.transport.is_closing():
            self.transport.close()


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        # The supervisor owns SIGINT and SIGTERM and stops this server itself.
        yield


def _bind(host: str, port: int) -> socket.socket:
    family, kind, proto, _name, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a restart need not wait out TIME_WAIT
        sock.bind(address)
        sock.listen(BACKLOG)
    except OSError:
        sock.close()
        raise
    return sock


class HttpServer:
    """``app`` served on ``host:port`` until :meth:`shutdown`. ``server_port`` is the port really bound."""

    def __init__(self, app, host: str, port: int, name: str, max_connections: int | None = None) -> None:
        self.name = name
        self._socket = _bind(host, port)
        self.server_port: int = self._socket.getsockname()[1]
        protocol = type("GuardedH11", (_GuardedH11,), {"max_connections": max_connections or connection_limit()})
        config = uvicorn.Config(
            app, http=protocol, loop="asyncio", lifespan="off", log_config=None, access_log=False,
            proxy_headers=False, server_header=False, timeout_keep_alive=KEEP_ALIVE_S,
            timeout_graceful_shutdown=int(STOP_TIMEOUT_S),
        )
        self._server = _Server(config)
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self._socket.close()
                why = f"uvicorn exited with {self._failure.code}" if self._failure else "its thread ended or did not answer"
                raise WebServerError(f"the {name} server on {host}:{self.server_port} did not start: {why} (see the log)")
            time.sleep(0.01)

    def _serve(self) -> None:
        try:
            self._server.run(sockets=[self._socket])
        except SystemExit as exc:  # how uvicorn ends a failed start-up; __init__ reports it (anything else is a bug)
            self._failure = exc
            logger.error("the %s server stopped: uvicorn exited with %s", self.name, exc.code)

    def shutdown(self) -> None:
        """Stop accepting, let answers in flight finish (``STOP_TIMEOUT_S`` at most), close every connection."""
        self._server.should_exit = True
        self._thread.join(STOP_TIMEOUT_S + 2.0)
        if self._thread.is_alive():
            self._server.force_exit = True
            self._thread.join(1.0)
            if self._thread.is_alive():
                logger.warning("the %s server did not stop in time; its thread is left to end on its own",
                               self.name)

    def server_close(self) -> None:
        self._socket.close()
