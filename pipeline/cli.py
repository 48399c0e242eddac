"""The command line: ``run_pipeline.py ...`` and ``actionpipe run ...`` (the same options).

    python run_pipeline.py --config configs/demo.yaml
    python run_pipeline.py --source video.mp4 --source yard=rtsp://cam/stream [--fast] [--loop]
                           [--events-out events.jsonl] [--scores-out scores.jsonl]
    python run_pipeline.py --serve          # no sources yet: add them through the control API
    actionpipe run --source video.mp4       # the console script, once the package is installed

Prints each action start/end as it happens, serves Prometheus metrics and the
control API while it runs, and ends with a summary per stream.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

# Only light imports here: the stage processes never import this module, but
# keeping PyTorch out of the command line keeps start-up and --help fast.
from pipeline.config import load_config, validate_config
from pipeline.errors import ActionPipeError, ConfigError
from pipeline.sources.uri import source_entry

EXIT_STATUS = ("Exit status, however the run ended (by itself, or stopped and drained): 0 it did its job, no "
               "stream failed and no output lost anything; 1 a stage could not run, every stream failed, or a "
               "second stop request cut the drain short; 2 a bad command line or configuration; 3 some streams "
               "failed, or an output or the overlay video lost records. SIGINT, SIGTERM and SIGHUP drain; the "
               "same signal again within supervision.double_signal_window_s is the same request, later it "
               "stops at once.")


def _parser(prog: str = "run_pipeline.py") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description="Run the streaming action-detection pipeline.",
                                epilog=EXIT_STATUS)
    p.add_argument("--config", type=Path, help="YAML config (see configs/example.yaml)")
    p.add_argument("--source", action="append", default=[], metavar="[NAME=]URI",
                   help="video file, image folder, camera index or /dev/videoN, rtsp:// or http(s):// URL; "
                        "NAME= gives the stream its name (repeatable)")
    p.add_argument("--model", type=Path, help="head checkpoint (default: the demo model)")
    p.add_argument("--fast", action="store_true", help="replay recorded sources as fast as possible, not at real-time pace")
    p.add_argument("--loop", action="store_true", help="replay recorded sources in a loop until stopped")
    p.add_argument("--events-out", type=Path, help="write events as JSON lines")
    p.add_argument("--scores-out", type=Path, help="write per-step scores (the format tools.evaluate reads)")
    p.add_argument("--embed-workers", type=int, help="embed worker processes")
    p.add_argument("--capture-workers", type=int, help="capture worker processes (each serves many streams)")
    p.add_argument("--engine", help="embedding backend: auto, onnxruntime, torch, ...")
    p.add_argument("--precision", choices=("fp32", "fp16", "int8"),
                   help="the engine's precision (engine.precision); other than fp32: judge the head on it first")
    p.add_argument("--metrics-port", type=int, help="Prometheus port (0: any free port)")
    p.add_argument("--no-metrics", action="store_true", help="do not serve Prometheus metrics")
    p.add_argument("--control-port", type=int, help="control API port (0: any free port)")
    p.add_argument("--no-control", action="store_true", help="do not serve the control API")
    p.add_argument("--overlay-out", type=Path, metavar="DIR",
                   help="write an annotated H.264 video per stream (frame, class bars, active actions, time) to DIR")
    p.add_argument("--live-port", type=int, metavar="PORT",
                   help="serve the live page (streams, latest annotated frames, actions, events) on PORT "
                        "(loopback; 0: any free port)")
    p.add_argument("--serve", action="store_true",
                   help="keep running when every stream has ended, taking new ones from the control API")
    p.add_argument("--no-restore", action="store_true",
                   help="start every stream fresh: do not continue streams from their snapshots (state.restore)")
    p.add_argument("--log-level", choices=("debug", "info", "warning", "error"), help="default: info")
    p.add_argument("--quiet", action="store_true", help="no event lines on stdout")
    p.add_argument("--summary-json", type=Path, help="also write the end-of-run summary as JSON")
    return p


def build_config(args: argparse.Namespace):
    if args.config and args.source:
        raise ConfigError("give either --config or --source, not both")
    if args.config:
        data = load_config(args.config).model_dump(exclude_unset=True)
        origin = str(args.config)
    elif args.source or args.serve:
        data = {"sources": [source_entry(arg) for arg in args.source]}
        origin = "command line"
    else:
        raise ConfigError("nothing to run: give --config FILE, at least one --source URI, or --serve "
                          "to take streams from the control API")
    overrides = {
        ("model",): args.model,
        ("replay", "realtime"): False if args.fast else None,
        ("replay", "loop"): True if args.loop else None,
        ("outputs", "events_jsonl"): args.events_out,
        ("outputs", "scores_jsonl"): args.scores_out,
        ("outputs", "stdout"): False if args.quiet else None,
        ("engine", "workers"): args.embed_workers,
        ("capture", "workers"): args.capture_workers,
        ("engine", "backend"): args.engine,
        ("engine", "precision"): args.precision,
        ("metrics", "port"): args.metrics_port,
        ("metrics", "enabled"): False if args.no_metrics else None,
        ("control", "port"): args.control_port,
        ("control", "enabled"): False if args.no_control else None,
        ("control", "keep_running"): True if args.serve else None,
        ("overlay", "out_dir"): args.overlay_out,
        ("live_page", "enabled"): True if args.live_port is not None else None,
        ("live_page", "port"): args.live_port,
        ("logging", "level"): args.log_level,
        ("state", "restore"): False if args.no_restore else None,
    }
    for keys, value in overrides.items():
        if value is None:
            continue
        target = data
        for key in keys[:-1]:
            target = target.setdefault(key, {})
        target[keys[-1]] = value
    return validate_config(data, origin)


def print_summary(summary, out=sys.stdout) -> None:
    note = " (stopped: sources stopped early, what was read was processed)" if summary.interrupted else ""
    out.write(f"\n== summary{note}\n")
    header = (f"{'stream':<20} {'state':<8} {'captured':>8} {'processed':>9} {'dropped':<30} {'events':>6} "
              f"{'steps/s':>7} {'p50 ms':>7} {'p99 ms':>7}")
    out.write(header + "\n")
    for name, row in summary.streams.items():
        dropped = ", ".join(f"{k}={v}" for k, v in sorted(row["dropped"].items())) or "-"
        rate = f"{row['step_rate_hz']:.2f}" if row.get("step_rate_hz") else "-"
        p50 = f"{row['latency_p50_s'] * 1000:.0f}" if row.get("latency_p50_s") is not None else "-"
        p99 = f"{row['latency_p99_s'] * 1000:.0f}" if row.get("latency_p99_s") is not None else "-"
        out.write(f"{name:<20} {row['state']:<8} {row.get('captured', 0):>8} {row['processed']:>9} {dropped:<30} "
                  f"{row['events']:>6} {rate:>7} {p50:>7} {p99:>7}\n")
    for name, row in summary.streams.items():
        if row["state"] == "failed":
            out.write(f"stream {name} failed: {row['error']}\n")
    restored = {name: row["restored"] for name, row in summary.streams.items() if row.get("restored")}
    if restored:
        out.write("state restored: " + ", ".join(f"{name} ({', '.join(f'{k}={v}' for k, v in sorted(r.items()))})"
                                                  for name, r in restored.items()) + "\n")
    refused = {name: row["restore_refused"] for name, row in summary.streams.items() if row.get("restore_refused")}
    if refused:
        out.write("state not restored: " + ", ".join(
            f"{name} ({', '.join(f'{k}={v}' for k, v in sorted(r.items()))})" for name, r in refused.items()) + "\n")
    if summary.restarts:
        out.write("stage restarts: " + ", ".join(f"{k}={v}" for k, v in sorted(summary.restarts.items())) + "\n")
    for sink, row in summary.outputs.items():
        if not (row["delivered"] or row["errors"] or row["dropped"] or row.get("spooled")):
            continue  # a file, stdout or the overlay that took every record: nothing to say
        dropped = ", ".join(f"{k}={v}" for k, v in row["dropped"].items())
        spooled = f", spooled for the next run {row['spooled']}" if row.get("spooled") else ""
        out.write(f"output {sink}: delivered {row['delivered']}, failed {row['errors']}, "
                  f"dropped {sum(row['dropped'].values())}{f' ({dropped})' if dropped else ''}{spooled}\n")
    for line in summary.losses:
        out.write(f"lost: {line}\n")
    out.flush()


def summary_json(summary) -> str:
    return json.dumps({"streams": summary.streams, "engines": summary.engines, "exit_code": summary.exit_code,
                       "failure": summary.failure, "restarts": summary.restarts, "interrupted": summary.interrupted,
                       "outputs": summary.outputs, "losses": summary.losses}, indent=2)


def main(argv=None, prog: str = "run_pipeline.py") -> int:
    args = _parser(prog).parse_args(argv)
    from pipeline.logs import setup_logging
    from pipeline.supervision.preflight import check_writable_file
    from pipeline.supervision.supervisor import Supervisor, install_signal_handlers

    try:
        config = build_config(args)
        setup_logging(config.logging.level, "supervisor")
        if args.summary_json:  # found now, not after the run it would describe
            check_writable_file(args.summary_json, "--summary-json")

        def ready(url):
            print(f"pipeline running: {len(config.sources)} stream(s); "
                  + (f"Prometheus metrics at {url}" if url else "metrics off")
                  + (f"; control API at {supervisor.control_url}" if supervisor.control_url else "")
                  + (f"; live page at {supervisor.live_url}" if supervisor.live_url else ""), flush=True)

        supervisor = Supervisor(config, on_ready=ready)
        install_signal_handlers(supervisor)
        summary = supervisor.run()
    except (ActionPipeError, OSError) as exc:  # ours name the input and what to do; the machine's, the file
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_status if isinstance(exc, ActionPipeError) else 1
    print_summary(summary)
    if summary.failure:
        print(f"error: {summary.failure}", file=sys.stderr)
    if args.summary_json:
        try:
            args.summary_json.write_text(summary_json(summary))
        except OSError as exc:  # checked before the run; the disk or the folder changed since
            print(f"error: --summary-json: {args.summary_json} cannot be written: {exc.strerror}", file=sys.stderr)
            return summary.exit_code or 1
    return summary.exit_code


CONSOLE_USAGE = """usage: actionpipe COMMAND [options]

commands:
  run      run the pipeline (the options of run_pipeline.py; actionpipe run --help)
  cluster  run it on a Ray cluster: start, add, drain, table, stop (actionpipe cluster --help; needs the
           cluster extra: pip install -e ".[cluster]")
"""


def console(argv=None) -> int:
    """``actionpipe``: the installed console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(CONSOLE_USAGE, end="")
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command == "run":
        return main(rest, prog="actionpipe run")
    if command == "cluster":
        from pipeline.cluster.commands import main as cluster_main

        return cluster_main(rest)
    print(f"actionpipe: unknown command {command!r}\n{CONSOLE_USAGE}", end="", file=sys.stderr)
    return 2
