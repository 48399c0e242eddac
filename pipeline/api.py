"""The pipeline from Python, for programs that embed it.

    from pipeline.api import ActionPipeline

    with ActionPipeline.init(["dock.mp4", "yard=rtsp://cam/stream1"], on_event=print) as pipeline:
        pipeline.add_stream("rtsp://cam/stream2", name="gate")
        for event in pipeline.events():        # or rely on on_event alone
            if event.kind == "start":
                print(event.stream, event.action, pipeline.stats()[event.stream]["processed"])

The stages run as processes, exactly as under ``run_pipeline.py``; this
object runs the supervisor on a thread of the calling process and receives
the events over a ZeroMQ socket of its own. ``on_event`` is called on that
receiving thread, in order; an exception in it is logged and counted, and
the pipeline goes on. ``events()`` yields the same events until the run has
ended and every event was yielded. Iterating is optional: when nobody does,
the newest ``event_buffer`` events are kept and older ones are counted in
``events_dropped``.
"""

from __future__ import annotations

import logging
import queue
import secrets
import shutil
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import zmq
from pydantic import ValidationError

from pipeline.config import PipelineConfig, SourceConfig, describe_validation_error, load_config, validate_config
from pipeline.errors import ActionPipeError, ConfigError
from pipeline.events import ActionEvent
from pipeline.supervision.report import RunSummary
from pipeline.supervision.run_folder import default_parent
from pipeline.supervision.supervisor import Supervisor

logger = logging.getLogger(__name__)

_END = object()


class PipelineNotRunningError(ActionPipeError, RuntimeError):
    """A call that needs a running pipeline came before start() or after the run ended."""


def _source(entry: str | Mapping[str, Any]) -> dict:
    if isinstance(entry, Mapping):
        return dict(entry)
    from pipeline.sources.uri import source_entry

    return source_entry(entry)


