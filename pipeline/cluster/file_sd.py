"""Prometheus file-based service discovery for the cells: which metrics endpoints to scrape.

Nodes come and go, so the scrape targets cannot sit in a static prometheus.yml. Prometheus watches the files
that a ``file_sd_configs`` entry names and applies every change at once; each file holds a list of static
configs, in JSON::

    [{"targets": ["10.0.0.5:9400"], "labels": {"node": "gpu-a", "role": "cell"}}, ...]

One group per node, so each carries its node's name as a label (an operator's name, never a URL). A
draining node still runs streams and is still scraped; a lost one is not. Only ``write_file_sd`` does I/O.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pipeline.cluster.placement import NodeRow, NodeState
from pipeline.errors import ActionPipeError

# Prometheus reads a file as JSON or YAML by its name, and ignores other names (JSON is valid YAML).
SUFFIXES = (".json", ".yml", ".yaml")


class FileSdError(ActionPipeError, ValueError):
    """A service-discovery file that cannot be written where asked; the message says why."""


def file_sd_targets(nodes: Iterable[NodeRow], coordinator: str = "") -> list[dict[str, Any]]:
    """The target groups Prometheus reads: one per node that is not lost and has a metrics address, by node
    name, then the coordinator's own endpoint when ``coordinator`` (host:port) is given."""
    groups = [{"targets": [row.address], "labels": {"node": row.name, "role": "cell"}}
              for row in sorted(nodes, key=lambda r: r.name)
              if row.state != NodeState.LOST.value and row.address]
    if coordinator:
        groups.append({"targets": [coordinator], "labels": {"node": "coordinator", "role": "coordinator"}})
    return groups


def write_file_sd(path: Path | str, groups: list[dict[str, Any]]) -> None:
    """Write ``groups`` to ``path`` atomically: Prometheus re-reads the file as soon as it changes, and a
    half-written one would be refused (it keeps the old targets then, but logs an error each time)."""
    path = Path(path)
    if path.suffix not in SUFFIXES:
        raise FileSdError(f"{path}: Prometheus reads file_sd files named *.json, *.yml or *.yaml only")
    data = (json.dumps(groups, indent=2) + "\n").encode()
    # The temporary name ends in .tmp so that a files pattern like *.json never matches it, and it lies in
    # the target's folder so that os.replace is a rename within one file system.
    try:
        fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise FileSdError(f"{path}: cannot be written: {exc}") from exc
    try:
        try:
            os.fchmod(fd, 0o644)  # mkstemp makes it 0600; Prometheus often runs as another user
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)  # a power cut must leave the old file or the new one, never an empty one
        finally:
            os.close(fd)
        os.replace(temp, path)
    except OSError as exc:
        try:
            os.unlink(temp)
        except FileNotFoundError:
            pass  # the replace happened before the failure, or it was never made
        raise FileSdError(f"{path}: cannot be written: {exc}") from exc
