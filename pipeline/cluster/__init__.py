"""Cluster mode: one cell per node (a node agent running today's supervisor and its stage processes), and
one coordinator that owns which stream runs on which node. This package holds the coordinator's decisions
as pure logic: the stream-to-node table (``placement``), when a node counts as lost (``membership``) and the
Prometheus targets of the cells (``file_sd``). Those modules never import Ray, so they are tested without a
cluster and the single-host pipeline can import them for free; only ``agent.py`` and ``coordinator.py``, the
Ray actors that call them, import Ray, which stays an optional extra.
"""
