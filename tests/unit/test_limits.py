"""worker_limits / check_worker_counts: refuse worker counts the machine cannot hold, with a clear message."""

from __future__ import annotations

import pytest

from pipeline.supervision.limits import (
    CAPTURE_WORKER_MEMORY_BYTES,
    EMBED_WORKER_MEMORY_BYTES,
    EmbedLayout,
    MachineFacts,
    WorkerLimits,
    check_worker_counts,
    embed_layout,
    machine_facts,
    worker_limits,
)

GB = 1024**3
MB = 1024**2


def test_two_cores_and_plenty_of_memory_allow_two_embed_workers_on_the_cpu() -> None:
    limits = worker_limits(MachineFacts(cpu_count=2, available_memory_bytes=24 * GB))

    assert limits == WorkerLimits(embed=2, capture=2, why="2 CPU cores and 24.0 GB of memory available")


def test_two_embed_workers_fit_on_two_cores() -> None:
    facts = MachineFacts(2, 24 * GB)

    assert check_worker_counts(2, 2, facts) == []
    assert check_worker_counts(1, 1, facts) == []


def test_sixty_four_embed_workers_on_two_cores_are_refused_with_a_clear_message() -> None:
    problems = check_worker_counts(64, 1, MachineFacts(2, 24 * GB))

    assert len(problems) == 1
    message = problems[0]
    assert message.startswith("engine.workers=64 ")
    assert "2 CPU cores" in message
    assert "at most 2 embed workers" in message
    assert "--embed-workers" in message


def test_one_too_many_embed_workers_is_refused() -> None:
    problems = check_worker_counts(3, 1, MachineFacts(2, 24 * GB))

    assert len(problems) == 1
    assert "engine.workers=3" in problems[0]


def test_one_core_is_named_in_the_singular() -> None:
    problems = check_worker_counts(2, 1, MachineFacts(1, None))

    assert len(problems) == 1
    assert "1 CPU core:" in problems[0]
    assert "at most 1 embed worker," in problems[0]


def test_memory_bounds_embed_workers_below_the_core_count() -> None:
    # 2 GB free, half of it kept for everything else: 1 GB / 400 MB = 2 embed workers, 8 capture workers
    facts = MachineFacts(cpu_count=16, available_memory_bytes=2 * GB)

    limits = worker_limits(facts)

    assert limits.embed == 2
    assert limits.capture == 8
    assert limits.why == "16 CPU cores and 2.0 GB of memory available"


def test_a_memory_bound_refusal_names_the_memory() -> None:
    problems = check_worker_counts(4, 1, MachineFacts(16, 2 * GB))

    assert len(problems) == 1
    assert "engine.workers=4" in problems[0]
    assert "2.0 GB of memory available" in problems[0]
    assert "at most 2 embed workers" in problems[0]


def test_memory_limits_use_half_of_the_available_memory() -> None:
    # exactly enough for 3 embed workers in half the memory, and a byte short of it
    enough = MachineFacts(64, 2 * 3 * EMBED_WORKER_MEMORY_BYTES)
    short = MachineFacts(64, 2 * 3 * EMBED_WORKER_MEMORY_BYTES - 2)

    assert worker_limits(enough).embed == 3
    assert worker_limits(short).embed == 2
    assert worker_limits(MachineFacts(64, 2 * 5 * CAPTURE_WORKER_MEMORY_BYTES)).capture == 5


def test_at_least_one_worker_is_always_allowed_even_with_little_memory() -> None:
    limits = worker_limits(MachineFacts(cpu_count=8, available_memory_bytes=100 * MB))

    assert (limits.embed, limits.capture) == (1, 1)
    assert check_worker_counts(1, 1, MachineFacts(8, 100 * MB)) == []


def test_unknown_memory_limits_by_cores_only() -> None:
    limits = worker_limits(MachineFacts(cpu_count=12, available_memory_bytes=None))

    assert limits == WorkerLimits(embed=12, capture=12, why="12 CPU cores")
    assert check_worker_counts(12, 12, MachineFacts(12, None)) == []
    assert "memory" not in check_worker_counts(13, 1, MachineFacts(12, None))[0]


def test_a_gpu_backend_allows_several_embed_workers_per_core() -> None:
    facts = MachineFacts(cpu_count=2, available_memory_bytes=24 * GB)

    gpu = worker_limits(facts, gpu_backend=True)

    assert gpu.embed == 8
    assert gpu.capture == 2  # capture workers do not depend on the engine
    assert check_worker_counts(8, 1, facts, gpu_backend=True) == []
    assert len(check_worker_counts(8, 1, facts, gpu_backend=False)) == 1
    assert "at most 8 embed workers" in check_worker_counts(9, 1, facts, gpu_backend=True)[0]


def test_a_gpu_backend_is_still_bounded_by_memory() -> None:
    facts = MachineFacts(cpu_count=16, available_memory_bytes=2 * GB)

    assert worker_limits(facts, gpu_backend=True).embed == 2


def test_too_many_capture_workers_are_refused_with_their_own_message() -> None:
    problems = check_worker_counts(1, 5, MachineFacts(4, 24 * GB))

    assert len(problems) == 1
    message = problems[0]
    assert message.startswith("capture.workers=5 ")
    assert "4 CPU cores" in message
    assert "at most 4;" in message
    assert "engine.workers" not in message


