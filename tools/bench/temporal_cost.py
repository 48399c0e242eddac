"""The temporal worker's CPU per round against the GRU's own, for N live streams with their own clocks.

The worker is the pipeline's (state table, reorder windows, event detector, metrics, snapshots in a
scratch folder), fed over a real ZeroMQ socket by a second process that plays N cameras: each starts
at a random phase and steps at a rate up to 0.5% off the model's. The worker's process CPU is
measured over the run, and so is the CPU of its GRU calls (``head.step``, on the worker's one
PyTorch thread) within it: ``overhead`` = worker CPU / GRU CPU, per round as the worker forms them.
"""

from __future__ import annotations

import cProfile
import multiprocessing
import os
import random
import resource
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

ENDPOINT_NAME = "temporal-cost.ipc"


def _produce(endpoint: str, streams: int, seconds: float, step_rate: float, seed: int) -> None:
    """N cameras' embeddings at their own phases and rates, for ``seconds``, then END for each."""
    import zmq

    from engines.spec import STATS_DIM
    from pipeline.transport.messages import EmbeddingHeader, Flags, encode_embedding

    rng = random.Random(seed)
    noise = np.random.default_rng(seed)
    context = zmq.Context()
    push = context.socket(zmq.PUSH)
    push.connect(endpoint)
    period = [1.0 / (step_rate * rng.uniform(0.995, 1.005)) for _ in range(streams)]
    started = time.monotonic() + 0.2
    due = [started + rng.uniform(0.0, period[i]) for i in range(streams)]
    seq = [0] * streams
    # A few distinct embeddings per stream, so the GRU sees inputs that move.
    embeddings = noise.normal(size=(streams, 8, 1280)).astype(np.float32)
    stats = noise.uniform(size=(streams, 8, STATS_DIM)).astype(np.float32)
    while True:
        i = min(range(streams), key=due.__getitem__)
        now = time.monotonic()
        if now - started > seconds:
            break
        if due[i] > now:
            time.sleep(due[i] - now)
        wall = time.time()
        header = EmbeddingHeader(f"cam{i}", seq[i], seq[i] / step_rate, wall, int(Flags.START) if seq[i] == 0 else 0,
                                 wall, 1280, STATS_DIM, live=True)
        push.send(encode_embedding(header, embeddings[i, seq[i] % 8], stats[i, seq[i] % 8]))
        seq[i] += 1
        due[i] += period[i]
    for i in range(streams):
        wall = time.time()
        push.send(encode_embedding(EmbeddingHeader(f"cam{i}", seq[i], seq[i] / step_rate, wall, int(Flags.END), wall,
                                                   0, 0, reason="stopped", live=True), None, None))
    push.close(linger=5000)
    context.term()


