"""How a restarted coordinator goes on: the agents a previous one started tell it what they run
(``ClusterTable.rebuild``), and its journal (``journal.py``) names the streams no live node runs any
more, which resume elsewhere as after a failover.

:class:`Recovery` is a part of ``Coordinator`` (it fills the coordinator's table, agents and reports);
it lives here so that the coordinator's module keeps to its loop.
"""

from __future__ import annotations

import logging

import ray
from ray.exceptions import GetTimeoutError, RayActorError

from pipeline.cluster.placement import NodeInfo, NodeReport, StreamReport, StreamSpec

logger = logging.getLogger(__name__)

AGENT_PREFIX = "agent-"
RECOVER_TIMEOUT_S = 10.0


def ray_node(node_id: str) -> dict:
    """Ray's entry for the node ``node_id`` ({} when Ray has none)."""
    return next((n for n in ray.nodes() if n["NodeID"] == node_id), {})


class Recovery:
    """The coordinator's start after a restart (mixed into ``Coordinator``)."""

    def _recover(self) -> bool:
        """Find the agents a previous coordinator started, and rebuild the table from what they run; whether
        there was a previous coordinator (agents, or a journal) to go on from."""
        handles = {}
        for entry in ray.util.list_named_actors(all_namespaces=True):
            if entry["namespace"] == self.config.namespace and entry["name"].startswith(AGENT_PREFIX):
                handles[entry["name"]] = ray.get_actor(entry["name"], namespace=self.config.namespace)
        if not handles:
            return self._resume_orphans()
        refs = {name: handle.report.remote() for name, handle in handles.items()}
        reports = []
        for name, ref in refs.items():
            try:
                report = ray.get(ref, timeout=RECOVER_TIMEOUT_S)
            except (RayActorError, GetTimeoutError) as exc:
                logger.warning("agent %s did not answer (%s): left for Ray to clean up", name, type(exc).__name__)
                continue
            node = report["node"]
            self._agents[node] = handles[name]
            self._node_ids[node] = report.get("node_id", "")
            self._reports[node] = report
            info = ray_node(report.get("node_id", ""))
            streams = {}
            for stream, row in report.get("streams", {}).items():
                if row.get("source") is None or row.get("state") in ("ended", "failed"):
                    continue
                spec = StreamSpec(stream, row["source"], row.get("needs") or {})
                streams[stream] = StreamReport(spec, int(row.get("cluster_generation") or 1))
                self._specs[stream] = spec
            reports.append(NodeReport(NodeInfo(node, info.get("Resources", {}), self.config.node_capacity,
                                               report.get("metrics_url", "")), streams))
        for stale in self.table.rebuild(reports):
            self._agents[stale.node].remove_stream.remote(stale.stream)
        for node in self._agents:
            self.membership.joined(node)
        self.metrics.rebuilds.inc()
        logger.warning("coordinator restarted: rebuilt the table from %d node(s), %d stream(s)", len(reports),
                       len(self._specs))
        self._resume_orphans()
        return True

    def _resume_orphans(self) -> bool:
        """Streams the journal names that no live node runs: their node died while no coordinator watched.
        Each is placed again, resumed from its snapshot as after a failover. Whether there was a journal."""
        journaled = self._journal.load()
        for name, entry in sorted(journaled.items()):
            if name in self._specs or not isinstance(entry.get("source"), dict):
                continue
            spec = StreamSpec(name, entry["source"], entry.get("needs") or {})
            self.table.continue_generations(name, int(entry.get("generation") or 0))
            self._specs[name] = spec
            self._resumes[name] = {"origin": "failover", "open_actions": entry.get("open_actions") or {},
                                   "last_t": entry.get("last_t")}
            logger.error("stream %s: its node (%s) was lost while no coordinator watched: it resumes elsewhere",
                         name, entry.get("node"))
            self.metrics.failovers.inc()
            self._dispatch(self.table.add_stream(spec))
        return self._journal.path.exists()


