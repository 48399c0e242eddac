"""A Ray cluster simulated on this machine (``ray.cluster_utils.Cluster``), for the cluster tests and
``tools.benchmark_cluster``: a head that runs no cell (0 CPUs: it holds Ray's GCS and the coordinator)
and nodes of 1 CPU each, every one a raylet process of its own, so removing one kills it as a machine
loss would (``allow_graceful=False``: SIGKILL, no goodbye).

Ray's health checks are tuned as docs/cluster.md recommends for fast failover (a dead node is told
within about 2 s instead of Ray's default 15 s); small object stores and no dashboard keep Ray's own
memory down: frames never go through Ray.

Each node is pinned to a core of its own where the machine has enough (its raylet, and so every worker
and stage process it starts): a machine's node does not run on another's CPU, so what one node does
(dying, above all: tearing down its processes) does not slow the others down as it would on shared
cores. The head, the coordinator and the test itself run on any core.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager

from tools.testbed.processes import descendants, process_table

# docs/cluster.md: "Ray's health checks". period x threshold bounds the time to tell a dead node.
FAST_HEALTH_CHECKS = {"health_check_period_ms": 500, "health_check_failure_threshold": 4,
                      "health_check_timeout_ms": 500, "health_check_initial_delay_ms": 0}
OBJECT_STORE_BYTES = 80 * 2**20  # Ray's minimum is about 75 MiB; nothing of ours is stored there
NAMESPACE = "actionpipe"


class SimulatedCluster:
    def __init__(self, cluster, pin_cores: bool = True) -> None:
        self.cluster = cluster
        self.pin_cores = pin_cores
        self.cells: list = []  # cluster_utils node handles, in the order added
        self.cores: dict[str, int] = {}  # node id -> the core it is pinned to

    def add_cell_node(self, wait: bool = True):
        node = self.cluster.add_node(num_cpus=1, object_store_memory=OBJECT_STORE_BYTES)
        if self.pin_cores:
            self._pin(node)
        if wait:
            self.cluster.wait_for_nodes()
        self.cells.append(node)
        return node

    def lose(self, node) -> float:
        """Kill ``node`` without grace (its raylet and every process of it); the unix time it happened."""
        at = time.time()
        self.cluster.remove_node(node, allow_graceful=False)
        self.cells.remove(node)
        self.cores.pop(node.node_id, None)
        return at

    def _pin(self, node) -> None:
        available = sorted(os.sched_getaffinity(0))
        free = [core for core in available if core not in self.cores.values()]
        if len(available) < 2 or not free:
            return  # one core, or fewer cores than nodes: they share
        core = free[0]
        self.cores[node.node_id] = core
        table = process_table()
        roots = [info.process.pid for infos in node.all_processes.values() for info in infos]
        for pid in {pid for root in roots for pid in descendants(root, table)}:
            try:
                os.sched_setaffinity(pid, {core})
            except OSError:
                pass  # gone already


@contextmanager
def simulated_cluster(cells: int = 2, namespace: str = NAMESPACE, pin_cores: bool = True) -> Iterator[SimulatedCluster]:
    """A head and ``cells`` one-CPU nodes, with this process connected as the driver; torn down after.
    ``pin_cores`` False: every node runs on every core (to compare one node with a pipeline that has them all)."""
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 0, "include_dashboard": False, "object_store_memory": OBJECT_STORE_BYTES,
        "_system_config": FAST_HEALTH_CHECKS})
    world = SimulatedCluster(cluster, pin_cores)
    try:
        for _ in range(cells):
            world.add_cell_node(wait=False)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, namespace=namespace, log_to_driver=False, logging_level="WARNING")
        yield world
    finally:
        ray.shutdown()
        cluster.shutdown()


def cell_name(node) -> str:
    """The coordinator's name for a simulated node (``pipeline.cluster.coordinator.node_name``)."""
    from pipeline.cluster.coordinator import node_name

    return node_name(node.node_id)
