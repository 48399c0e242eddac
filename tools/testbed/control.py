"""A running pipeline's control API, read over HTTP: its JSON answers and its stages' process ids."""

from __future__ import annotations

import json
import urllib.request


def get_json(url: str, timeout_s: float = 10.0) -> dict:
    """The JSON object ``url`` answers with; raises OSError when it does not answer."""
    with urllib.request.urlopen(url, timeout=timeout_s) as response:
        return json.loads(response.read())


def stage_pids(api: str, timeout_s: float = 10.0) -> dict[str, int]:
    """Process id of every running stage (``capture:0``, ``embed:0``, ``temporal``, ...) by name."""
    return {s["name"]: s["pid"] for s in get_json(f"{api}/stages", timeout_s)["stages"] if s["pid"]}