def test_capture_workers_bounded_by_memory() -> None:
    # 1 GB free: 512 MB budget / 120 MB = 4 capture workers
    problems = check_worker_counts(1, 5, MachineFacts(32, 1 * GB))

    assert len(problems) == 1
    assert "capture.workers=5" in problems[0]
    assert "at most 4;" in problems[0]


def test_both_counts_too_high_give_two_messages_embed_first() -> None:
    problems = check_worker_counts(64, 64, MachineFacts(2, 24 * GB))

    assert len(problems) == 2
    assert problems[0].startswith("engine.workers=64")
    assert problems[1].startswith("capture.workers=64")


@pytest.mark.parametrize(("cores", "memory"), [(1, None), (4, 8 * GB), (64, 256 * GB), (3, 1 * GB)])
def test_counts_at_the_limit_always_fit(cores: int, memory: int | None) -> None:
    facts = MachineFacts(cores, memory)
    limits = worker_limits(facts)

    assert check_worker_counts(limits.embed, limits.capture, facts) == []
    assert len(check_worker_counts(limits.embed + 1, limits.capture + 1, facts)) == 2


def test_machine_facts_reads_this_machine() -> None:
    facts = machine_facts()

    assert isinstance(facts.cpu_count, int)
    assert facts.cpu_count > 0
    assert facts.available_memory_bytes is None or facts.available_memory_bytes > 0


def test_ffmpeg_threads_only_while_a_core_would_otherwise_idle():
    from pipeline.supervision.limits import decoder_threads_for

    assert decoder_threads_for(1, capture_workers=1, cores=2) == 0  # one stream: let FFmpeg use both cores
    assert decoder_threads_for(2, capture_workers=1, cores=2) == 1  # the streams fill the cores
    assert decoder_threads_for(40, capture_workers=1, cores=16) == 1
    assert decoder_threads_for(6, capture_workers=4, cores=4) == 0  # two per worker on four cores
    assert decoder_threads_for(0, capture_workers=1, cores=2) == 0  # streams added later over the API


def test_unset_embed_workers_on_a_cpu_are_one_single_threaded_engine_per_core_up_to_four():
    assert embed_layout("onnxruntime", None, 0, MachineFacts(2, 24 * GB)) == EmbedLayout(2, 1)
    assert embed_layout("torch", None, 0, MachineFacts(1, 24 * GB)) == EmbedLayout(1, 1)
    assert embed_layout("onnxruntime", None, 0, MachineFacts(32, 64 * GB)) == EmbedLayout(4, 1)
    assert embed_layout("onnxruntime", None, 3, MachineFacts(2, 24 * GB)) == EmbedLayout(2, 3)  # threads as asked
    # Memory for only one engine: one.
    assert embed_layout("onnxruntime", None, 0, MachineFacts(8, 2 * EMBED_WORKER_MEMORY_BYTES + 1)) == EmbedLayout(1, 1)


def test_unset_embed_workers_on_a_gpu_are_one_and_auto_follows_the_machine():
    assert embed_layout("tensorrt", None, 0, MachineFacts(16, 64 * GB)) == EmbedLayout(1, 0)
    assert embed_layout("onnxruntime-cuda", None, 0, MachineFacts(16, 64 * GB)) == EmbedLayout(1, 0)
    assert embed_layout("auto", None, 0, MachineFacts(16, 64 * GB, nvidia_gpu=True)) == EmbedLayout(1, 0)
    assert embed_layout("auto", None, 0, MachineFacts(2, 24 * GB, nvidia_gpu=False)) == EmbedLayout(2, 1)


def test_set_embed_workers_and_threads_are_kept():
    assert embed_layout("onnxruntime", 1, 0, MachineFacts(2, 24 * GB)) == EmbedLayout(1, 0)
    assert embed_layout("tensorrt", 3, 2, MachineFacts(16, 64 * GB)) == EmbedLayout(3, 2)


def test_unset_precision_is_fp32_except_auto_on_a_cpu_with_integer_dot_products():
    from pipeline.supervision.limits import engine_precision

    vnni = MachineFacts(2, 24 * GB, int8_dot=True)
    assert engine_precision("auto", None, own_graph=False, int8_graph_built=True, facts=vnni) == "int8"
    # Not where INT8 may not win, nor where auto lands on a GPU, nor without the graph, nor for a graph of one's own.
    assert engine_precision("auto", None, False, True, MachineFacts(2, 24 * GB, int8_dot=False)) == "fp32"
    assert engine_precision("auto", None, False, True, MachineFacts(2, 24 * GB, nvidia_gpu=True, int8_dot=True)) == "fp32"
    assert engine_precision("auto", None, False, False, vnni) == "fp32"
    assert engine_precision("auto", None, True, True, vnni) == "fp32"
    # A named backend runs FP32 unless asked; an explicit precision is kept everywhere.
    assert engine_precision("onnxruntime", None, False, True, vnni) == "fp32"
    assert engine_precision("auto", "fp32", False, True, vnni) == "fp32"
    assert engine_precision("onnxruntime", "int8", False, True, MachineFacts(2, 24 * GB)) == "int8"
