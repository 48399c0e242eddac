"""Real-time capacity: the most live-paced streams held for a while with p99 end-to-end latency
under a bound and no frame dropped or late (only sampling), with p50/p99 per stage.

Cameras keep their own clocks. With ``clocks="independent"`` (the headline) each stream joins
through the control API at a random moment within its first second and runs its recording at
a rate of its own, up to 0.5% off (``replay_speed``), so their frames spread over each frame
interval and drift through each other, as a site's cameras do. ``clocks="aligned"`` starts every
stream together at the same rate: each frame interval brings every stream's frame at once.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Literal

import numpy as np

from engines.factory import REPO_ROOT
from tools.bench.runs import write_config
from tools.testbed.ports import free_port
from tools.testbed.scrape import histogram_quantile, scrape

LATENCY_BOUND_S = 0.25
STAGE_LATENCY = "actionpipe_stage_latency_seconds"
CLOCK_SPREAD = 0.005  # cameras' clocks differ by up to this share of their rate
Clocks = Literal["independent", "aligned"]


def camera_clocks(streams: int, seed: int) -> list[tuple[float, float]]:
    """Each stream's (start delay s, rate): a random moment within the first second and a rate up to
    ``CLOCK_SPREAD`` off; the same for the same ``seed``, so a trial can be run again."""
    rng = random.Random(seed)
    return sorted((rng.uniform(0.0, 1.0), rng.uniform(1 - CLOCK_SPREAD, 1 + CLOCK_SPREAD)) for _ in range(streams))


def _add_streams(control_port: int, sources: list[dict], clocks: list[tuple[float, float]]) -> None:
    """Add ``sources`` through the control API, each at its start delay and with its rate."""
    started = time.monotonic()
    for source, (delay, rate) in zip(sources, clocks, strict=True):
        time.sleep(max(0.0, started + delay - time.monotonic()))
        body = json.dumps({**source, "replay_speed": rate}).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{control_port}/streams", data=body, method="POST",
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as answer:
            if answer.status != 201:
                raise RuntimeError(f"adding {source['name']}: HTTP {answer.status}")


def _wait_for_control(port: int, proc: subprocess.Popen, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the pipeline exited ({proc.returncode}) before its control API answered")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"the control API on port {port} did not answer within {timeout_s:.0f} s")


def live_trial(videos: list[Path], streams: int, seconds: float, workdir: Path,
               bound_s: float = LATENCY_BOUND_S, sections: dict | None = None,
               clocks: Clocks = "independent") -> dict:
    """``streams`` live-paced streams for ``seconds``: held when nothing but sampling dropped and p99 <= ``bound_s``.
    ``sections``: more configuration (engine, capture, temporal) for the run; ``clocks``: see the module."""
    port = free_port()
    sources = [{"uri": str(videos[i % len(videos)]), "name": f"s{i}", "mode": "live"} for i in range(streams)]
    in_config, extra = sources, {}
    if clocks == "independent":  # none in the configuration: each joins at its own moment
        control_port = free_port()
        in_config = []
        extra = {"control": {"enabled": True, "port": control_port, "keep_running": True,
                             "media_roots": sorted({str(v.parent.resolve()) for v in videos})}}
    config = write_config(workdir / f"live_{streams}.yaml", in_config, replay={"loop": True},
                          metrics={"port": port}, **{**extra, **(sections or {})})
    summary_path = workdir / f"live_{streams}.json"
    proc = subprocess.Popen([sys.executable, "run_pipeline.py", "--config", str(config), "--summary-json",
                             str(summary_path)], cwd=REPO_ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        if clocks == "independent":
            _wait_for_control(control_port, proc)
            _add_streams(control_port, sources, camera_clocks(streams, seed=streams))
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
             bound_s: float = LATENCY_BOUND_S, sections: dict | None = None,
             clocks: Clocks = "independent") -> dict:
    """The largest N that holds: double from ``start`` until a trial fails, then bisect."""
    trials: dict[int, dict] = {}

    def held(n: int) -> bool:
        if n not in trials:
            trials[n] = live_trial(videos, n, seconds, workdir, bound_s, sections, clocks)
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
    return {"streams": low, "clocks": clocks, "trials": [trials[k] for k in sorted(trials)], "best": trials.get(low)}
