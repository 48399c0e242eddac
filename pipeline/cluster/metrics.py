"""The coordinator's own metrics (served on its API's ``/metrics``): the cluster's nodes and streams by
state, what each node holds, and the losses, failovers, moves and rebuilds it has carried out.

Each cell serves the single-host metrics on its own endpoint; Prometheus finds them through the
coordinator's file_sd file, whose target labels add ``node`` to every series of a cell.
"""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

from pipeline.cluster.placement import ClusterTable, NodeState, PlacementState
from pipeline.metrics import PREFIX

NODE_STATES = ("starting",) + tuple(s.value for s in NodeState)
STREAM_STATES = tuple(s.value for s in PlacementState if s is not PlacementState.REMOVED)


class ClusterMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.nodes = Gauge(f"{PREFIX}_cluster_nodes", "Nodes of the cluster, per state (starting: its cell is not "
                           "up yet).", ("state",), registry=self.registry)
        self.streams = Gauge(f"{PREFIX}_cluster_streams", "Streams of the cluster, per placement state (unplaced: "
                             "no node can take it now).", ("state",), registry=self.registry)
        self.node_streams = Gauge(f"{PREFIX}_cluster_node_streams", "Streams placed on each node (moving ones "
                                  "included).", ("node",), registry=self.registry)
        self.nodes_lost = Counter(f"{PREFIX}_cluster_nodes_lost", "Nodes found lost (dead, agent gone, or silent): "
                                  "each was fenced and its streams placed elsewhere.", registry=self.registry)
        self.failovers = Counter(f"{PREFIX}_cluster_failovers", "Streams placed again because their node was "
                                 "lost (resumed from their snapshots where usable).", registry=self.registry)
        self.moves = Counter(f"{PREFIX}_cluster_moves", "Streams moved off a draining node at a step boundary.",
                             registry=self.registry)
        self.rebuilds = Counter(f"{PREFIX}_cluster_coordinator_rebuilds", "Times a (re)started coordinator "
                                "rebuilt its table from the agents' reports.", registry=self.registry)
        for state in NODE_STATES:
            self.nodes.labels(state)
        for state in STREAM_STATES:
            self.streams.labels(state)

    def update(self, table: ClusterTable, starting: Mapping[str, float], reports: Mapping[str, dict]) -> None:
        """Set the gauges from the table as it is now."""
        nodes = table.nodes()
        for state in NODE_STATES:
            count = len(starting) if state == "starting" else sum(row.state == state for row in nodes)
            self.nodes.labels(state).set(count)
        streams = table.streams()
        for state in STREAM_STATES:
            self.streams.labels(state).set(sum(row.state == state for row in streams))
        self.node_streams.clear()
        for row in nodes:
            if row.state != NodeState.LOST.value:
                self.node_streams.labels(row.name).set(row.load)

    def render(self) -> bytes:
        return generate_latest(self.registry)
