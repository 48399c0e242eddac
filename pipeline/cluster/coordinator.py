"""The coordinator: one named, detached Ray actor that owns the stream-to-node table.

Every ``heartbeat_s`` its loop asks Ray which nodes exist, starts a node agent (``agent.py``) on each
node that can run a cell, asks every agent for its report, and acts on what changed:

* a node whose agent is ready joins the table, and streams waiting for room are placed;
* a node Ray reports dead, whose agent died, or that answered nothing for ``node_lost_after_s`` is
  lost: its agent is killed (fenced: whatever it still runs dies with it), and its streams are placed
  on the survivors, each resumed from its latest snapshot in the shared store, with the actions its
  node last reported open (``ResumeRequest`` origin ``failover``);
* a stream of a draining node that its agent reports moved out (snapshotted at a step boundary) is
  placed on another node, which continues it (origin ``move``);
* a stream that ended by itself (a replay at its end, a camera given up) leaves the table.

The decisions are pure (``placement.py``, ``membership.py``); this module is their I/O. It holds
nothing it cannot rebuild: Ray restarts it after a crash (``max_restarts=-1``), and the new one asks
the agents what they run (``ClusterTable.rebuild``). Frames never pass through it, so the streams
never notice. Requests of its API and of the command line (``commands.py``) arrive on other threads
of the actor; one lock keeps them and the loop apart.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from typing import Any

import ray
from ray.exceptions import RayActorError, RayError
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from pipeline.cluster.agent import NodeAgent
from pipeline.cluster.config import ClusterConfig, ClusterSource, cell_config
from pipeline.cluster.file_sd import file_sd_targets, write_file_sd
from pipeline.cluster.journal import StreamJournal
from pipeline.cluster.membership import Membership
from pipeline.cluster.metrics import ClusterMetrics
from pipeline.cluster.placement import ClusterTable, NodeInfo, Placement, PlacementError, StreamSpec, UnknownStreamError
from pipeline.cluster.recovery import AGENT_PREFIX, Recovery, ray_node
from pipeline.logs import setup_logging

logger = logging.getLogger(__name__)

COORDINATOR_NAME = "coordinator"
STARTING_WARN_S = 120.0  # a cell not ready after this long is said so (once)
RETRY_CELL_S = (10.0, 300.0)  # a node whose cell failed to start is tried again after 10 s, doubling to 5 min


def node_name(node_id: str) -> str:
    """A node's name in the table, the metrics and the logs: short, and stable for the node's life."""
    return f"node-{node_id[:8]}"


class Coordinator(Recovery):
    def __init__(self, config: dict[str, Any] | ClusterConfig) -> None:
        self.config = config if isinstance(config, ClusterConfig) else ClusterConfig.model_validate(config)
        setup_logging(self.config.log_level, "coordinator")
        self._base = self.config.base_pipeline()
        self.table = ClusterTable()
        self.membership = Membership(self.config.node_lost_after_s, time.monotonic)
        self.metrics = ClusterMetrics()
        self._lock = threading.RLock()
        self._agents: dict[str, Any] = {}  # node -> agent handle (ready or starting)
        self._node_ids: dict[str, str] = {}
        self._starting: dict[str, float] = {}  # node -> when its agent was made (not ready yet)
        self._failed_starts: dict[str, tuple[int, float]] = {}  # node -> (failures in a row, when to try again)
        self._reports: dict[str, dict] = {}  # node -> its last report
        self._asking: dict[str, Any] = {}  # node -> the report call in flight
        self._calls: dict[Any, tuple[str, str]] = {}  # add/move calls in flight -> (what, stream)
        self._specs: dict[str, StreamSpec] = {}
        self._resumes: dict[str, dict] = {}  # a stream's resume request, for its next placement
        self._finished: dict[str, dict] = {}  # streams that ended by themselves: their last row
        self._closing = threading.Event()
        self._journal = StreamJournal(self.config.state_dir)
        if not self._recover():  # a fresh cluster: the configured sources; a restart goes on with what ran
            for source in self.config.sources:
                try:
                    self.add_stream(source.model_dump(mode="json", exclude_unset=True))
                except PlacementError as exc:
                    logger.error("source %s not placed: %s", source.name or "(unnamed)", exc)
        from pipeline.cluster.api import start_api  # the web server only where the coordinator runs

        self._server = start_api(self, self.config.api)
        self.api_url = f"http://{self.config.api.host}:{self._server.server_port}"
        self._thread = threading.Thread(target=self._loop, name="coordinator", daemon=True)
        self._thread.start()
        logger.info("coordinator up: API on %s, %d node(s), %d stream(s)", self.api_url, len(self._agents),
                    len(self._specs))

    # -- requests (the API's and the command line's threads) -------------------------------------------
    def add_stream(self, source: dict[str, Any]) -> dict:
        """Place a new stream (``source``: a source's settings and its ``needs``)."""
        spec_source = ClusterSource.model_validate(source)
        name = spec_source.name or _default_name(spec_source)
        fields = spec_source.model_dump(mode="json", exclude={"needs"}, exclude_unset=True)
        spec = StreamSpec(name, {**fields, "name": name}, dict(spec_source.needs))
        with self._lock:
            placement = self.table.add_stream(spec)
            self._specs[name] = spec
            self._finished.pop(name, None)
            self._dispatch(placement)
            return self._stream_row(name)

    def remove_stream(self, name: str) -> dict:
        with self._lock:
            node = self.table.remove_stream(name)
            self._specs.pop(name, None)
            self._resumes.pop(name, None)
            if node is not None and node in self._agents:
                self._agents[node].remove_stream.remote(name)
            logger.info("stream %s: removed%s", name, f" from {node}" if node else "")
            self._place_waiting()
            return {"name": name, "state": "removed", "node": node}

    def drain(self, node: str) -> dict:
        """Move every stream off ``node`` (each snapshotted at a step boundary); it takes no new ones."""
        with self._lock:
            streams = self.table.drain(node)
            for stream in streams:
                self._call(self._agents[node].move_out.remote(stream), "move_out", stream)
            logger.info("node %s: draining: moving %d stream(s) off it", node, len(streams))
            return {"node": node, "state": "draining", "moving": streams}

    def nodes(self) -> list[dict]:
        with self._lock:
            rows = []
            for row in self.table.nodes():
                report = self._reports.get(row.name, {})
                rows.append({**row.__dict__, "resources": dict(row.resources), "ready": bool(report.get("ready")),
                             "metrics": report.get("metrics_url", ""), "drained": self.table.drained(row.name)})
            rows += [{"name": name, "state": "starting", "since_s": round(time.monotonic() - since, 1)}
                     for name, since in sorted(self._starting.items())]
            return rows

    def streams(self) -> list[dict]:
        with self._lock:
            # A removed stream is gone; one that ended by itself is listed with its last row.
            rows = [self._stream_row(row.name) for row in self.table.streams() if row.state != "removed"]
            return rows + [dict(row) for row in self._finished.values()]

    def stream(self, name: str) -> dict:
        with self._lock:
            if name in self._finished:
                return dict(self._finished[name])
            return self._stream_row(name)

    def health(self) -> dict:
        return {"status": "ok" if self._thread.is_alive() else "stopped", "nodes": len(self._agents)}

    def metrics_text(self) -> bytes:
        with self._lock:
            self.metrics.update(self.table, self._starting, self._reports)
        return self.metrics.render()

    def shutdown(self, stop_cells: bool = True) -> dict:
        """Stop the loop (and, by default, drain and stop every cell, their streams' last state kept)."""
        self._closing.set()
        self._thread.join(10)
        stopped = {}
        if stop_cells:
            with self._lock:
                agents = dict(self._agents)
            refs = {node: agent.stop.remote() for node, agent in agents.items()}
            for node, ref in refs.items():
                try:
                    stopped[node] = ray.get(ref, timeout=90)
                except RayError as exc:
                    stopped[node] = f"not stopped: {exc}"
                try:
                    ray.kill(agents[node], no_restart=True)
                except RayError:
                    pass
        self._server.shutdown()
        return stopped

    # -- the loop ----------------------------------------------------------------------------------
    def _loop(self) -> None:
        while not self._closing.wait(self.config.heartbeat_s):
            try:
                with self._lock:
                    self._turn()
            except Exception:  # a turn that failed must not end the loop: the next one tries again
                logger.exception("coordinator: a turn of the loop failed; the next one tries again")

    def _turn(self) -> None:
        self._discover()
        self._collect_reports()
        for node in self.membership.lost():
            self._lose(node)
        self._collect_calls()
        self._ask_reports()
        if self.config.file_sd is not None:
            self._write_file_sd()
        self._journal.save(self._journal_entries())

    def _journal_entries(self) -> dict[str, dict]:
        entries = {}
        for row in self.table.streams():
            if row.state == "removed" or row.name not in self._specs:
                continue
            spec = self._specs[row.name]
            reported = self._reports.get(row.node or "", {}).get("streams", {}).get(row.name, {})
            resume = self._resumes.get(row.name, {})
            entries[row.name] = {"source": dict(spec.source), "needs": dict(spec.needs), "node": row.node,
                                 "generation": row.generation,
                                 "open_actions": reported.get("open_actions", resume.get("open_actions", {})),
                                 "last_t": reported.get("last_t", resume.get("last_t"))}
        return entries

    def _discover(self) -> None:
        """Ray's node table: dead nodes are lost at once; a live one that can run a cell gets an agent."""
        for info in ray.nodes():
            name = node_name(info["NodeID"])
            if not info.get("Alive"):
                if name in self._agents:
                    self.membership.ray_says_dead(name)
                    if name in self._starting:
                        self._lose(name)  # it never joined: nothing to place, only the agent to forget
                continue
            if info.get("Resources", {}).get(self.config.cell_resource, 0) < 1 or name in self._agents:
                continue
            if time.monotonic() < self._failed_starts.get(name, (0, 0.0))[1]:
                continue
            self._start_agent(name, info)

    def _start_agent(self, name: str, info: dict) -> None:
        config = cell_config(self._base, name, self.config.state_dir, self.config.metrics_host,
                             self.config.metrics_port, self.config.node_capacity)
        address = info.get("NodeManagerAddress", "")
        agent = ray.remote(NodeAgent).options(
            name=f"{AGENT_PREFIX}{name}-{uuid.uuid4().hex[:6]}", namespace=self.config.namespace,
            lifetime="detached", num_cpus=0, max_restarts=0, max_concurrency=4,
            scheduling_strategy=NodeAffinitySchedulingStrategy(info["NodeID"], soft=False),
        ).remote(name, config, address, info["NodeID"])
        self._agents[name] = agent
        self._node_ids[name] = info["NodeID"]
        self._starting[name] = time.monotonic()
        logger.info("node %s (%s) joined Ray: starting its cell", name, address)

    def _cell_failed(self, node: str, why: str) -> None:
        """``node``'s cell did not come up: its agent goes, and the node is tried again later (backing off)."""
        failures = self._failed_starts.get(node, (0, 0.0))[0] + 1
        wait = min(RETRY_CELL_S[0] * 2 ** (failures - 1), RETRY_CELL_S[1])
        self._failed_starts[node] = (failures, time.monotonic() + wait)
        logger.error("node %s: its cell could not start (%s); trying again in %.0f s", node, why.strip()[-800:], wait)
        self._fence(node)

    def _ask_reports(self) -> None:
        for node, agent in self._agents.items():
            if node not in self._asking:
                self._asking[node] = agent.report.remote()

    def _collect_reports(self) -> None:
        if not self._asking:
            return
        done, _ = ray.wait(list(self._asking.values()), num_returns=len(self._asking), timeout=0)
        done = set(done)
        for node, ref in list(self._asking.items()):
            if ref not in done:
                continue
            del self._asking[node]
            try:
                report = ray.get(ref)
            except RayActorError as exc:
                if node in self._starting:
                    self._cell_failed(node, str(exc))
                    continue
                logger.warning("node %s: its agent died (%s)", node, type(exc).__name__)
                self.membership.ray_says_dead(node)
                continue
            except RayError as exc:
                logger.warning("node %s: its report failed: %s", node, exc)
                continue
            self._on_report(node, report)
        for node, since in self._starting.items():
            if time.monotonic() - since > STARTING_WARN_S and node not in self._reports:
                logger.warning("node %s: its cell is not up after %.0f s", node, STARTING_WARN_S)
                self._reports[node] = {}

    def _on_report(self, node: str, report: dict) -> None:
        if node in self._starting:
            if report.get("error") or not report.get("running", True):
                self._cell_failed(node, report.get("error") or "it stopped")
                return
            if not report.get("ready"):
                return
            del self._starting[node]
            self._failed_starts.pop(node, None)
            info = ray_node(self._node_ids[node])
            self.table.join(NodeInfo(node, info.get("Resources", {}), self.config.node_capacity,
                                     report.get("metrics_url", "")))
            self.membership.joined(node)
            logger.info("node %s: its cell is ready", node)
            self._reports[node] = report
            self._place_waiting()
            return
        if not self.membership.heard(node):
            return  # lost already: whatever it says now comes from the wrong side of the fence
        self._reports[node] = report
        if report.get("error") or not report.get("running", True):
            logger.error("node %s: its cell stopped (%s): its streams go elsewhere", node, report.get("error"))
            self.membership.ray_says_dead(node)
            return
        for stream, row in report.get("streams", {}).items():
            generation = row.get("cluster_generation") or 0
            if not self.table.current(stream, node, generation):
                continue
            self.table.confirm(stream, node, generation)
            if row.get("moved"):
                self._moved(stream, node, row)
            elif row.get("reason") == "moved":
                continue  # its capture ended it; the word that its snapshot is written comes next
            elif row.get("state") in ("ended", "failed"):
                self._ended(stream, node, row)

    def _moved(self, stream: str, node: str, row: dict) -> None:
        placement = self.table.moved_out(stream, node)
        if placement is None:
            return
        self._agents[node].forget.remote(stream)
        self._resumes[stream] = {"origin": "move", "open_actions": row.get("open_actions") or {},
                                 "last_t": row.get("last_t")}
        self.metrics.moves.inc()
        logger.info("stream %s: moved out of %s (%s)", stream, node,
                    "its state snapshotted" if (row.get("moved") or {}).get("snapshot") else "no snapshot")
        self._dispatch(placement)

    def _ended(self, stream: str, node: str, row: dict) -> None:
        self.table.remove_stream(stream)
        self._specs.pop(stream, None)
        self._finished[stream] = {"name": stream, "state": row.get("state"), "reason": row.get("reason"),
                                  "node": node, "generation": row.get("cluster_generation"),
                                  "processed": row.get("processed"), "state_origin": row.get("state_origin"),
                                  "restored": row.get("restored")}
        logger.info("stream %s: %s on %s (%s)", stream, row.get("state"), node, row.get("reason"))
        self._place_waiting()

    def _place_waiting(self) -> None:
        """Room may have freed: place the streams waiting for it."""
        for placement in self.table.retry_unplaced():
            self._dispatch(placement)

    def _lose(self, node: str) -> None:
        """``node`` is lost: fence it, and place its streams on the survivors, each resumed from its snapshot."""
        report = self._reports.get(node, {})
        self._fence(node)
        if node not in {row.name for row in self.table.nodes()}:
            return
        if self.table.drained(node):  # drained, then taken out of Ray: planned, nothing to resume
            self.table.node_lost(node)
            logger.info("node %s left the cluster after its drain", node)
            return
        placements = self.table.node_lost(node)
        self.metrics.nodes_lost.inc()
        logger.error("node %s is lost: %d stream(s) resume elsewhere from their snapshots", node, len(placements))
        for placement in placements:
            row = report.get("streams", {}).get(placement.stream, {})
            self._resumes[placement.stream] = {"origin": "failover", "open_actions": row.get("open_actions") or {},
                                               "last_t": row.get("last_t")}
            self.metrics.failovers.inc()
            self._dispatch(placement)

    def _fence(self, node: str) -> None:
        """Make sure nothing of ``node``'s cell runs on: its agent (and with it the stage processes) killed."""
        agent = self._agents.pop(node, None)
        self._starting.pop(node, None)
        self._asking.pop(node, None)
        self._reports.pop(node, None)
        self.membership.forget(node)
        if agent is not None:
            try:
                ray.kill(agent, no_restart=True)
            except RayError:
                pass  # gone already

    def _dispatch(self, placement: Placement) -> None:
        """Hand a placed stream to its node (resumed, if it comes from another one); an unplaced one waits."""
        stream = placement.stream
        if not placement.placed:
            logger.warning("stream %s: waiting for a node: %s", stream, placement.reason)
            return
        spec = self._specs[stream]
        resume = self._resumes.pop(stream, None)
        ref = self._agents[placement.node].add_stream.remote(dict(spec.source), dict(spec.needs), resume,
                                                            placement.generation)
        self._call(ref, "add", stream)
        logger.info("stream %s: placed on %s (generation %d%s)", stream, placement.node, placement.generation,
                    f", resumed after a {resume['origin']}" if resume else "")

    def _call(self, ref, what: str, stream: str) -> None:
        self._calls[ref] = (what, stream)

    def _collect_calls(self) -> None:
        if not self._calls:
            return
        done, _ = ray.wait(list(self._calls), num_returns=len(self._calls), timeout=0)
        for ref in done:
            what, stream = self._calls.pop(ref)
            try:
                ray.get(ref)
            except RayActorError:
                pass  # its node is lost; the loss re-places the stream
            except RayError as exc:
                why = str(getattr(exc, "cause", None) or exc).strip().splitlines()[-1]
                logger.error("stream %s: %s refused by its node: %s", stream, what, why)
                if what == "add" and stream in self._specs:  # it holds no room there; said in its row
                    node = self.table.remove_stream(stream)
                    self._specs.pop(stream, None)
                    self._finished[stream] = {"name": stream, "state": "failed", "reason": "refused", "node": node,
                                              "error": why}

    def _write_file_sd(self) -> None:
        host = self.config.api.host
        if host in ("0.0.0.0", "::"):  # listening everywhere: Prometheus reaches it at this node's address
            host = ray.util.get_node_ip_address()
        groups = file_sd_targets(self.table.nodes(), coordinator=f"{host}:{self._server.server_port}")
        try:
            write_file_sd(self.config.file_sd, groups)
        except OSError as exc:
            logger.warning("cannot write the file_sd file %s: %s", self.config.file_sd, exc)

    def _stream_row(self, name: str) -> dict:
        row = next((r for r in self.table.streams() if r.name == name and r.state != "removed"), None)
        if row is None:
            raise UnknownStreamError(f"no stream named {name!r}")
        node_row = (self._reports.get(row.node or "", {}).get("streams", {}) or {}).get(name, {})
        return {**row.__dict__, "node_state": node_row.get("state"), "processed": node_row.get("processed"),
                "state_origin": node_row.get("state_origin"), "state_age_s": node_row.get("state_age_s"),
                "needs": dict(self._specs[name].needs) if name in self._specs else {}}

def _default_name(source: ClusterSource) -> str:
    from pipeline.config import stream_name

    return stream_name(source)
