"""Real-time capacity: the most live-paced streams held for a while with p99 end-to-end latency
under a bound and no frame dropped or late (only sampling), with p50/p99 per stage."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from engines.factory import REPO_ROOT
from tools.bench.runs import write_config
from tools.testbed.ports import free_port
from tools.testbed.scrape import histogram_quantile, scrape

LATENCY_BOUND_S = 0.25
STAGE_LATENCY = "actionpipe_stage_latency_seconds"


def live_trial(videos: list[Path], streams: int, seconds: float, workdir: Path,
               bound_s: float = LATENCY_BOUND_S, sections: dict | None = None) -> dict:
    """``streams`` live-paced streams for ``seconds``: held when nothing but sampling dropped and p99 <= ``bound_s``.
    ``sections``: more configuration (engine, capture, temporal) for the run."""
    port = free_port()
    sources = [{"uri": str(videos[i % len(videos)]), "name": f"s{i}", "mode": "live"} for i in range(streams)]
    config = write_config(workdir / f"live_{streams}.yaml", sources, replay={"loop": True},
                          metrics={"port": port}, **(sections or {}))
    summary_path = workdir / f"live_{streams}.json"
    proc = subprocess.Popen([sys.executable, "run_pipeline.py", "--config", str(config), "--summary-json",
                             str(summary_path)], cwd=REPO_ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        time.sleep(seconds)
        samples = scrape(f"http://127.0.0.1:{port}/metrics")
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    rows = json.loads(summary_path.read_text())["streams"]
    dropped = {}
    for row in rows.values():
        for reason, count in row["dropped"].items():
            if reason != "sampling":
                dropped[reason] = dropped.get(reason, 0) + count
    p99 = max((r["latency_p99_s"] or 0.0) for r in rows.values())
    stages = {stage: {"p50_ms": _ms(histogram_quantile(samples, STAGE_LATENCY, 0.5, stage=stage)),
                      "p99_ms": _ms(histogram_quantile(samples, STAGE_LATENCY, 0.99, stage=stage))}
              for stage in ("capture", "embed_queue", "embed", "temporal")}
    return {"streams": streams, "held": not dropped and p99 <= bound_s, "dropped": dropped,
            "e2e_p50_ms": round(1000 * float(np.median([r["latency_p50_s"] or 0 for r in rows.values()])), 1),
            "e2e_p99_ms": round(1000 * p99, 1), "stages": stages}


def _ms(value: float | None) -> float | None:
    """Seconds as milliseconds to 0.1 ms (None stays None)."""
    return None if value is None else round(1000 * value, 1)


def capacity(videos: list[Path], seconds: float, workdir: Path, start: int, limit: int = 64,
             bound_s: float = LATENCY_BOUND_S, sections: dict | None = None) -> dict:
    """The largest N that holds: double from ``start`` until a trial fails, then bisect."""
    trials: dict[int, dict] = {}

    def held(n: int) -> bool:
        if n not in trials:
            trials[n] = live_trial(videos, n, seconds, workdir, bound_s, sections)
            print(f"    {n} streams: {'held' if trials[n]['held'] else 'not held'} "
                  f"(p99 {trials[n]['e2e_p99_ms']} ms, dropped {trials[n]['dropped'] or 'nothing'})", flush=True)
        return trials[n]["held"]

    low, high = 0, None
    n = max(1, start)
    while high is None and n <= limit:
        if held(n):
            low, n = n, n * 2
        else:
            high = n
    high = high or limit + 1
    while high - low > 1:
        middle = (low + high) // 2
        if held(middle):
            low = middle
        else:
            high = middle
    return {"streams": low, "trials": [trials[k] for k in sorted(trials)], "best": trials.get(low)}