def _cpu_by_thread() -> Counter:
    """CPU seconds of each of this process's threads so far, by name (Python's names where it has them,
    the kernel's otherwise: ZeroMQ names its I/O threads), read from /proc."""
    import threading

    names = {t.native_id: t.name for t in threading.enumerate()}
    ticks = os.sysconf("SC_CLK_TCK")
    spent: Counter = Counter()
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/comm") as comm, open(f"/proc/self/task/{tid}/stat") as stat:
                name = names.get(int(tid)) or comm.read().strip()
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:  # the thread ended meanwhile
            continue
        spent[name] += (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
    return spent


class _PartTimes:
    """The worker thread's CPU in each part of the worker's work, timed by wrapping the part's callable
    on the instance (the worker module's message decoder: on the module, put back by :meth:`restore`)."""

    def __init__(self, counting: list) -> None:
        self.spent: Counter = Counter()
        self._counting = counting
        self._restore: list = []

    def wrap(self, owner, name: str, part: str) -> None:
        original = getattr(owner, name)

        def timed(*args, **kwargs):
            begun = time.thread_time()
            try:
                return original(*args, **kwargs)
            finally:
                if self._counting[0]:
                    self.spent[part] += time.thread_time() - begun

        setattr(owner, name, timed)
        self._restore.append((owner, name, original))

    def restore(self) -> None:
        for owner, name, original in reversed(self._restore):
            setattr(owner, name, original)

    def per_round(self, rounds: int, gru_cpu_s: float) -> dict[str, float]:
        spent = dict(self.spent)
        spent["state table, beside the GRU"] = spent.pop("state table, with the GRU", 0.0) - gru_cpu_s
        return {part: round(1000 * seconds / rounds, 3) for part, seconds in spent.items()}


def _time_parts(worker, table, counting: list) -> _PartTimes:
    from pipeline.stages.temporal import worker as worker_module

    parts = _PartTimes(counting)
    parts.wrap(worker, "_receive", "receiving (poll, receive, parse, reorder)")
    parts.wrap(worker_module, "decode_embedding", "of which parsing")
    parts.wrap(table, "step", "state table, with the GRU")
    parts.wrap(worker, "_after_step", "after each step (detector, metrics, tallies)")
    parts.wrap(worker, "_housekeeping", "housekeeping")
    if worker._snapshots is not None:
        parts.wrap(worker._snapshots, "tick", "taking snapshots")
    return parts


def temporal_cost(model: Path, streams: int = 32, seconds: float = 20.0, warmup_s: float = 3.0,
                  temporal: dict | None = None, profile_to: Path | None = None, time_parts: bool = False) -> dict:
    """Run the worker against ``streams`` cameras; CPU per round and per stream-step, the GRU's share.
    ``profile_to``: cProfile statistics of the measured seconds (not the start-up) are written there.
    ``time_parts``: also the worker thread's CPU in each part of its work, per round (timing them costs
    a little CPU of its own, so the other figures of such a run read a few percent high)."""
    import torch
    import zmq

    from engines.temporal_head import load_head
    from pipeline.config import EventsConfig, OutputsConfig, TemporalConfig, events_for_model
    from pipeline.events import ActionEventDetector
    from pipeline.metrics import StageMetrics
    from pipeline.outputs.sinks import SinkFanOut
    from pipeline.stages.settings import TemporalSettings
    from pipeline.stages.temporal.process import durable_state
    from pipeline.stages.temporal.reorder import ReorderBuffer
    from pipeline.stages.temporal.state_table import StreamStateTable
    from pipeline.stages.temporal.worker import TemporalWorker

    scratch = Path(tempfile.mkdtemp(prefix="temporal-cost-"))
    os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", str(scratch / "metrics"))
    Path(os.environ["PROMETHEUS_MULTIPROC_DIR"]).mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    head, checkpoint_events = load_head(model)
    cfg = TemporalConfig(**(temporal or {}))
    settings = TemporalSettings(stage="temporal", control_endpoint="", parent_pid=os.getpid(), run_dir=str(scratch),
                                model_path=str(model), temporal=cfg,
                                events=events_for_model(EventsConfig(), checkpoint_events),
                                outputs=OutputsConfig(stdout=False), in_endpoint="", state_folder=str(scratch / "state"))
    metrics = StageMetrics.create()
    table = StreamStateTable(head, cfg.capacity, cfg.idle_timeout_s)
    snapshots, _ = durable_state(settings, head, table, metrics)
    context = zmq.Context()
    endpoint = f"ipc://{scratch / ENDPOINT_NAME}"
    pull = context.socket(zmq.PULL)
    pull.bind(endpoint)
    worker = TemporalWorker(settings, table, ReorderBuffer(cfg.replay_reorder_window, cfg.replay_reorder_timeout_s,
                                                           first_seq=0),
                            ActionEventDetector(head.config.classes, settings.events.hysteresis()), pull,
                            SinkFanOut([], metrics), None, head.config.classes, metrics,
                            live_reorder=ReorderBuffer(cfg.reorder_window, cfg.reorder_timeout_s, first_seq=0),
                            snapshots=snapshots)
    gru = {"cpu_s": 0.0, "rounds": Counter()}
    step = head.step
    counting = [False]

    def timed_step(*args, **kwargs):
        begun = time.thread_time()
        out = step(*args, **kwargs)
        if counting[0]:
            gru["cpu_s"] += time.thread_time() - begun
            gru["rounds"][len(args[0])] += 1
        return out

    head.step = timed_step
    parts = _time_parts(worker, table, counting) if time_parts else None
    producer = multiprocessing.get_context("spawn").Process(
        target=_produce, args=(endpoint, streams, warmup_s + seconds, head.config.step_rate_hz, streams), daemon=True)
    producer.start()
    try:
        began = time.monotonic()
        while time.monotonic() - began < warmup_s + 0.2:
            worker.work(False)
        steps_before = sum(t.processed for t in worker.tallies.values())
        counting[0] = True
        profiler = cProfile.Profile() if profile_to is not None else None
        if profiler is not None:
            profiler.enable()
        usage, threads = resource.getrusage(resource.RUSAGE_SELF), _cpu_by_thread()
        cpu, wall, main_thread = time.process_time(), time.monotonic(), time.thread_time()
        while time.monotonic() - wall < seconds:
            worker.work(False)
        cpu, wall, main_thread = time.process_time() - cpu, time.monotonic() - wall, time.thread_time() - main_thread
        kernel_s = resource.getrusage(resource.RUSAGE_SELF).ru_stime - usage.ru_stime
        threads = _cpu_by_thread() - threads
        counting[0] = False
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(str(profile_to))
        steps = sum(t.processed for t in worker.tallies.values()) - steps_before
    finally:
        producer.join(timeout=10)
        if producer.is_alive():
            producer.kill()
        if snapshots is not None:
            snapshots.close(table, worker._detector, worker._position_of)
        pull.close(linger=0)
        context.term()
        if parts is not None:
            parts.restore()
    rounds = sum(gru["rounds"].values())
    latencies = np.concatenate([np.asarray(t.latencies) for t in worker.tallies.values() if t.latencies])
    return {"streams": streams, "seconds": round(wall, 1), "stream_steps": steps, "rounds": rounds,
            "streams_per_round": steps / rounds if rounds else None,
            "worker_cpu_ms_per_round": 1000 * cpu / rounds if rounds else None,
            "gru_cpu_ms_per_round": 1000 * gru["cpu_s"] / rounds if rounds else None,
            "worker_cpu_us_per_stream_step": 1e6 * cpu / steps if steps else None,
            "worker_over_gru": cpu / gru["cpu_s"] if gru["cpu_s"] else None,
            "worker_thread_cpu_ms_per_round": 1000 * main_thread / rounds if rounds else None,
            "cpu_ms_per_round_by_thread": {name: round(1000 * spent / rounds, 3) for name, spent in threads.items()}
            if rounds else None,
            "cpu_ms_per_round_by_part": parts.per_round(rounds, gru["cpu_s"]) if parts is not None and rounds else None,
            "kernel_share_of_worker_cpu": kernel_s / cpu if cpu else None, "cores_busy": cpu / wall,
            "latency_p99_ms": float(np.percentile(latencies, 99) * 1000)}


def temporal_cost_in_subprocess(streams: int, seconds: float, round_wait_ms: float) -> dict:
    """:func:`temporal_cost` in a process of its own (its PyTorch threads and metrics folder stay there)."""
    import json
    import subprocess
    import sys

    from engines.factory import REPO_ROOT

    proc = subprocess.run([sys.executable, "-m", "tools.bench.temporal_cost", "--streams", str(streams),
                           "--seconds", str(seconds), "--round-wait-ms", str(round_wait_ms)],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=seconds + 120)
    if proc.returncode != 0:
        raise RuntimeError(f"tools.bench.temporal_cost failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return {**json.loads(proc.stdout), "round_wait_ms": round_wait_ms}


def main(argv: list[str] | None = None) -> int:
    import argparse
    import json

    from tools.bench.paths import MODEL

    parser = argparse.ArgumentParser(prog="python -m tools.bench.temporal_cost", description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--round-wait-ms", type=float, default=None, help="default: temporal.round_wait_ms's")
    parser.add_argument("--profile", type=Path, help="write cProfile statistics of the measured seconds here "
                                                     "(python -m pstats FILE to read them; the figures then include "
                                                     "the profiler's own cost)")
    parser.add_argument("--parts", action="store_true", help="also time each part of the worker thread's work")
    args = parser.parse_args(argv)
    overrides = {} if args.round_wait_ms is None else {"round_wait_ms": args.round_wait_ms}
    print(json.dumps(temporal_cost(MODEL, args.streams, args.seconds, temporal=overrides, profile_to=args.profile,
                                     time_parts=args.parts),
                     indent=1))
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
