"""The node agent: one per node, a Ray actor pinned to it, running that node's cell.

A cell is today's single-host pipeline: the supervisor on a thread of the agent's process, its
capture, embed and temporal processes beside it, ipc sockets between them. Frames and embeddings
never leave the node; the agent only carries the coordinator's requests to the supervisor (through
``SupervisorView``, like the control API does) and answers its heartbeats with what the node serves.

This module does not import Ray: the coordinator makes the actor (``ray.remote(NodeAgent)``), so the
class is testable, and usable, without it.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

from pipeline.config import PipelineConfig, SourceConfig
from pipeline.errors import ActionPipeError
from pipeline.logs import setup_logging
from pipeline.supervision.registry import ResumeRequest
from pipeline.supervision.supervisor import Supervisor

logger = logging.getLogger(__name__)

STOP_TIMEOUT_S = 60.0
# What a heartbeat reports of each stream (the rest of the supervisor's row stays on the node).
REPORTED_FIELDS = ("state", "reason", "error", "generation", "last_t", "moved", "processed", "captured", "dropped",
                   "state_origin", "state_age_s", "restored", "restore_refused", "sequences")


def _make_output_folders(config: PipelineConfig) -> None:
    """The folders of this node's output files (``{node}`` in their paths makes them new on each node)."""
    outputs = config.outputs
    for path in (outputs.events_jsonl, outputs.scores_jsonl):
        if path:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
    for folder in (outputs.webhook and outputs.webhook.spool_dir, outputs.mqtt and outputs.mqtt.spool_dir,
                   config.overlay.out_dir):
        if folder:
            Path(folder).mkdir(parents=True, exist_ok=True)


class CellNotRunningError(ActionPipeError, RuntimeError):
    """A request to a cell whose pipeline has stopped (or never started)."""


class NodeAgent:
    """``node``'s cell, running ``config`` from construction until :meth:`stop`."""

    def __init__(self, node: str, config: PipelineConfig, address: str = "", node_id: str = "") -> None:
        setup_logging(config.logging.level, f"cell {node}")  # this actor's process: Ray keeps its stderr per worker
        self.node = node
        self.node_id = node_id  # Ray's id of the node
        self.address = address  # host the node's metrics are reached at from elsewhere
        _make_output_folders(config)
        self._supervisor = Supervisor(config)
        self._sources: dict[str, dict[str, Any]] = {}  # what the coordinator placed here, to report back
        self._needs: dict[str, dict[str, float]] = {}
        self._generations: dict[str, int] = {}  # the coordinator's generation of each (its fencing token)
        self._error: str | None = None
        self._thread = threading.Thread(target=self._run, name=f"cell-{node}", daemon=True)
        self._thread.start()
        logger.info("node %s: cell starting (pid %d)", node, os.getpid())

    def _run(self) -> None:
        try:
            self._supervisor.run()
        except BaseException as exc:  # reported to the coordinator by the next heartbeat
            self._error = f"{type(exc).__name__}: {exc}"
            logger.error("node %s: the cell stopped: %s", self.node, self._error)

    # -- the coordinator's questions ---------------------------------------------------------------
    def report(self) -> dict[str, Any]:
        """A heartbeat's answer: whether the cell runs, its metrics endpoint, and every stream placed here."""
        view = self._supervisor.view
        ready, _ = view.readiness()
        rows = view.streams() if self._supervisor.started else []
        open_actions = view.open_actions()
        streams = {}
        for row in rows:
            name = row["name"]
            streams[name] = {**{k: row.get(k) for k in REPORTED_FIELDS}, "open_actions": open_actions.get(name, {}),
                             "source": self._sources.get(name), "needs": self._needs.get(name, {}),
                             "cluster_generation": self._generations.get(name, 0)}
        return {"node": self.node, "node_id": self.node_id, "pid": os.getpid(), "ready": ready, "running": self._thread.is_alive(),
                "error": self._error, "metrics_url": self._metrics_target(), "streams": streams,
                "reported_at": time.time()}

    def _metrics_target(self) -> str:
        url = self._supervisor.metrics_url or ""
        if not url:
            return ""
        port = url.rsplit(":", 1)[1].split("/", 1)[0]
        return f"{self.address or '127.0.0.1'}:{port}"

    # -- the coordinator's requests ----------------------------------------------------------------
    def add_stream(self, source: dict[str, Any], needs: dict[str, float] | None = None,
                   resume: dict[str, Any] | None = None, cluster_generation: int = 0) -> dict:
        """Serve ``source`` here, in the coordinator's ``cluster_generation``; ``resume`` (``ResumeRequest``
        fields): continue it from its snapshot."""
        self._need_running()
        config = SourceConfig.model_validate(source)
        if resume is not None:
            row = self._supervisor.view.resume_stream(config, ResumeRequest(**resume))
        else:
            row = self._supervisor.view.add_stream(config)
        name = row["name"]
        self._sources[name], self._needs[name] = dict(source), dict(needs or {})
        self._generations[name] = cluster_generation
        return {k: row.get(k) for k in ("name", "state", "generation")}

    def move_out(self, name: str) -> dict:
        """End ``name`` at a step boundary, its state snapshotted, for another node to continue."""
        self._need_running()
        row = self._supervisor.view.move_out(name)
        return {k: row.get(k) for k in ("name", "state", "generation")}

    def remove_stream(self, name: str) -> dict:
        self._need_running()
        row = self._supervisor.view.remove_stream(name)
        self._sources.pop(name, None)
        return {k: row.get(k) for k in ("name", "state", "generation")}

    def forget(self, name: str) -> None:
        """The coordinator has placed ``name`` elsewhere: stop reporting its source."""
        self._sources.pop(name, None)
        self._needs.pop(name, None)
        self._generations.pop(name, None)

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> bool:
        """Drain the cell (every stream's last state snapshotted) and stop it; True when it stopped in time."""
        self._supervisor.request_stop()
        self._thread.join(timeout_s)
        return not self._thread.is_alive()

    def _need_running(self) -> None:
        if not self._thread.is_alive():
            raise CellNotRunningError(f"node {self.node}: its cell is not running ({self._error or 'stopped'})")
