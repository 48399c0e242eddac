"""Events leave the pipeline over the network: a real pipeline run posting to a real HTTP receiver
on loopback that refuses its first requests; every event arrives once, in order, and scoring never waits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.supervisor import Supervisor
from tests.helpers import config, run_until
from tests.test_delivery import Receiver


@pytest.fixture(scope="module")
def synth_streams(tmp_path_factory) -> list[Path]:
    from tools.synthactions import write_dataset

    root = tmp_path_factory.mktemp("net_outputs")
    write_dataset(root, count=2, seed=4242, sizes=(320, 240), fps=15.0, duration_range=(12.0, 14.0), progress=False)
    return sorted((root / "videos").glob("*.mp4"))


def test_webhook_gets_every_event_the_jsonl_file_gets_despite_a_failing_start(synth_streams, tmp_path):
    receiver = Receiver(statuses=[503, 503, 502])
    try:
        events_file = tmp_path / "events.jsonl"
        cfg = config(
            sources=[{"uri": str(v), "name": v.stem} for v in synth_streams],
            replay={"realtime": False},
            outputs={"events_jsonl": str(events_file),
                     "webhook": {"url": receiver.url, "retry_max_s": 0.2, "flush_timeout_s": 10.0}},
        )
        summary = run_until(Supervisor(cfg), lambda s: False, timeout_s=120)
        written = [json.loads(line) for line in events_file.read_text().splitlines()]
        assert written, "the replay should produce events for this test to mean anything"
        assert receiver.accepted == written  # the same events, each once, in the same order
        assert receiver.requests == len(written) + 3
        assert sum(row["events"] for row in summary.streams.values()) == len(written)
    finally:
        receiver.stop()
