"""The state-snapshot benchmark runs end to end on a few streams and reports every round and the ratios."""

from __future__ import annotations

from tools.benchmark_state import main


def test_the_state_benchmark_reports_each_round_and_the_ratio_to_a_step_round(tmp_path, capsys):
    assert main(["--rounds", "2", "--streams", "3", "--batch", "2", "--dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "step round, 3 streams (batches of 2)" in out
    for label in ("fsync", "no fsync", "encode only"):
        assert f"snapshot round, {label} x1 streams" in out and f"snapshot round, {label} x3 streams" in out
        assert f"ratio snapshot/step ({label}, 3 streams)" in out
    assert list(tmp_path.iterdir()) == []  # the snapshot folder was temporary


def test_the_load_benchmark_steps_with_real_snapshots_written_and_reports_on_against_off(tmp_path, capsys):
    import re

    assert main(["--load", "--streams", "3", "--batch", "2", "--seconds", "0.3", "--blocks", "1",
                 "--interval", "0.05", "--dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    lines = re.findall(r"^\s*(\d+) streams, (as the stage writes|each fsynced)\s*: off\s+([\d.]+) steps/s, "
                       r"on\s+([\d.]+) steps/s, on/off ([\d.]+)$", out, re.MULTILINE)
    assert [(n, where) for n, where, *_ in lines] == [
        ("1", "as the stage writes"), ("1", "each fsynced"), ("3", "as the stage writes"), ("3", "each fsynced")]
    assert all(float(off) > 0 and float(on) > 0 for *_, off, on, _ in lines)
    assert list(tmp_path.iterdir()) == []  # the snapshot folder was temporary


def test_snapshots_taken_under_load_are_real_files_a_store_reads_back(tmp_path):
    from pathlib import Path

    from pipeline.config import DEFAULT_MODEL
    from pipeline.state.store import DirectoryStore
    from tools.bench.snapshot_cost import build
    from tools.bench.snapshot_load import compare

    setup = build(Path(DEFAULT_MODEL), 3, 2)
    compare(setup, tmp_path / "state", fsync=False, interval_s=0.01, seconds=0.2, blocks=1)
    store = DirectoryStore(tmp_path / "state", fsync=False)
    assert sorted(store.streams()) == list(setup.streams)
    assert all(store.load(stream).seq > 0 for stream in setup.streams)


def test_the_restore_benchmark_kills_a_real_temporal_worker_and_times_the_restored_stream(capsys):
    assert main(["--restore", "--kills", "1"]) == 0
    out = capsys.readouterr().out
    assert "kill 1: scored again" in out and "state restored after crash" in out
    assert "median restore time:" in out
