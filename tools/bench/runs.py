"""The pipeline run as a user runs it (``run_pipeline.py`` in a subprocess) on the benchmark's videos:
replayed as fast as it goes, profiled per process, and its memory with few and many live streams.

Throughput figures are the median of a few runs (:func:`median_of`): 2 shared cores vary by up to
10% between identical runs.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from engines.factory import REPO_ROOT
from tools.bench.paths import MODEL
from tools.testbed.control import get_json, stage_pids
from tools.testbed.ports import free_port


def median_of(runs: list[dict], key: str = "steps_per_s") -> dict:
    """The run with the median ``key`` (a real run, not an average), with every run's value beside it:
    2 shared cores vary by up to 10% between identical runs."""
    ordered = sorted(runs, key=lambda r: r[key])
    return {**ordered[(len(ordered) - 1) // 2], "runs": [round(r[key], 2) for r in runs]}


def write_config(path: Path, sources: list[dict], **sections) -> Path:
    """A pipeline config on the demo head with ``sources``, quiet and with nothing served unless
    ``sections`` (metrics, control, replay, ...) say otherwise."""
    config = {"model": str(MODEL), "sources": sources, "outputs": {"stdout": False},
              "metrics": {"enabled": False}, "control": {"enabled": False}, "logging": {"level": "warning"}}
    config.update(sections)
    path.write_text(yaml.safe_dump(config))
    return path


def pipeline_replay(videos: list[Path], streams: int, workdir: Path, sections: dict | None = None) -> dict:
    """``run_pipeline.py --fast`` on ``streams`` streams, timed from launch to exit (``sections``: more
    configuration)."""
    sources = [{"uri": str(videos[i % len(videos)]), "name": f"s{i}"} for i in range(streams)]
    config = write_config(workdir / f"replay_{streams}.yaml", sources, replay={"realtime": False}, **(sections or {}))
    summary_path = workdir / f"replay_{streams}.json"
    launched = time.time()
    proc = subprocess.run([sys.executable, "run_pipeline.py", "--config", str(config), "--summary-json",
                           str(summary_path)], cwd=REPO_ROOT, capture_output=True, text=True)
    exited = time.time()
    if proc.returncode != 0:
        raise RuntimeError(f"pipeline failed ({proc.returncode}): {proc.stderr[-2000:]}")
    rows = json.loads(summary_path.read_text())["streams"].values()
    first = min(r["first_step_wall"] for r in rows)
    last = max(r["last_step_wall"] for r in rows)
    steps = sum(r["processed"] for r in rows)
    return {"streams": streams, "steps": steps, "steps_per_s": steps / (last - first),
            "startup_s": first - launched, "shutdown_s": exited - last, "wall_s": exited - launched}


def profile_pipeline(videos: list[Path], streams: int, workdir: Path, sections: dict | None = None) -> dict:
    """Where the CPU goes: each process's CPU seconds per step between the first and the last step
    of a ``--fast`` replay of ``streams`` streams (start-up excluded)."""
    port = free_port()
    sources = [{"uri": str(videos[i % len(videos)]), "name": f"s{i}"} for i in range(streams)]
    config = write_config(workdir / f"profile_{streams}.yaml", sources, replay={"realtime": False},
                          control={"port": port}, **(sections or {}))
    summary_path = workdir / f"profile_{streams}.json"
    proc = subprocess.Popen([sys.executable, "run_pipeline.py", "--config", str(config), "--summary-json",
                             str(summary_path)], cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    tick = os.sysconf("SC_CLK_TCK")
    pids: dict[str, int] = {}
    cpu: dict[str, float] = {}
    at_first: tuple[dict[str, float], int] | None = None
    while proc.poll() is None:
        try:
            api = f"http://127.0.0.1:{port}"
            # Asked only until the first step: the supervisor serves these requests, and its CPU is measured.
            if at_first is None:
                pids.update(stage_pids(api, timeout_s=2))
                rows = get_json(f"{api}/streams", timeout_s=2)["streams"]
                if any(r["processed"] for r in rows):
                    at_first = (dict(cpu), sum(r["processed"] for r in rows))
        except OSError:
            pass  # the control API is not up yet, or already gone: the next poll asks again
        for name, pid in [*pids.items(), ("supervisor", proc.pid)]:
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                cpu[name] = (int(fields[11]) + int(fields[12])) / tick
            except OSError:
                pass  # the process has exited: its last reading stands
        time.sleep(0.1)
    rows = json.loads(summary_path.read_text())["streams"].values()
    steps = sum(r["processed"] for r in rows)
    base, base_steps = at_first or ({}, 0)
    counted = max(1, steps - base_steps)
    first = min(r["first_step_wall"] for r in rows)
    last = max(r["last_step_wall"] for r in rows)
    per_step = {name: 1000 * (value - base.get(name, 0.0)) / counted for name, value in sorted(cpu.items())}
    return {"streams": streams, "steps_per_s": steps / (last - first), "cpu_ms_per_step": per_step,
            "cores_busy": sum(value - base.get(name, 0.0) for name, value in cpu.items()) / (last - first)}


def memory_per_stream(videos: list[Path], workdir: Path, counts: tuple[int, int] = (1, 32),
                      seconds: float = 25.0) -> dict:
    """Private memory (USS) of all pipeline processes with few and with many live streams, per added stream."""
    totals = {}
    for streams in counts:
        control = free_port()
        sources = [{"uri": str(videos[i % len(videos)]), "name": f"s{i}", "mode": "live"} for i in range(streams)]
        config = write_config(workdir / f"memory_{streams}.yaml", sources, replay={"loop": True},
                              control={"port": control})
        proc = subprocess.Popen([sys.executable, "run_pipeline.py", "--config", str(config)], cwd=REPO_ROOT,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            time.sleep(seconds)
            pids = [proc.pid, *stage_pids(f"http://127.0.0.1:{control}").values()]
            totals[streams] = sum(_uss_mb(pid) for pid in pids)
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
    low, high = counts
    return {"uss_mb": totals, "per_added_stream_mb": (totals[high] - totals[low]) / (high - low)}


def _uss_mb(pid: int) -> float:
    """A process's private memory (clean and dirty) in MB."""
    text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    private = sum(int(m) for m in re.findall(r"^Private_(?:Clean|Dirty):\s+(\d+) kB", text, re.M))
    return private / 1024
