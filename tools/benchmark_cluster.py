"""Cluster mode (Ray) on this machine: a node's steps/s against the single-host pipeline, failover time, Ray's memory.

    python -m tools.benchmark_cluster [--rounds 3] [--streams 4] [--seconds 20] [--failovers 5]
                                      [--failover-streams 2] [--parts throughput failover]
                                      [--same-threads] [--json FILE] [--markdown]

Three measurements, each on a Ray cluster simulated on this machine (``tools/testbed/ray_cluster.py``:
a head with 0 CPUs and one-CPU nodes, each node a raylet of its own with its own processes):

* **Throughput.** The same ``--streams`` SynthActions replays (``--seconds`` long, 320x240, 15 fps),
  scored as fast as they go (``replay.realtime: false``), (a) by the single-host pipeline (the
  supervisor run in this process, no Ray started) and (b) by one cell in cluster mode (a simulated
  cluster with one node; the streams added through the coordinator). Steps/s is the steps scored over
  the time from the first to the last step, from the scores file's ``wall_time`` (start-up excluded).
  The order alternates over ``--rounds`` rounds; the ratio cluster/single-host of each round, and the
  median. Here a "node" is a process tree on the same cores as everything else, so the ratio is what
  the cluster's data path costs, not how it scales. Beside it, each side's CPU milliseconds per step
  (``/proc/PID/stat`` sampled every 0.2 s over the same span): the stage processes (the data path), the
  supervisor (single-host: this process) or the node agent, the coordinator and Ray's processes. On a
  machine shared with other work, steps/s also measures how much of the machine each side got (more
  threads, more of it); CPU per step much less so. ``--same-threads`` gives both sides the thread counts
  the single-host pipeline picks by itself, to tell what a difference comes from.
* **Failover.** Two nodes serving ``--failover-streams`` real-time looped replays. ``--failovers`` times:
  the node serving the most streams is killed without grace (its raylet and every process of it), the
  time from the kill to each of its streams' first step scored on a survivor is taken from the scores
  files, and a fresh node is added (and its cell waited for) so that the next round has one to lose.
  Also when Ray's node table said the node was dead, and when the coordinator's table said it was lost.
* **Footprint.** Before the first loss, every process of each node, split into Ray's own (the raylet
  and its children: dashboard agent, runtime-env agent, idle workers; on the head also the GCS server,
  the autoscaler monitor, the dashboard, the log monitor) and ours (the node agent's worker process and
  its stage processes; on the head the coordinator's worker), with their proportional set size (PSS,
  from ``/proc/PID/smaps_rollup``: shared pages split between the processes sharing them, so the sums
  add up, where RSS would count a shared library once in every process).

Ray runs in a temporary folder of its own (``RAY_TMPDIR``, unless set), so that another Ray on this
machine (a test's) and this one never share session folders. Needs the cluster extra
(``pip install -e ".[cluster]"``).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from contextlib import redirect_stdout
from datetime import datetime, timezone
from pathlib import Path

from tools.testbed.processes import Proc, descendants, parse_stat_ppid, process_table  # noqa: F401 (tests use them here)

SEED = 2026
READY_TIMEOUT_S = 120.0
END_TIMEOUT_S = 600.0
FAILOVER_TIMEOUT_S = 60.0
STEADY_STEPS = 8  # steps a moved stream scores on its new node before the next loss (a fresh snapshot)
POLL_S = 0.05
PARTS = ("throughput", "failover")
NOTE = ("every simulated node is a process tree on this machine's cores, shared with the head and with the "
        "other nodes: the throughput ratio is what cluster mode's data path costs, not how it scales")


# -- pure helpers ---------------------------------------------------------------------------------------
def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) of ``values``, interpolated linearly between the closest ranks."""
    if not values:
        raise ValueError("percentile of no values")
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"q must be within 0..100, got {q}")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summarize(values: Sequence[float]) -> dict:
    """Median, max, min and count of ``values`` (None each when there are none)."""
    if not values:
        return {"n": 0, "median": None, "max": None, "min": None}
    return {"n": len(values), "median": percentile(values, 50), "max": max(values), "min": min(values)}


def parse_smaps_rollup(text: str) -> dict[str, int]:
    """``/proc/PID/smaps_rollup``'s fields in kB (``{"Rss": 1234, "Pss": 567, ...}``); the header line skipped."""
    fields = {}
    for line in text.splitlines():
        name, sep, rest = line.partition(":")
        parts = rest.split()
        if sep and len(parts) == 2 and parts[1] == "kB" and parts[0].isdigit():
            fields[name.strip()] = int(parts[0])
    return fields


def steps_per_s(wall_times: Iterable[float]) -> dict:
    """Steps scored over the time from the first to the last of them (start-up and shutdown excluded)."""
    times = sorted(wall_times)
    if len(times) < 2 or times[-1] <= times[0]:
        return {"steps": len(times), "span_s": 0.0, "steps_per_s": None}
    span = times[-1] - times[0]
    return {"steps": len(times), "span_s": span, "steps_per_s": len(times) / span}


