#!/usr/bin/env python3
"""Run the streaming action-detection pipeline.

    python run_pipeline.py --config configs/demo.yaml
    python run_pipeline.py --source video.mp4 --source rtsp://cam/stream [--fast] [--loop]
                           [--events-out events.jsonl] [--scores-out scores.jsonl]

Prints each action start/end as it happens, serves Prometheus metrics while it
runs, and ends with a summary per stream. Exits non-zero if a stage fails.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from engines.base import EngineError
from engines.temporal_head import CheckpointError
from pipeline.config import ConfigError, load_config, validate_config
from pipeline.sources import SourceError


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="run_pipeline.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", type=Path, help="YAML config (see configs/)")
    p.add_argument("--source", action="append", default=[], metavar="URI",
                   help="video file, image folder, camera index or /dev/videoN, rtsp:// or http(s):// URL (repeatable)")
    p.add_argument("--model", type=Path, help="head checkpoint (default: the demo model)")
    p.add_argument("--fast", action="store_true", help="replay recorded sources as fast as possible, not at real-time pace")
    p.add_argument("--loop", action="store_true", help="replay recorded sources in a loop until stopped")
    p.add_argument("--events-out", type=Path, help="write events as JSON lines")
    p.add_argument("--scores-out", type=Path, help="write per-step scores (the format tools.evaluate reads)")
    p.add_argument("--embed-workers", type=int, help="embed worker processes")
    p.add_argument("--engine", help="embedding backend: auto, onnxruntime, torch, ...")
    p.add_argument("--metrics-port", type=int, help="Prometheus port (0: any free port)")
    p.add_argument("--no-metrics", action="store_true", help="do not serve Prometheus metrics")
    p.add_argument("--quiet", action="store_true", help="no event lines on stdout")
    p.add_argument("--summary-json", type=Path, help="also write the end-of-run summary as JSON")
    return p


def build_config(args: argparse.Namespace):
    if args.config and args.source:
        raise ConfigError("give either --config or --source, not both")
    if args.config:
        data = load_config(args.config).model_dump(exclude_unset=True)
        source = str(args.config)
    elif args.source:
        data = {"sources": [{"uri": uri} for uri in args.source]}
        source = "command line"
    else:
        raise ConfigError("nothing to run: give --config FILE or at least one --source URI")
    overrides = {
        ("model",): args.model,
        ("replay", "realtime"): False if args.fast else None,
        ("replay", "loop"): True if args.loop else None,
        ("outputs", "events_jsonl"): args.events_out,
        ("outputs", "scores_jsonl"): args.scores_out,
        ("outputs", "stdout"): False if args.quiet else None,
        ("engine", "workers"): args.embed_workers,
        ("engine", "backend"): args.engine,
        ("metrics", "port"): args.metrics_port,
        ("metrics", "enabled"): False if args.no_metrics else None,
    }
    for keys, value in overrides.items():
        if value is None:
            continue
        target = data
        for key in keys[:-1]:
            target = target.setdefault(key, {})
        target[keys[-1]] = value
    return validate_config(data, source)


def print_summary(summary, out=sys.stdout) -> None:
    out.write("\n== summary" + (" (interrupted: sources stopped early, in-flight frames drained)" if summary.interrupted else "") + "\n")
    header = f"{'stream':<20} {'captured':>8} {'processed':>9} {'dropped':<30} {'events':>6} {'steps/s':>7} {'p50 ms':>7} {'p99 ms':>7}"
    out.write(header + "\n")
    for name, row in summary.streams.items():
        dropped = ", ".join(f"{k}={v}" for k, v in sorted(row["dropped"].items())) or "-"
        rate = f"{row['step_rate_hz']:.2f}" if row.get("step_rate_hz") else "-"
        p50 = f"{row['latency_p50_s'] * 1000:.0f}" if row.get("latency_p50_s") is not None else "-"
        p99 = f"{row['latency_p99_s'] * 1000:.0f}" if row.get("latency_p99_s") is not None else "-"
        out.write(f"{name:<20} {row.get('captured', 0):>8} {row['processed']:>9} {dropped:<30} {row['events']:>6} {rate:>7} {p50:>7} {p99:>7}\n")
    out.flush()


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    from pipeline.supervisor import PipelineError, Supervisor, install_signal_handlers

    try:
        config = build_config(args)
        def ready(url):
            print(f"pipeline running: {len(config.sources)} stream(s); "
                  + (f"Prometheus metrics at {url}" if url else "metrics off"), flush=True)

        supervisor = Supervisor(config, on_ready=ready)
        install_signal_handlers(supervisor)
        summary = supervisor.run()
    except (ConfigError, CheckpointError, EngineError, SourceError, PipelineError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, ConfigError) else 1
    print_summary(summary)
    if args.summary_json:
        args.summary_json.write_text(json.dumps({"streams": summary.streams, "engines": summary.engines}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
