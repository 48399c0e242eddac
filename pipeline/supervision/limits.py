"""How many worker processes this machine can hold, so that an absurd count
is refused with a clear message instead of running the machine out of memory.

Each embed worker holds a whole engine (about 300-400 MB with ONNX Runtime on
the CPU) and wants a core of its own: more CPU workers than cores only adds
contention. Capture workers are lighter, but a worker per core is still the
most that helps, since each one serves many streams on threads. Pure: the
machine's facts are passed in (:func:`machine_facts` reads them).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from engines.cpu_features import has_int8_dot

EMBED_WORKER_MEMORY_BYTES = 400 * 1024**2
CAPTURE_WORKER_MEMORY_BYTES = 120 * 1024**2
# Keep half of what is free for the streams' buffers, the temporal worker and everything else.
MEMORY_SHARE = 0.5


# Engines that run on the CPU; "auto" does too where the machine has no NVIDIA GPU.
CPU_BACKENDS = ("onnxruntime", "torch")
# Embed workers a CPU run starts by default (engine.workers: null), at most: one per core up to this.
MAX_DEFAULT_CPU_EMBED_WORKERS = 4


@dataclass(frozen=True)
class MachineFacts:
    cpu_count: int
    available_memory_bytes: int | None  # None when unknown
    nvidia_gpu: bool = False  # an NVIDIA driver's device node is present
    int8_dot: bool = False  # the CPU has integer dot-product instructions (VNNI, AMX, Arm dotprod)


@dataclass(frozen=True)
class EmbedLayout:
    """How many embed workers run, and each one's engine threads (0: the backend's default)."""

    workers: int
    threads: int


@dataclass(frozen=True)
class WorkerLimits:
    embed: int
    capture: int
    why: str


def machine_facts() -> MachineFacts:
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    available = None
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    available = int(line.split()[1]) * 1024
                    break
    except OSError:
        pass
    return MachineFacts(cpus, available, os.path.exists("/dev/nvidiactl"), has_int8_dot())




def embed_layout(backend: str, workers: int | None, threads: int, facts: MachineFacts) -> EmbedLayout:
    """``engine.workers`` and ``engine.threads`` as they run here. Unset on a CPU: a worker per core (up to
    :data:`MAX_DEFAULT_CPU_EMBED_WORKERS`, within memory), each with one thread: on 2 cores, two
    single-threaded engines embedded 74.8 substream steps/s where one two-threaded engine did 59.1
    (tools.benchmark profile, 2026-12-03), since one image's layers split poorly across threads.
    Unset on a GPU: one worker."""
    if workers is not None:
        return EmbedLayout(workers, threads)
    if not (backend in CPU_BACKENDS or (backend == "auto" and not facts.nvidia_gpu)):
        return EmbedLayout(1, threads)
    limit = worker_limits(facts).embed
    return EmbedLayout(max(1, min(facts.cpu_count, MAX_DEFAULT_CPU_EMBED_WORKERS, limit)), threads or 1)


def engine_precision(backend: str, precision: str | None, own_graph: bool, int8_graph_built: bool,
                     facts: MachineFacts) -> str:
    """``engine.precision`` as it runs here. Unset: FP32, except that ``auto`` on a CPU that has integer
    dot products runs the INT8 graph ``make models`` builds (half the CPU per frame; the demo head keeps
    its figures on it: docs/model-card.md). Not with a graph of the user's own (``own_graph``): the INT8
    one is of the default backbone."""
    if precision is not None:
        return precision
    if backend == "auto" and not own_graph and int8_graph_built and facts.int8_dot and not facts.nvidia_gpu:
        return "int8"
    return "fp32"


def worker_limits(facts: MachineFacts, gpu_backend: bool = False) -> WorkerLimits:
    """The most embed and capture workers worth running here, and why."""
    # A GPU engine waits on the device, not a core: a few per core can keep it busy.
    embed_by_cpu = facts.cpu_count * (4 if gpu_backend else 1)
    capture_by_cpu = facts.cpu_count
    parts = [f"{facts.cpu_count} CPU core{'s' if facts.cpu_count != 1 else ''}"]
    embed, capture = embed_by_cpu, capture_by_cpu
    if facts.available_memory_bytes is not None:
        budget = facts.available_memory_bytes * MEMORY_SHARE
        embed = min(embed, int(budget // EMBED_WORKER_MEMORY_BYTES))
        capture = min(capture, int(budget // CAPTURE_WORKER_MEMORY_BYTES))
        parts.append(f"{facts.available_memory_bytes / 1024**3:.1f} GB of memory available")
    return WorkerLimits(max(1, embed), max(1, capture), " and ".join(parts))


def check_worker_counts(embed_workers: int, capture_workers: int, facts: MachineFacts,
                        gpu_backend: bool = False) -> list[str]:
    """One message per count this machine cannot hold; empty when both fit."""
    limits = worker_limits(facts, gpu_backend)
    problems = []
    if embed_workers > limits.embed:
        problems.append(
            f"engine.workers={embed_workers} is more than this machine can run ({limits.why}: at most "
            f"{limits.embed} embed worker{'s' if limits.embed != 1 else ''}, each holding a whole engine); "
            "lower --embed-workers"
        )
    if capture_workers > limits.capture:
        problems.append(
            f"capture.workers={capture_workers} is more than this machine can use ({limits.why}: at most "
            f"{limits.capture}; each capture worker serves many streams on threads)"
        )
    return problems


def decoder_threads_for(streams: int, capture_workers: int, cores: int) -> int:
    """FFmpeg threads per stream when the configuration leaves it open: while each capture worker
    has fewer streams than the machine has cores, FFmpeg's own choice (0: frame threads use the
    idle cores); once the streams fill the cores, one each (they decode in parallel already, and
    more threads only add switching)."""
    per_worker = -(-streams // max(1, capture_workers))
    return 0 if per_worker < cores else 1
