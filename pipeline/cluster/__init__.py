"""Cluster mode (docs/cluster.md): one cell per node (a node agent running today's supervisor and its stage
processes), and one coordinator that owns which stream runs on which node.

The coordinator's decisions are pure logic: the stream-to-node table (``placement``), when a node counts
as lost (``membership``), the Prometheus targets of the cells (``file_sd``). They, the configuration
(``config``), the agent (``agent``: plain Python, made an actor by the coordinator), the journal and the
metrics never import Ray, so they are tested without a cluster. Ray is imported by the coordinator
(``coordinator``, ``recovery``) and by the ``actionpipe cluster`` commands (``commands``) only, and stays
an optional extra: the single-host pipeline never imports it (``tests/system/test_without_ray.py``).
"""
