"""Durable stream state: what a stream's state is, its file format, and the stores that keep it.

``snapshot`` (the data, numpy only), ``identity`` (which head and backbone a
state belongs to), ``snapshot_file`` (the on-disk format, written atomically,
read back with every refusal named), ``store`` (a directory, local or shared,
behind one small interface), ``restore`` (the pure decision whether a
snapshot may be continued) and ``config`` (the ``state`` section).

Nothing here imports the supervisor, the web servers or a stage: the
temporal stage uses it. This file imports nothing, so that reading the
configuration does not load numpy's users.
"""
