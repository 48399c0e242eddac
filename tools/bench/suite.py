"""One benchmark run: for each kind of video, the stages alone, the naive loop and the pipeline in
rounds, then its profile, real-time capacity, memory and the GPU figures, as the run's result.

Throughput figures are the median of ``repeats`` rounds; each round measures decode, the naive loop
and every pipeline size once, so drift in the machine's speed hits them alike. ``ideal`` = cores /
(decode CPU-s per step + engine CPU-s per step), the engine's figure the best of a sweep of settings
timed once at the start; ``ideal_rounds`` takes instead the median of that setting timed in each round.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from tools.bench.capacity import capacity
from tools.bench.gpu import gpu_rows
from tools.bench.paths import BENCH_DIR, MODEL
from tools.bench.report import machine
from tools.bench.runs import median_of, memory_per_stream, pipeline_replay, profile_pipeline
from tools.bench.stages import (
    decode_alone,
    engine_alone,
    engine_setting,
    graph_for,
    gru_alone,
    naive_loop,
    sample_frames,
)
from tools.bench.videos import KINDS, Kind, make_videos

PARTS = ("stages", "naive", "pipeline", "profile", "capacity", "temporal", "memory", "gpu")
TEMPORAL_STREAMS = 32


@dataclass(frozen=True)
class BenchOptions:
    """What a run measures and for how long."""

    kinds: tuple[Kind, ...]
    parts: frozenset[str]
    videos: int  # per kind
    seconds: float  # length of each test video
    capacity_seconds: float  # length of each real-time trial
    repeats: int  # rounds of each throughput measurement
    quick: bool  # shorter engine and GRU measurements too
    clocks: tuple[str, ...]  # the capacity search's cameras: independent (headline), aligned
    gpu_peak_tflops: float | None
    command: str  # how the run was started, for the report
    precision: str = "fp32"  # the CPU engine's graph everywhere: the engine alone, the naive loop and the pipeline


def run_benchmark(options: BenchOptions) -> dict:
    """Measure what ``options`` asks for, printing progress; the result is what the report is written from."""
    from engines.head_config import read_head_config

    step_rate = read_head_config(MODEL).step_rate_hz
    workdir = BENCH_DIR / "runs"
    workdir.mkdir(parents=True, exist_ok=True)
    result: dict = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "command": options.command,
                    "machine": machine(), "step_rate": step_rate, "capacity_seconds": options.capacity_seconds,
                    "kinds": {}}
    for kind in options.kinds:
        print(f"== {kind.name}", flush=True)
        _measure_kind(kind, options, result, result["kinds"].setdefault(kind.name, {}), step_rate, workdir)
    if "stages" in options.parts:
        result["gru"] = gru_alone(1.0 if options.quick else 3.0)
    if "temporal" in options.parts:
        from pipeline.config import TemporalConfig
        from tools.bench.temporal_cost import temporal_cost_in_subprocess

        seconds = 10.0 if options.quick else 30.0
        result["temporal"] = [temporal_cost_in_subprocess(TEMPORAL_STREAMS, seconds, wait)
                              for wait in (0.0, TemporalConfig().round_wait_ms)]
        for row in result["temporal"]:
            print(f"  temporal worker, {TEMPORAL_STREAMS} streams, rounds waiting {row['round_wait_ms']:g} ms: "
                  f"{row['streams_per_round']:.1f} streams per round, worker/GRU CPU {row['worker_over_gru']:.2f}",
                  flush=True)
    if "gpu" in options.parts:
        result["gpu"] = gpu_rows(make_videos(KINDS["1080p30"], options.videos, options.seconds), workdir,
                                 options.capacity_seconds, options.gpu_peak_tflops, step_rate)
    if "memory" in options.parts:
        result["memory"] = memory_per_stream(make_videos(KINDS["720p25"], options.videos, options.seconds), workdir)
        print(f"  memory per added stream: {result['memory']['per_added_stream_mb']:.1f} MB", flush=True)
    return result


def _measure_kind(kind: Kind, options: BenchOptions, result: dict, r: dict, step_rate: float, workdir: Path) -> None:
    """Fill ``r`` with one kind's figures; the engine alone is measured once per run, into ``result``."""
    videos = make_videos(kind, options.videos, options.seconds)
    sections = {"engine": {"backend": "onnxruntime", "precision": options.precision}}
    engine_seconds = 2.0 if options.quick else 5.0
    if options.parts & {"stages", "pipeline", "capacity"}:
        engine_frames = sample_frames(videos[0])
        if "engine" not in result:
            result["engine"] = engine_alone(engine_frames, engine_seconds, graph_for(options.precision))
        r["engine_best"] = min(result["engine"], key=lambda e: e["cpu_s_per_frame"])
    # Each round measures everything once, so slow drift in the machine's speed hits all alike.
    rounds: dict[str, list[dict]] = {}
    for round_index in range(options.repeats):
        if options.parts & {"stages", "pipeline", "capacity"}:
            rounds.setdefault("decode", []).append(decode_alone(videos, step_rate))
            # The best of the sweep is the smallest of 15 one-off timings: timed again each round, like
            # decode, its median is what the machine gives over the run.
            rounds.setdefault("engine", []).append(engine_setting(engine_frames, engine_seconds, r["engine_best"],
                                                                  graph_for(options.precision)))
        if "naive" in options.parts:
            rounds.setdefault("naive", []).append(naive_loop(videos, step_rate, graph_for(options.precision)))
        if "pipeline" in options.parts:
            for n in (1, 2, 4, 8):
                rounds.setdefault(f"pipeline{n}", []).append(pipeline_replay(videos, n, workdir, sections))
        print(f"  round {round_index + 1}/{options.repeats}: " + ", ".join(
            f"engine {1000 * runs[-1]['cpu_s_per_frame']:.2f} ms/frame" if name == "engine" else
            f"{name} {runs[-1]['steps_per_s']:.1f}" for name, runs in rounds.items()), flush=True)
    if "decode" in rounds:
        r["decode"] = median_of(rounds["decode"])
        cores = result["machine"]["cores"]
        r["ideal_steps_per_s"] = cores / (r["decode"]["cpu_s_per_step"] + r["engine_best"]["cpu_s_per_frame"])
        # Its runs in CPU ms per frame (median_of keeps two decimals of the key, seconds here).
        r["engine_rounds"] = {**median_of(rounds["engine"], "cpu_s_per_frame"),
                              "runs": [round(1000 * e["cpu_s_per_frame"], 2) for e in rounds["engine"]]}
        r["ideal_rounds_steps_per_s"] = cores / (r["decode"]["cpu_s_per_step"]
                                                 + r["engine_rounds"]["cpu_s_per_frame"])
        print(f"  decode alone {r['decode']['steps_per_s']:.1f} steps/s; ideal {r['ideal_steps_per_s']:.1f} steps/s "
              f"({r['ideal_rounds_steps_per_s']:.1f} with the engine's median over the rounds)",
              flush=True)
    if "naive" in rounds:
        r["naive"] = median_of(rounds["naive"])
        print(f"  naive loop: {r['naive']['steps_per_s']:.1f} steps/s", flush=True)
    if "pipeline" in options.parts:
        r["pipeline"] = []
        for n in (1, 2, 4, 8):
            row = median_of(rounds[f"pipeline{n}"])
            row["vs_ideal"] = row["steps_per_s"] / r["ideal_steps_per_s"]
            row["vs_ideal_rounds"] = row["steps_per_s"] / r["ideal_rounds_steps_per_s"]
            if "naive" in r:
                row["vs_naive"] = row["steps_per_s"] / r["naive"]["steps_per_s"]
            r["pipeline"].append(row)
            print(f"  pipeline x{n}: {row['steps_per_s']:.1f} steps/s ({row['vs_ideal']:.2f} of ideal; runs "
                  f"{row['runs']}), start-up {row['startup_s']:.2f} s, shutdown {row['shutdown_s']:.2f} s", flush=True)
    if "profile" in options.parts:
        r["profile"] = profile_pipeline(videos, 4, workdir, sections)
        print("  profile (CPU ms per step): " + ", ".join(f"{k} {v:.1f}" for k, v in r["profile"]["cpu_ms_per_step"].items()),
              flush=True)
    if "capacity" in options.parts:
        ideal_streams = r["ideal_steps_per_s"] / step_rate
        for clocks in options.clocks:
            print(f"  real-time capacity, {clocks} camera clocks:", flush=True)
            key = "capacity" if clocks == "independent" else f"capacity_{clocks}"
            r[key] = capacity(videos, options.capacity_seconds, workdir, start=max(1, int(ideal_streams * 0.5)),
                              clocks=clocks, sections=sections)