def process_kind(name: str) -> str:
    """A short label for a process from its command line: ``raylet``, ``ray::IDLE``, ``log_monitor.py``, a stage
    process by its stage (``capture``)..."""
    if name.startswith("ray::"):
        return name.split()[0]
    words = name.split()
    if not words:
        return "?"
    if "pipeline.stages" in words[:-1]:
        return words[words.index("pipeline.stages") + 1]
    if os.path.basename(words[0]).startswith("python"):
        script = next((w for w in words[1:] if not w.startswith("-")), "")
        return os.path.basename(script) or "python"
    return os.path.basename(words[0])


def cpu_seconds(pid: int, proc: Path = Path("/proc")) -> float | None:
    """A process's CPU time so far (user + system), from ``/proc/PID/stat``; None when it is gone."""
    try:
        fields = (proc / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


STAGES = ("capture", "embed", "temporal")


def cpu_group(kind: str) -> str:
    """Where a process's CPU is counted: a stage (the data path), the cell's agent, the coordinator, or Ray."""
    if kind in STAGES:
        return kind
    if kind.startswith("ray::NodeAgent"):
        return "agent"
    if kind.startswith("ray::Coordinator"):
        return "coordinator"
    return "ray"


class CpuSampler:
    """Every ``every_s`` seconds, on a thread: the CPU seconds of every process under ``roots()`` (the tree read
    again every ``rescan_s``), each by its group (``groups(pid, kind)``). :meth:`between` sums the CPU each group
    spent between two unix times, as near as the samples allow."""

    def __init__(self, roots: Callable[[], list[int]], groups: Callable[[int, str], str], every_s: float = 0.2,
                 rescan_s: float = 1.0) -> None:
        import threading

        self._roots, self._groups, self.every_s, self.rescan_s = roots, groups, every_s, rescan_s
        self.samples: list[tuple[float, dict[int, float]]] = []
        self.group_of: dict[int, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cpu-sampler", daemon=True)

    def __enter__(self) -> "CpuSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        scanned = 0.0
        while not self._stop.is_set():
            if time.monotonic() - scanned >= self.rescan_s:
                scanned = time.monotonic()
                table = process_table()
                for root in self._roots():
                    for pid in descendants(root, table):
                        if pid not in self.group_of and pid in table:
                            self.group_of[pid] = self._groups(pid, process_kind(table[pid].name))
            reading = {pid: cpu for pid in list(self.group_of) if (cpu := cpu_seconds(pid)) is not None}
            self.samples.append((time.time(), reading))
            self._stop.wait(self.every_s)

    def between(self, t0: float, t1: float) -> dict[str, float]:
        """CPU seconds per group from the last sample at or before ``t0`` to the first at or after ``t1`` (a process
        gone before then counts with its last reading; one first seen later, with all of its CPU)."""
        if not self.samples:
            return {}
        start = max((i for i, (t, _) in enumerate(self.samples) if t <= t0), default=0)
        end = min((i for i, (t, _) in enumerate(self.samples) if t >= t1), default=len(self.samples) - 1)
        last: dict[int, float] = {}
        for _, reading in self.samples[:end + 1]:
            last.update(reading)
        base = self.samples[start][1]
        spent: dict[str, float] = defaultdict(float)
        for pid, cpu in last.items():
            spent[self.group_of[pid]] += cpu - base.get(pid, 0.0)
        return dict(spent)


def cpu_per_step(spent: dict[str, float], steps: int) -> dict:
    """CPU milliseconds per step of each group, of the stages together (the data path) and of everything."""
    if steps <= 0:
        return {}
    per = {group: 1000 * seconds / steps for group, seconds in sorted(spent.items())}
    return {"groups": {k: round(v, 3) for k, v in per.items()},
            "stages": sum(v for k, v in per.items() if k in STAGES), "all": sum(per.values())}


def pss_kb(pid: int, proc: Path = Path("/proc")) -> int | None:
    """A process's PSS in kB (None when it is gone or unreadable)."""
    try:
        return parse_smaps_rollup((proc / str(pid) / "smaps_rollup").read_text()).get("Pss")
    except OSError:
        return None


def footprint_of(pids: Iterable[int], table: dict[int, Proc]) -> dict:
    """Count and PSS (MB) of ``pids``, and per kind of process."""
    total, count, kinds = 0, 0, defaultdict(lambda: {"processes": 0, "pss_mb": 0.0})
    for pid in pids:
        kb = pss_kb(pid)
        if kb is None:
            continue
        count += 1
        total += kb
        kind = kinds[process_kind(table[pid].name) if pid in table else "?"]
        kind["processes"] += 1
        kind["pss_mb"] += kb / 1024
    return {"processes": count, "pss_mb": total / 1024,
            "kinds": {k: {**v, "pss_mb": round(v["pss_mb"], 1)} for k, v in sorted(kinds.items())}}


# -- the runs ---------------------------------------------------------------------------------------------
def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _wait(condition: Callable[[], object], timeout_s: float, what: str, every_s: float = 0.2):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every_s)
    raise TimeoutError(f"timed out after {timeout_s:g} s waiting for {what}")


def _videos(root: Path, count: int, seconds: float) -> list[Path]:
    from tools.synthactions.dataset import write_dataset

    write_dataset(root, count=count, seed=SEED, sizes=(320, 240), fps=15.0, duration_range=(seconds, seconds),
                  progress=False)
    return sorted((root / "videos").glob("*.mp4"))


def _base_pipeline(scores: str, realtime: bool, loop: bool = False, pinned: dict | None = None) -> dict:
    """The pipeline both sides run: the demo head, nothing on fixed ports, scores to ``scores``; ``pinned``:
    settings given explicitly (``--same-threads``)."""
    from tools.bench.paths import MODEL

    base = {"model": str(MODEL), "replay": {"realtime": realtime, "loop": loop}, "metrics": {"port": 0},
            "control": {"port": 0}, "outputs": {"stdout": False, "scores_jsonl": scores},
            "logging": {"level": "warning"}}
    return {**base, **(pinned or {})}


def same_threads(streams: int) -> dict:
    """The thread counts the single-host pipeline picks by itself for ``streams`` replays, given explicitly: FFmpeg's
    threads per stream (a cell's config has no sources to count, so a cell picks as for none: FFmpeg's own count)
    and ONNX Runtime's intra-op threads (the cores: its default here, pinned too in case Ray's OMP_NUM_THREADS=1,
    which the stage processes inherit, moved it; on this machine it does not)."""
    from pipeline.supervision.limits import decoder_threads_for, machine_facts

    cores = machine_facts().cpu_count
    return {"capture": {"decoder_threads": decoder_threads_for(streams, 1, cores)}, "engine": {"threads": cores}}


def _sources(videos: list[Path], prefix: str = "s") -> list[dict]:
    return [{"uri": str(video), "name": f"{prefix}{i}"} for i, video in enumerate(videos)]


def single_host_run(videos: list[Path], workdir: Path, pinned: dict | None = None) -> dict:
    """The single-host pipeline (its supervisor in this process) on ``videos``, as fast as they go."""
    from pipeline.config import validate_config
    from pipeline.scores import read_scores
    from pipeline.supervision.supervisor import Supervisor

    workdir.mkdir(parents=True, exist_ok=True)
    scores = workdir / "scores.jsonl"
    base = _base_pipeline(str(scores), realtime=False, pinned=pinned)
    config = validate_config({**base, "sources": _sources(videos)}, "benchmark_cluster single-host")
    load = os.getloadavg()[0]
    me = os.getpid()
    began = time.time()
    with CpuSampler(lambda: [me], lambda pid, kind: "supervisor" if pid == me else cpu_group(kind)) as sampler:
        Supervisor(config).run()
    ended = time.time()
    steps = read_scores(scores)
    result = steps_per_s(s.wall_time for s in steps)
    walls = [s.wall_time for s in steps]
    cpu = cpu_per_step(sampler.between(min(walls), max(walls)), len(walls)) if walls else {}
    return {**result, "startup_s": min(walls) - began if walls else None, "wall_s": ended - began,
            "load_before": load, "cpu_ms_per_step": cpu}


def start_coordinator_on_head(ray, config):
    """The coordinator as ``pipeline.cluster.commands.start_coordinator`` makes it, but held to this process's
    node, the head (``soft=False``). start_coordinator asks for this node softly, and Ray 2.60 often puts the
    actor on a cell node anyway; losing that node would then lose the coordinator too, which is not what the
    failover figures are about (the head runs no cell: it holds Ray's GCS and the coordinator)."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from pipeline.cluster.coordinator import COORDINATOR_NAME, Coordinator

    here = ray.get_runtime_context().get_node_id()
    return ray.remote(Coordinator).options(
        name=COORDINATOR_NAME, namespace=config.namespace, lifetime="detached", get_if_exists=True,
        max_restarts=-1, max_task_retries=-1, num_cpus=0, max_concurrency=8,
        scheduling_strategy=NodeAffinitySchedulingStrategy(here, soft=False),
    ).remote(config.model_dump(mode="json"))


class ClusterRun:
    """A simulated cluster of ``cells`` nodes with the coordinator running ``pipeline``; closed on exit."""

    def __init__(self, cells: int, pipeline: dict, workdir: Path, pin_cores: bool = True) -> None:
        self.cells, self.pipeline, self.workdir = cells, pipeline, workdir
        self.pin_cores = pin_cores

    def __enter__(self) -> "ClusterRun":
        import ray

        from pipeline.cluster.commands import wait_for_cells
        from pipeline.cluster.config import ClusterConfig
        from tools.testbed.ray_cluster import simulated_cluster

        self.ray = ray
        self._context = simulated_cluster(cells=self.cells, pin_cores=self.pin_cores)
        began = time.time()
        self.world = self._context.__enter__()
        try:
            config = ClusterConfig(pipeline=self.pipeline, state_dir=self.workdir / "state", api={"port": 0},
                                   log_level="warning")
            self.coordinator = start_coordinator_on_head(ray, config)
            wait_for_cells(ray, self.coordinator, READY_TIMEOUT_S)
        except BaseException:
            self._context.__exit__(*sys.exc_info())
            raise
        self.ready_after_s = time.time() - began
        return self

    def __exit__(self, *exc) -> None:
        try:
            self.ray.get(self.coordinator.shutdown.remote(True), timeout=180)
            self.ray.kill(self.coordinator, no_restart=True)
        except Exception as error:  # the cluster goes anyway
            _log(f"  (the coordinator did not stop cleanly: {error})")
        finally:
            self._context.__exit__(*exc)

    def rows(self) -> dict[str, dict]:
        return {row["name"]: row for row in self.ray.get(self.coordinator.streams.remote(), timeout=30)}

    def nodes(self) -> dict[str, dict]:
        return {row["name"]: row for row in self.ray.get(self.coordinator.nodes.remote(), timeout=30)}

    def add(self, sources: list[dict]) -> None:
        for source in sources:
            self.ray.get(self.coordinator.add_stream.remote(source), timeout=30)


def cluster_run(videos: list[Path], workdir: Path, pinned: dict | None = None) -> dict:
    """One cell in cluster mode on ``videos``, as fast as they go: that node's scores file, first to last step."""
    from pipeline.scores import read_scores
    from tools.testbed.ray_cluster import cell_name

    out = workdir / "out"
    sources = _sources(videos)
    # Unpinned: the one node has every core, as the single-host pipeline it is compared with.
    with ClusterRun(1, _base_pipeline(f"{out}/{{node}}/scores.jsonl", realtime=False, pinned=pinned), workdir,
                    pin_cores=False) as run:
        node = cell_name(run.world.cells[0])
        load = os.getloadavg()[0]
        names = {s["name"] for s in sources}
        with CpuSampler(lambda: _ray_roots(run), lambda pid, kind: cpu_group(kind)) as sampler:
            run.add(sources)
            _wait(lambda: all(run.rows().get(n, {}).get("state") == "ended" for n in names), END_TIMEOUT_S,
                  "every replay to end", every_s=0.5)
        walls = [s.wall_time for s in read_scores(out / node / "scores.jsonl") if s.stream in names]
        cpu = cpu_per_step(sampler.between(min(walls), max(walls)), len(walls)) if walls else {}
        return {**steps_per_s(walls), "startup_s": run.ready_after_s, "load_before": load, "cpu_ms_per_step": cpu}


def throughput(videos: list[Path], rounds: int, workdir: Path, pinned: dict | None = None) -> dict:
    """``rounds`` rounds of both, the order alternating; per round the ratio cluster/single-host."""
    results = []
    for i in range(rounds):
        order = ("single_host", "cluster") if i % 2 == 0 else ("cluster", "single_host")
        result = {"order": list(order)}
        for side in order:
            _log(f"throughput round {i + 1}/{rounds}: {side.replace('_', '-')} ...")
            run = single_host_run if side == "single_host" else cluster_run
            result[side] = run(videos, workdir / f"round{i + 1}-{side}", pinned)
            cpu = result[side]["cpu_ms_per_step"]
            _log(f"  {result[side]['steps']} steps, {result[side]['steps_per_s']:.1f} steps/s, CPU ms per step: "
                 f"stages {cpu.get('stages', 0):.2f}, all {cpu.get('all', 0):.2f}")
        single, cluster = result["single_host"], result["cluster"]
        result["ratio"] = cluster["steps_per_s"] / single["steps_per_s"]
        # Steps per CPU second, cluster/single-host: less moved by other work on the machine than steps/s.
        for key in ("stages", "all"):
            if cluster["cpu_ms_per_step"].get(key) and single["cpu_ms_per_step"].get(key):
                result[f"cpu_ratio_{key}"] = single["cpu_ms_per_step"][key] / cluster["cpu_ms_per_step"][key]
        results.append(result)

    def over_rounds(get) -> dict:
        return summarize([value for r in results if (value := get(r)) is not None])

    return {"pinned": pinned, "rounds": results, "ratio": over_rounds(lambda r: r["ratio"]),
            "single_host_steps_per_s": over_rounds(lambda r: r["single_host"]["steps_per_s"]),
            "cluster_steps_per_s": over_rounds(lambda r: r["cluster"]["steps_per_s"]),
            "cpu_ratio_stages": over_rounds(lambda r: r.get("cpu_ratio_stages")),
            "cpu_ratio_all": over_rounds(lambda r: r.get("cpu_ratio_all")),
            "single_host_cpu_ms_per_step": {k: over_rounds(lambda r, k=k: r["single_host"]["cpu_ms_per_step"].get(k))
                                            for k in ("stages", "all")},
            "cluster_cpu_ms_per_step": {k: over_rounds(lambda r, k=k: r["cluster"]["cpu_ms_per_step"].get(k))
                                        for k in ("stages", "all")}}


class ScoresTail:
    """Every node's scores file under ``out`` (``out/NODE/scores.jsonl``), read on from where it was left."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self._offsets: dict[Path, int] = {}
        self._partial: dict[Path, bytes] = {}

    def new_steps(self) -> list[tuple[str, str, float]]:
        """(node, stream, wall_time) of each line written since the last call (whole lines only)."""
        from pipeline.scores import parse_step

        found = []
        for path in sorted(self.out.glob("*/scores.jsonl")):
            try:
                with path.open("rb") as handle:
                    handle.seek(self._offsets.get(path, 0))
                    data = handle.read()
            except OSError:
                continue
            self._offsets[path] = self._offsets.get(path, 0) + len(data)
            data = self._partial.pop(path, b"") + data
            lines = data.split(b"\n")
            if lines[-1]:
                self._partial[path] = lines[-1]
            for line in lines[:-1]:
                if line.strip():
                    step = parse_step(line.decode())
                    found.append((path.parent.name, step.stream, step.wall_time))
        return found


def _ray_alive(ray, node_id: str) -> bool:
    return any(info["NodeID"] == node_id and info.get("Alive") for info in ray.nodes())


def _steady(run: ClusterRun, tail: ScoresTail, since: float, counts: dict) -> bool:
    """Every stream placed and confirmed on a ready node, each with STEADY_STEPS steps there since ``since``."""
    for node, stream, wall in tail.new_steps():
        if wall > since:
            counts[(node, stream)] += 1
    rows = run.rows()
    return bool(rows) and all(row.get("confirmed") and row.get("node") and counts[(row["node"], name)] >= STEADY_STEPS
                              and row.get("state_age_s") is not None for name, row in rows.items())


def failover(videos: list[Path], streams: int, failovers: int, workdir: Path) -> dict:
    """Two nodes, ``streams`` real-time looped replays; ``failovers`` times the busiest node lost and a fresh one
    added. The footprint of every node is measured before the first loss."""
    from tools.testbed.ray_cluster import cell_name

    out = workdir / "out"
    sources = _sources([videos[i % len(videos)] for i in range(streams)], prefix="f")
    rounds, errors = [], []
    with ClusterRun(2, _base_pipeline(f"{out}/{{node}}/scores.jsonl", realtime=True, loop=True), workdir) as run:
        ray = run.ray
        run.add(sources)
        tail, counts = ScoresTail(out), defaultdict(int)
        _log("failover: waiting for every stream to score on its node ...")
        _wait(lambda: _steady(run, tail, 0.0, counts), READY_TIMEOUT_S, "every stream scoring")
        time.sleep(2.0)
        _log("footprint: reading every process's PSS ...")
        footprint = measure_footprint(run)
        for i in range(failovers):
            by_node = defaultdict(list)
            for name, row in run.rows().items():
                by_node[row["node"]].append(name)
            victim_name = max(by_node, key=lambda n: (len(by_node[n]), n))
            victim = next(n for n in run.world.cells if cell_name(n) == victim_name)
            moved = sorted(by_node[victim_name])
            cell_pids = _cell_pids(run, victim_name)
            tail.new_steps()  # read up to now: what comes after the loss is all that counts
            lost_at = run.world.lose(victim)
            firsts: dict[str, tuple[str, float]] = {}
            ray_told = coordinator_told = None
            deadline = time.monotonic() + FAILOVER_TIMEOUT_S
            while (len(firsts) < len(moved) or coordinator_told is None) and time.monotonic() < deadline:
                now = time.time()
                for node, stream, wall in tail.new_steps():
                    if stream in moved and stream not in firsts and node != victim_name and wall > lost_at:
                        firsts[stream] = (node, wall - lost_at)
                if ray_told is None and not _ray_alive(ray, victim.node_id):
                    ray_told = now - lost_at
                if coordinator_told is None and run.nodes().get(victim_name, {}).get("state") == "lost":
                    coordinator_told = now - lost_at
                time.sleep(POLL_S)
            leftover = [pid for pid in cell_pids if _alive(pid)]
            seconds = max((s for _, s in firsts.values()), default=None) if len(firsts) == len(moved) else None
            result = {"victim": victim_name, "streams": moved,
                      "per_stream_s": {stream: round(s, 3) for stream, (_, s) in sorted(firsts.items())},
                      "to": sorted({node for node, _ in firsts.values()}), "seconds": seconds,
                      "ray_told_s": ray_told, "coordinator_told_s": coordinator_told,
                      "victim_cell_processes_alive": len(leftover)}
            rounds.append(result)
            _log(f"failover {i + 1}/{failovers}: {victim_name} lost; " + (
                f"{len(moved)} stream(s) scored on {', '.join(result['to'])} within {seconds:.2f} s" if seconds
                else f"only {len(firsts)} of {len(moved)} stream(s) scored elsewhere within {FAILOVER_TIMEOUT_S:g} s"))
            if seconds is None:
                errors.append(f"failover {i + 1}: {sorted(set(moved) - set(firsts))} not scored on a survivor "
                              f"within {FAILOVER_TIMEOUT_S:g} s")
                break
            if i + 1 < failovers:
                fresh = cell_name(run.world.add_cell_node())
                _wait(lambda: run.nodes().get(fresh, {}).get("ready"), READY_TIMEOUT_S, f"{fresh}'s cell")
                since, counts = time.time(), defaultdict(int)
                _wait(lambda: _steady(run, tail, since, counts), READY_TIMEOUT_S, "the moved streams to settle")
                time.sleep(1.0)
        footprint["head_after"] = _head_footprint(run)
    times = [r["seconds"] for r in rounds if r["seconds"] is not None]
    return {"failover": {"streams": streams, "rounds": rounds, "seconds": summarize(times),
                         "ray_told_s": summarize([r["ray_told_s"] for r in rounds if r["ray_told_s"] is not None]),
                         "coordinator_told_s": summarize([r["coordinator_told_s"] for r in rounds
                                                          if r["coordinator_told_s"] is not None]),
                         "errors": errors},
            "footprint": footprint}


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _agent_pids(run: ClusterRun) -> dict[str, int]:
    """Each node's agent worker process (its report's pid), by node name."""
    from pipeline.cluster.coordinator import AGENT_PREFIX

    ray, pids = run.ray, {}
    for actor in ray.util.list_named_actors(all_namespaces=True):
        name = actor["name"] if isinstance(actor, dict) else actor
        if not name.startswith(AGENT_PREFIX):
            continue
        try:
            report = ray.get(ray.get_actor(name, namespace=actor.get("namespace")).report.remote(), timeout=30)
        except (ValueError, ray.exceptions.RayError):
            continue  # a lost node's agent
        pids[report["node"]] = report["pid"]
    return pids


def _cell_pids(run: ClusterRun, node: str) -> list[int]:
    pid = _agent_pids(run).get(node)
    return descendants(pid, process_table()) if pid else []


def _ray_roots(run: ClusterRun) -> list[int]:
    """The processes every node of ``run`` was started with (raylets; the head's GCS, monitor, dashboard...)."""
    nodes = [run.world.cluster.head_node, *run.world.cells]
    return [info.process.pid for node in nodes for infos in node.all_processes.values() for info in infos]


def _ray_pids(node, table: dict[int, Proc]) -> list[int]:
    """A cluster_utils node's processes (raylet, and on the head GCS, monitor, dashboard...) and their children."""
    pids = []
    for infos in node.all_processes.values():
        for info in infos:
            pids += descendants(info.process.pid, table)
    return pids


def _head_footprint(run: ClusterRun) -> dict:
    table = process_table()
    coordinator = run.ray.get(run.coordinator.__ray_call__.remote(lambda _self: os.getpid()), timeout=30)
    ours = descendants(coordinator, table)
    ray_pids = [pid for pid in _ray_pids(run.world.cluster.head_node, table) if pid not in ours]
    return {"node": "head", "ray": footprint_of(ray_pids, table), "ours": footprint_of(ours, table),
            "ours_is": "the coordinator's worker"}


def measure_footprint(run: ClusterRun) -> dict:
    """Per node: Ray's processes and ours (the cell), each counted and their PSS summed."""
    from tools.testbed.ray_cluster import cell_name

    agents = _agent_pids(run)
    table = process_table()
    nodes = []
    for node in run.world.cells:
        name = cell_name(node)
        ours = descendants(agents[name], table) if name in agents else []
        ray_pids = [pid for pid in _ray_pids(node, table) if pid not in ours]
        nodes.append({"node": name, "ray": footprint_of(ray_pids, table), "ours": footprint_of(ours, table),
                      "ours_is": "the node agent's worker and its stage processes"})
    return {"head": _head_footprint(run), "nodes": nodes}


# -- the report ----------------------------------------------------------------------------------------
def _fmt(value, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _get(mapping: dict | None, *keys):
    """``mapping[k1][k2]...``, None where any is missing."""
    for key in keys:
        if not isinstance(mapping, dict):
            return None
        mapping = mapping.get(key)
    return mapping


def report_text(result: dict) -> str:
    lines = [f"cluster mode against the single-host pipeline, {result['machine']['cores']} cores "
             f"({result['machine']['cpu']}); Ray {result['machine']['ray']}", f"note: {NOTE}", ""]
    t = result.get("throughput")
    if t:
        s = result["settings"]
        lines.append(f"throughput: {s['streams']} SynthActions replays of {s['seconds']:g} s (320x240, 15 fps) "
                     f"as fast as they go; steps/s from the first to the last step scored"
                     + (f"; both sides pinned to {json.dumps(t['pinned'])}" if t.get("pinned") else ""))
        for i, r in enumerate(t["rounds"], 1):
            a, b = r["single_host"], r["cluster"]
            lines.append(f"  round {i} ({' then '.join(r['order'])}): single-host {_fmt(a['steps_per_s'], 1)}, "
                         f"cluster {_fmt(b['steps_per_s'], 1)} steps/s ({b['steps']} steps each), ratio "
                         f"{r['ratio']:.3f}; CPU ms per step, stages: {_fmt(_get(a, 'cpu_ms_per_step', 'stages'))} "
                         f"vs {_fmt(_get(b, 'cpu_ms_per_step', 'stages'))}, all processes: "
                         f"{_fmt(_get(a, 'cpu_ms_per_step', 'all'))} vs {_fmt(_get(b, 'cpu_ms_per_step', 'all'))}")
        lines.append(f"  median: single-host {_fmt(t['single_host_steps_per_s']['median'], 1)}, cluster "
                     f"{_fmt(t['cluster_steps_per_s']['median'], 1)} steps/s; ratio cluster/single-host "
                     f"{_fmt(t['ratio']['median'], 3)} (target >= 0.95)")
        lines.append(f"  steps per CPU second, cluster/single-host (less moved by other work on the machine): "
                     f"{_fmt(_get(t, 'cpu_ratio_stages', 'median'), 3)} for the stages (the data path), "
                     f"{_fmt(_get(t, 'cpu_ratio_all', 'median'), 3)} for every process (Ray's, the coordinator, "
                     f"the supervisor)")
        lines.append("")
    f = result.get("failover")
    if f:
        lines.append(f"failover: {f['streams']} real-time replay(s) on 2 nodes; the busiest node killed without "
                     f"grace, time to each of its streams' first step on a survivor")
        for i, r in enumerate(f["rounds"], 1):
            per = ", ".join(f"{k} {v:.2f}" for k, v in r["per_stream_s"].items())
            lines.append(f"  {i}: {r['victim']} lost: {_fmt(r['seconds'])} s ({per}); Ray told after "
                         f"{_fmt(r['ray_told_s'])} s, the coordinator after {_fmt(r['coordinator_told_s'])} s; "
                         f"its cell's processes left alive: {r['victim_cell_processes_alive']}")
        lines.append(f"  median {_fmt(f['seconds']['median'])} s, max {_fmt(f['seconds']['max'])} s "
                     f"(of {f['seconds']['n']}); Ray told after median {_fmt(f['ray_told_s']['median'])} s, "
                     f"the coordinator after median {_fmt(f['coordinator_told_s']['median'])} s")
        for error in f["errors"]:
            lines.append(f"  error: {error}")
        lines.append("")
    fp = result.get("footprint")
    if fp:
        lines.append("footprint, PSS (MB) while every node serves its streams:")
        for row in [fp["head"], *fp["nodes"]]:
            kinds = ", ".join(f"{k} x{v['processes']} {v['pss_mb']:.0f}" for k, v in row["ray"]["kinds"].items())
            lines.append(f"  {row['node']}: Ray {row['ray']['processes']} processes {row['ray']['pss_mb']:.0f} MB "
                         f"({kinds}); ours ({row['ours_is']}) {row['ours']['processes']} processes "
                         f"{row['ours']['pss_mb']:.0f} MB")
        if "head_after" in fp:
            h = fp["head_after"]
            lines.append(f"  head after the failovers: Ray {h['ray']['processes']} processes "
                         f"{h['ray']['pss_mb']:.0f} MB; the coordinator {h['ours']['pss_mb']:.0f} MB")
    return "\n".join(lines)


def report_markdown(result: dict) -> str:
    m, s = result["machine"], result["settings"]
    lines = [f"## {result['date']}: cluster mode (Ray, simulated on one machine)", "",
             f"`{result['command']}`", "",
             f"Machine: {m['cpu']}, {m['cores']} cores shared by the head and every simulated node, "
             f"{m['memory_gb']} GB, no GPU; Python {m['python']}, Ray {m['ray']}; commit {m['commit']}. "
             f"{NOTE[0].upper()}{NOTE[1:]}.", ""]
    t = result.get("throughput")
    if t:
        lines += [f"Throughput, {s['streams']} SynthActions replays of {s['seconds']:g} s (320x240, 15 fps) scored as "
                  "fast as they go, steps/s from the first to the last step scored (start-up excluded)"
                  + (f", both sides given `{json.dumps(t['pinned'])}`" if t.get("pinned") else "") + ":", "",
                  "| round | order | single-host steps/s | one cluster node steps/s | cluster/single-host | "
                  "CPU ms per step, stages: single-host / cluster | all processes: single-host / cluster |",
                  "|---|---|---|---|---|---|---|"]
        for i, r in enumerate(t["rounds"], 1):
            a, b = r["single_host"], r["cluster"]
            lines.append(f"| {i} | {' then '.join(o.replace('_', '-') for o in r['order'])} | "
                         f"{_fmt(a['steps_per_s'], 1)} | {_fmt(b['steps_per_s'], 1)} | {r['ratio']:.3f} | "
                         f"{_fmt(_get(a, 'cpu_ms_per_step', 'stages'))} / "
                         f"{_fmt(_get(b, 'cpu_ms_per_step', 'stages'))} | {_fmt(_get(a, 'cpu_ms_per_step', 'all'))} / "
                         f"{_fmt(_get(b, 'cpu_ms_per_step', 'all'))} |")
        lines += [f"| median | | {_fmt(t['single_host_steps_per_s']['median'], 1)} | "
                  f"{_fmt(t['cluster_steps_per_s']['median'], 1)} | **{_fmt(t['ratio']['median'], 3)}** | "
                  f"{_fmt(_get(t, 'single_host_cpu_ms_per_step', 'stages', 'median'))} / "
                  f"{_fmt(_get(t, 'cluster_cpu_ms_per_step', 'stages', 'median'))} | "
                  f"{_fmt(_get(t, 'single_host_cpu_ms_per_step', 'all', 'median'))} / "
                  f"{_fmt(_get(t, 'cluster_cpu_ms_per_step', 'all', 'median'))} |", "",
                  f"Steps per CPU second, cluster/single-host (median of the rounds; less moved than steps/s by "
                  f"other work on the machine): **{_fmt(_get(t, 'cpu_ratio_stages', 'median'), 3)}** for the stage "
                  f"processes (capture, embed, temporal: the data path), {_fmt(_get(t, 'cpu_ratio_all', 'median'), 3)}"
                  f" for every process (with the supervisor; in cluster mode the node agent, the coordinator and "
                  f"all of Ray's processes).", ""]
    f = result.get("failover")
    if f:
        per_round = ", ".join(_fmt(r["seconds"]) for r in f["rounds"])
        lines += [f"Failover, {f['streams']} real-time looped replays on two nodes, the node serving the most killed "
                  f"without grace {len(f['rounds'])} times (a fresh node added after each): seconds from the kill to "
                  f"the last of its streams' first step scored on a survivor: {per_round}; "
                  f"**median {_fmt(f['seconds']['median'])} s, max {_fmt(f['seconds']['max'])} s**. Ray's node "
                  f"table said the node was dead after median {_fmt(f['ray_told_s']['median'])} s (max "
                  f"{_fmt(f['ray_told_s']['max'])}), the coordinator's table said lost after median "
                  f"{_fmt(f['coordinator_told_s']['median'])} s (max {_fmt(f['coordinator_told_s']['max'])}).", ""]
    fp = result.get("footprint")
    if fp:
        lines += ["Processes and memory (PSS) per node while every node serves its streams:", "",
                  "| node | Ray's processes | Ray's PSS MB | which | ours | our PSS MB |", "|---|---|---|---|---|---|"]
        for row in [fp["head"], *fp["nodes"]]:
            kinds = ", ".join(f"{k} {v['pss_mb']:.0f}" + (f" (x{v['processes']})" if v["processes"] > 1 else "")
                              for k, v in row["ray"]["kinds"].items())
            lines.append(f"| {row['node']} | {row['ray']['processes']} | {row['ray']['pss_mb']:.0f} | {kinds} | "
                         f"{row['ours']['processes']} ({row['ours_is']}) | {row['ours']['pss_mb']:.0f} |")
        lines.append("")
    return "\n".join(lines)


# -- the command ----------------------------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tools.benchmark_cluster", description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=3, help="throughput rounds, the order alternating (0: none)")
    p.add_argument("--streams", type=int, default=4, help="replays scored in each throughput run")
    p.add_argument("--seconds", type=float, default=20.0, help="length of each SynthActions video")
    p.add_argument("--failovers", type=int, default=5, help="nodes lost one after another (0: the footprint only)")
    p.add_argument("--failover-streams", type=int, default=2, help="real-time replays served during the failovers")
    p.add_argument("--same-threads", action="store_true",
                   help="a diagnostic: give both sides the thread counts the single-host pipeline picks by itself "
                        "(capture.decoder_threads, engine.threads); a cell left to itself picks others")
    p.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS),
                   help="what to measure (failover: also the footprint, measured on its cluster)")
    p.add_argument("--json", type=Path, help="write every figure to this file")
    p.add_argument("--markdown", action="store_true", help="also print a section for docs/benchmarks.md")
    p.add_argument("--dir", type=Path, help="work folder (default: a temporary one, removed after)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.rounds < 0 or args.failovers < 0 or args.streams < 1 or args.failover_streams < 1 or args.seconds <= 1:
        print("error: --rounds and --failovers must be >= 0, --streams and --failover-streams >= 1, "
              "--seconds > 1", file=sys.stderr)
        return 2
    try:
        import ray
    except ImportError:
        print('error: Ray is not installed: this benchmark needs the cluster extra (pip install -e ".[cluster]")',
              file=sys.stderr)
        return 1
    from pipeline.errors import ActionPipeError
    from tools.bench.report import machine

    command = "python -m tools.benchmark_cluster" + "".join(f" {shlex.quote(a)}" for a in (argv or sys.argv[1:]))
    result = {"command": command, "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
              "machine": {**machine(), "ray": ray.__version__}, "note": NOTE,
              "settings": {"rounds": args.rounds, "streams": args.streams, "seconds": args.seconds,
                           "failovers": args.failovers, "failover_streams": args.failover_streams,
                           "same_threads": args.same_threads, "parts": args.parts}}
    own_tmp = "RAY_TMPDIR" not in os.environ
    if own_tmp:  # short: Ray's socket paths live under it
        os.environ["RAY_TMPDIR"] = tempfile.mkdtemp(prefix="rb-", dir="/tmp")
    workdir = Path(tempfile.mkdtemp(prefix="benchmark_cluster-", dir=args.dir))
    status = 0
    try:
        with redirect_stdout(sys.stderr):  # Ray prints its nodes' deaths on stdout: the report alone goes there
            videos = _videos(workdir / "synth", args.streams, args.seconds)
            if args.rounds and "throughput" in args.parts:
                pinned = same_threads(args.streams) if args.same_threads else None
                result["throughput"] = throughput(videos, args.rounds, workdir / "throughput", pinned)
            if "failover" in args.parts:
                result.update(failover(videos, args.failover_streams, args.failovers, workdir / "failover"))
        if result.get("failover", {}).get("errors"):
            status = 1
    except (ActionPipeError, TimeoutError, RuntimeError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        status = 1
    finally:
        if args.dir is None:
            shutil.rmtree(workdir, ignore_errors=True)
        if own_tmp:
            shutil.rmtree(os.environ.pop("RAY_TMPDIR"), ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1, default=str) + "\n")
    print(report_text(result))
    if args.markdown:
        print("\n" + report_markdown(result))
    return status


if __name__ == "__main__":
    sys.exit(main())