class ActionPipeline:
    def __init__(self, config: PipelineConfig, on_event: Callable[[ActionEvent], None] | None = None,
                 event_buffer: int = 10_000) -> None:
        if config.outputs.events_pub is not None:
            raise ValueError("outputs.events_pub is the Python API's own channel here; leave it unset")
        # The events socket's folder: named now (the config carries its endpoint), made by start() and
        # removed when the run ends however it ends, so neither an unstarted nor a failed pipeline leaves one.
        self._folder = default_parent(config.transport.ipc_dir) / f"actionpipe-api-{secrets.token_hex(6)}"
        self._endpoint = f"ipc://{self._folder}/events"
        self.config = config.model_copy(update={"outputs": config.outputs.model_copy(update={"events_pub": self._endpoint})})
        self._on_event = on_event
        self._queue: queue.Queue = queue.Queue(maxsize=event_buffer)
        self.events_dropped = 0
        self.callback_errors = 0
        self._supervisor = Supervisor(self.config, on_ready=lambda _url: self._ready.set())
        self._ready = threading.Event()
        self._finished = threading.Event()
        self._summary: RunSummary | None = None
        self._error: BaseException | None = None
        self._run_thread: threading.Thread | None = None
        self._receive_thread: threading.Thread | None = None

    @classmethod
    def init(cls, sources: Sequence[str | Mapping[str, Any]] = (), *, config: str | Path | Mapping | None = None,
             on_event: Callable[[ActionEvent], None] | None = None, event_buffer: int = 10_000,
             **sections: Any) -> "ActionPipeline":
        """A pipeline on ``sources`` (URIs as on the command line, ``NAME=URI``, or source dicts).

        ``config``: a YAML file or a dict with any keys of ``configs/example.yaml``; ``sections`` override
        its top-level keys (``engine={"backend": "auto"}``, ``replay={"realtime": False}``, ...). Unlike
        the command line, events are not printed, and the metrics and control ports are picked free.
        """
        if isinstance(config, (str, Path)):
            data = load_config(Path(config)).model_dump(exclude_unset=True, mode="json")
        else:
            data = dict(config or {})
        data.setdefault("outputs", {}).setdefault("stdout", False)
        data.setdefault("metrics", {}).setdefault("port", 0)
        data.setdefault("control", {}).setdefault("port", 0)
        if sources:
            data["sources"] = [*data.get("sources", []), *(_source(s) for s in sources)]
        for key, value in sections.items():
            if isinstance(value, Mapping) and isinstance(data.get(key), Mapping):
                data[key] = {**data[key], **value}
            else:
                data[key] = value
        return cls(validate_config(data, "ActionPipeline.init"), on_event=on_event, event_buffer=event_buffer)

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self, wait_ready_s: float | None = 120.0) -> "ActionPipeline":
        """Starts the stages; returns once every stage is up (or raises what stopped the start)."""
        if self._run_thread is not None:
            raise RuntimeError("this pipeline was started already; make a new one to run again")
        self._folder.parent.mkdir(parents=True, exist_ok=True)
        self._folder.mkdir(mode=0o700)
        context = zmq.Context.instance()
        try:
            subscriber = context.socket(zmq.SUB)
            subscriber.setsockopt(zmq.SUBSCRIBE, b"")
            subscriber.setsockopt(zmq.RCVHWM, 0)  # never drop on the socket: the bounded queue decides
            subscriber.connect(self._endpoint)  # before the temporal stage binds: no event is published unheard
        except zmq.ZMQError:
            self._remove_folder()
            raise
        self._receive_thread = threading.Thread(target=self._receive, args=(subscriber,), name="actionpipe-events",
                                                daemon=True)
        self._receive_thread.start()
        self._run_thread = threading.Thread(target=self._run, name="actionpipe-supervisor", daemon=True)
        self._run_thread.start()
        if wait_ready_s is not None:
            deadline = time.monotonic() + wait_ready_s
            while not (self._ready.is_set() or self._finished.is_set()):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the pipeline's stages did not come up within {wait_ready_s} s")
                self._ready.wait(0.05)
            if self._error is not None:
                raise self._error
        return self

    def _run(self) -> None:
        try:
            self._summary = self._supervisor.run()
        except BaseException as exc:  # handed to whoever waits: start(), join(), stop()
            self._error = exc
        finally:
            self._remove_folder()  # the stages are gone: nobody binds the events socket any more
            self._finished.set()

    def _remove_folder(self) -> None:
        try:
            shutil.rmtree(self._folder)
        except FileNotFoundError:
            pass  # a temp cleaner was first
        except OSError as exc:
            logger.warning("could not remove %s: %s", self._folder, exc)

    def _receive(self, subscriber: zmq.Socket) -> None:
        try:
            while True:
                if subscriber.poll(100):
                    self._take(subscriber.recv_multipart())
                elif self._finished.is_set():
                    # The stages are gone and their sockets flushed on close: take what is left, then end.
                    while subscriber.poll(200):
                        self._take(subscriber.recv_multipart())
                    break
        finally:
            subscriber.close(linger=0)
            self._put(_END)

    def _take(self, parts: list[bytes]) -> None:
        import json

        event = ActionEvent.from_json(json.loads(parts[-1]))
        if self._on_event is not None:
            try:
                self._on_event(event)
            except Exception:  # the caller's code: logged and counted, the pipeline goes on
                self.callback_errors += 1
                logger.exception("on_event raised for %s %s %s; the pipeline goes on", event.stream, event.action,
                                 event.kind)
        self._put(event)

    def _put(self, item) -> None:
        while True:
            try:
                self._queue.put_nowait(item)
                return
            except queue.Full:
                try:
                    self._queue.get_nowait()
                    self.events_dropped += 1
                except queue.Empty:
                    pass

    def events(self, timeout_s: float | None = None) -> Iterator[ActionEvent]:
        """Events in order until the run ends (or until none came for ``timeout_s``)."""
        if self._run_thread is None:
            raise PipelineNotRunningError("start() the pipeline first")
        while True:
            try:
                item = self._queue.get(timeout=timeout_s)
            except queue.Empty:
                return
            if item is _END:
                self._queue.put(_END)  # a second iterator ends too
                return
            yield item

    def join(self, timeout_s: float | None = None) -> RunSummary:
        """Waits until the run ends by itself (every recorded source replayed); returns its summary."""
        if self._run_thread is None:
            raise PipelineNotRunningError("start() the pipeline first")
        self._run_thread.join(timeout_s)
        if self._run_thread.is_alive():
            raise TimeoutError(f"the pipeline is still running after {timeout_s} s")
        if self._receive_thread is not None:
            self._receive_thread.join(10)
        if self._error is not None:
            raise self._error
        assert self._summary is not None
        return self._summary

    def stop(self, timeout_s: float | None = 60.0) -> RunSummary:
        """Stops reading the sources, processes what was read, and returns the summary."""
        if self._run_thread is None:
            raise PipelineNotRunningError("the pipeline was never started")
        self._supervisor.request_stop()
        return self.join(timeout_s)

    def __enter__(self) -> "ActionPipeline":
        return self if self._run_thread is not None else self.start()

    def __exit__(self, *exc_info) -> None:
        if self._run_thread is not None and not self._finished.is_set():
            self.stop()

    # -- while it runs ---------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._run_thread is not None and not self._finished.is_set()

    def stats(self) -> dict[str, dict]:
        """Per stream: state, captured, processed, dropped by reason, events, latency (as the control API)."""
        return {row["name"]: row for row in self._supervisor.view.streams()}

    def add_stream(self, uri: str, name: str | None = None, **fields: Any) -> dict:
        """Adds a source while running (``fields``: any source key, e.g. ``mode="live"``)."""
        self._need_running()
        entry = {"uri": uri, **({"name": name} if name else {}), **fields}
        try:
            source = SourceConfig.model_validate(entry)
        except ValidationError as exc:
            raise ConfigError(f"add_stream: {describe_validation_error(exc, SourceConfig)}") from None
        return self._supervisor.view.add_stream(source)

    def remove_stream(self, name: str) -> dict:
        self._need_running()
        return self._supervisor.view.remove_stream(name)

    def _need_running(self) -> None:
        if not self.running:
            raise PipelineNotRunningError("the pipeline is not running")

    @property
    def metrics_url(self) -> str | None:
        return self._supervisor.metrics_url

    def __repr__(self) -> str:
        return f"ActionPipeline({len(self.config.sources)} source(s), running={self.running})"

