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
