"""``actionpipe cluster ...``: the coordinator on a running Ray cluster, from the command line.

    actionpipe cluster start --config configs/cluster.example.yaml [--address auto]
    actionpipe cluster add [NAME=]URI [--needs GPU=1] [--mode live]
    actionpipe cluster drain NODE
    actionpipe cluster table
    actionpipe cluster stop [--keep-cells]

Each command connects to the Ray cluster (``--address``, default ``auto``: the one this machine is part
of, as ``ray start`` left it) and talks to the coordinator, a named detached actor that outlives the
command. ``start`` makes it (on this machine's node) and waits until a cell is ready on every node that
can run one. Ray is imported here and only here on the command line: ``actionpipe run`` never does.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from pipeline.cluster.config import ClusterConfig, load_cluster_config
from pipeline.errors import ActionPipeError, ConfigError
from pipeline.sources.uri import source_entry

START_TIMEOUT_S = 180.0
HEAD_RESOURCE = "node:__internal_head__"  # Ray gives this resource to the head node only


class ClusterCommandError(ActionPipeError, RuntimeError):
    """A cluster command that cannot be carried out (no Ray, no coordinator, a refusal)."""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="actionpipe cluster", description="Run the pipeline on a Ray cluster.")
    p.add_argument("--address", default="auto", help="the Ray cluster (default: auto, the one this machine joined)")
    sub = p.add_subparsers(dest="command", required=True)
    start = sub.add_parser("start", help="start the coordinator and a cell on every node")
    start.add_argument("--config", type=Path, required=True, help="cluster YAML (configs/cluster.example.yaml)")
    start.add_argument("--timeout", type=float, default=START_TIMEOUT_S, help="seconds to wait for the cells")
    add = sub.add_parser("add", help="add a stream; the coordinator places it")
    add.add_argument("source", metavar="[NAME=]URI")
    add.add_argument("--needs", action="append", default=[], metavar="RESOURCE=AMOUNT",
                     help="a Ray resource the node must have (repeatable), e.g. GPU=1 or site_dock=1")
    add.add_argument("--mode", choices=("auto", "live", "replay"), help="as a source's mode")
    drain = sub.add_parser("drain", help="move every stream off a node, each snapshotted at a step boundary")
    drain.add_argument("node")
    sub.add_parser("table", help="the nodes and the streams placed on them")
    stop = sub.add_parser("stop", help="drain and stop every cell, then the coordinator")
    stop.add_argument("--keep-cells", action="store_true", help="stop only the coordinator; the cells run on")
    return p


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    try:
        return _run(args)
    except (ActionPipeError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_status if isinstance(exc, ActionPipeError) else 1


def _run(args: argparse.Namespace) -> int:
    config = None
    if args.command == "start":
        config = load_cluster_config(args.config)
    ray = _connect(args.address, config.namespace if config else "actionpipe")
    if args.command == "start":
        coordinator = start_coordinator(ray, config)
        url = wait_for_cells(ray, coordinator, args.timeout)
        print(f"cluster running: coordinator API at {url}")
        return 0
    coordinator = _coordinator(ray)
    if args.command == "add":
        source = {**source_entry(args.source), "needs": _needs(args.needs)}
        if args.mode:
            source["mode"] = args.mode
        print(json.dumps(_call(ray, coordinator.add_stream.remote(source)), indent=1))
    elif args.command == "drain":
        print(json.dumps(_call(ray, coordinator.drain.remote(args.node)), indent=1))
    elif args.command == "table":
        print_table(_call(ray, coordinator.nodes.remote()), _call(ray, coordinator.streams.remote()))
    elif args.command == "stop":
        stopped = _call(ray, coordinator.shutdown.remote(not args.keep_cells), timeout_s=300)
        ray.kill(coordinator, no_restart=True)
        print(f"cluster stopped: {json.dumps(stopped)}")
    return 0


def _connect(address: str, namespace: str):
    try:
        import ray
    except ImportError:
        raise ClusterCommandError('Ray is not installed: pip install -e ".[cluster]" (every node the same Ray '
                                  "and Python)") from None
    try:
        ray.init(address=address, namespace=namespace, log_to_driver=False, logging_level="WARNING")
    except (ConnectionError, RuntimeError) as exc:
        raise ClusterCommandError(f"no Ray cluster at {address}: {exc} (ray start --head on the first machine, "
                                  "ray start --address HEAD:6379 on the others)") from None
    return ray


def start_coordinator(ray, config: ClusterConfig):
    """The coordinator actor: named, detached, restarted by Ray whenever it dies, on the head node (where
    Ray's GCS is: a cell node lost must not take the coordinator with it)."""
    from pipeline.cluster.coordinator import COORDINATOR_NAME, Coordinator

    return ray.remote(Coordinator).options(
        name=COORDINATOR_NAME, namespace=config.namespace, lifetime="detached", get_if_exists=True,
        max_restarts=-1, max_task_retries=-1, num_cpus=0, max_concurrency=8,
        resources={HEAD_RESOURCE: 0.001},
    ).remote(config.model_dump(mode="json"))


def wait_for_cells(ray, coordinator, timeout_s: float) -> str:
    """Until every node that can run a cell has a ready one; the coordinator's API address."""
    deadline = time.monotonic() + timeout_s
    while True:
        nodes = _call(ray, coordinator.nodes.remote())
        if nodes and not any(n["state"] == "starting" for n in nodes):
            return _call(ray, coordinator.__ray_call__.remote(lambda self: self.api_url))
        if time.monotonic() > deadline:
            waiting = ", ".join(n["name"] for n in nodes if n["state"] == "starting") or "none has joined"
            raise ClusterCommandError(f"cells not ready within {timeout_s:g} s: {waiting}")
        time.sleep(0.5)


def _coordinator(ray):
    from pipeline.cluster.coordinator import COORDINATOR_NAME

    try:
        return ray.get_actor(COORDINATOR_NAME)
    except ValueError:
        raise ClusterCommandError("no coordinator runs on this cluster: actionpipe cluster start --config FILE") from None


def _call(ray, ref, timeout_s: float = 30.0):
    from ray.exceptions import RayError, RayTaskError

    try:
        return ray.get(ref, timeout=timeout_s)
    except RayTaskError as exc:  # the coordinator refused: its own error, one line
        raise ClusterCommandError(str(exc.cause) if exc.cause else str(exc)) from None
    except RayError as exc:
        raise ClusterCommandError(f"the coordinator did not answer: {exc}") from None


def _needs(items: list[str]) -> dict[str, float]:
    needs = {}
    for item in items:
        key, _, value = item.partition("=")
        try:
            needs[key] = float(value or 1)
        except ValueError:
            raise ConfigError(f"--needs {item}: give RESOURCE=AMOUNT, e.g. GPU=1") from None
    return needs


def print_table(nodes: list[dict], streams: list[dict], out=sys.stdout) -> None:
    out.write("NODE            STATE      STREAMS  METRICS\n")
    for n in nodes:
        load = f"{n.get('load', 0)}/{n.get('capacity', '?')}" if "load" in n else "-"
        out.write(f"{n['name']:<15} {n['state']:<10} {load:<8} {n.get('metrics', '')}\n")
    out.write("\nSTREAM          STATE      NODE            GENERATION  STATE ORIGIN\n")
    for s in streams:
        out.write(f"{s['name']:<15} {s['state']:<10} {str(s.get('node') or '-'):<15} {s.get('generation') or '-'!s:<11} "
                  f"{s.get('state_origin') or ''}\n")
    out.flush()
