"""The Python API: a real pipeline started from Python, its events iterated and passed to a callback,
streams added and removed while it runs, stats read, and a clean stop."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.api import ActionPipeline, PipelineNotRunningError
from pipeline.errors import ConfigError
from tests.conftest import REPO_ROOT
from tests.support.runs import MODEL, synth_videos


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> list[Path]:
    return synth_videos(tmp_path_factory.mktemp("api"), count=3, seed=3131, duration_range=(10.0, 12.0))


def test_replay_events_arrive_in_order_through_both_the_iterator_and_the_callback(videos, tmp_path):
    seen: list = []
    events_file = tmp_path / "events.jsonl"
    pipeline = ActionPipeline.init([str(v) for v in videos[:2]], model=str(MODEL), on_event=seen.append,
                                   replay={"realtime": False}, outputs={"events_jsonl": str(events_file)})
    with pipeline:
        iterated = list(pipeline.events())
        summary = pipeline.join(60)
    written = [json.loads(line) for line in events_file.read_text().splitlines()]
    assert written, "the streams should have produced events"
    assert [e.to_json() for e in iterated] == written
    assert seen == iterated
    assert {name: row["events"] for name, row in summary.streams.items()} == {
        v.stem: sum(1 for e in written if e["stream"] == v.stem) for v in videos[:2]}
    assert pipeline.events_dropped == 0 and not pipeline.running


def test_streams_are_added_removed_and_counted_while_running_then_stopped(videos):
    def broken_callback(event):
        raise RuntimeError("a bug in the caller's code")

    pipeline = ActionPipeline.init([{"uri": str(videos[0]), "name": "first", "mode": "live"}], model=str(MODEL),
                                   replay={"loop": True}, on_event=broken_callback).start()
    try:
        added = pipeline.add_stream(str(videos[1]), name="second", mode="live")
        assert added["name"] == "second"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            stats = pipeline.stats()
            if all(stats.get(n, {}).get("processed", 0) >= 8 for n in ("first", "second")):
                break
            time.sleep(0.2)
        assert stats["first"]["processed"] >= 8 and stats["second"]["processed"] >= 8
        assert stats["second"]["state"] == "live"
        pipeline.remove_stream("second")
        deadline = time.monotonic() + 10
        while pipeline.stats()["second"]["state"] == "live" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert pipeline.stats()["second"]["state"] == "ended"
        assert pipeline.stats()["first"]["state"] == "live"
        assert pipeline.running
    finally:
        summary = pipeline.stop(60)
    assert not pipeline.running
    assert summary.exit_code == 0
    assert pipeline.callback_errors == sum(row["events"] for row in summary.streams.values())
    with pytest.raises(PipelineNotRunningError):
        pipeline.add_stream(str(videos[2]))


def test_bad_settings_fail_at_init_naming_the_key(videos):
    with pytest.raises(ConfigError, match="engine.backend"):
        ActionPipeline.init([str(videos[0])], engine={"backend": "quantum"})
    with pytest.raises(ConfigError, match="nonsense"):
        ActionPipeline.init([str(videos[0])], nonsense=True)


def test_the_readme_example_runs_as_written(videos, tmp_path):
    readme = (REPO_ROOT / "README.md").read_text()
    start = readme.index("```python\nfrom pipeline.api import ActionPipeline")
    code = readme[start + len("```python\n"):readme.index("```", start + 10)]
    code = code.replace("dock.mp4", str(videos[0])).replace("yard.mp4", str(videos[1]))
    script = tmp_path / "example.py"
    script.write_text(code)
    result = subprocess.run([sys.executable, str(script)], cwd=REPO_ROOT, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "summary:" in result.stdout


def test_console_script_runs_the_pipeline(videos, tmp_path):
    events = tmp_path / "events.jsonl"
    result = subprocess.run([sys.executable, "-c", "import sys; from pipeline.cli import console; sys.exit(console())",
                             "run", "--source", str(videos[0]), "--fast", "--quiet", "--no-metrics", "--no-control",
                             "--events-out", str(events)], cwd=REPO_ROOT, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "== summary" in result.stdout and events.read_text().strip()
    usage = subprocess.run([sys.executable, "-c", "import sys; from pipeline.cli import console; sys.exit(console())",
                            "bogus"], cwd=REPO_ROOT, capture_output=True, text=True)
    assert usage.returncode == 2 and "unknown command 'bogus'" in usage.stderr
