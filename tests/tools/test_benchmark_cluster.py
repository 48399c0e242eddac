"""The cluster benchmark: its pure helpers (percentiles, PSS from smaps_rollup, the process tree, steps/s, the
scores files read on), its report, its one-line refusal without Ray, and (slow, on a simulated Ray cluster) a
whole run at its smallest settings."""

from __future__ import annotations

import json
import sys

import pytest

from tools import benchmark_cluster as bc

SMAPS_ROLLUP = """\
55d0c4a3e000-7ffd2b5f9000 ---p 00000000 00:00 0                          [rollup]
Rss:              120948 kB
Pss:               61234 kB
Pss_Dirty:         40120 kB
Pss_Anon:          39876 kB
Pss_File:          21358 kB
Pss_Shmem:             0 kB
Shared_Clean:      60112 kB
Shared_Dirty:         96 kB
Private_Clean:      2048 kB
Private_Dirty:     58692 kB
Referenced:       118000 kB
Anonymous:         39876 kB
KSM:                   0 kB
LazyFree:              0 kB
AnonHugePages:         0 kB
ShmemPmdMapped:        0 kB
FilePmdMapped:         0 kB
Shared_Hugetlb:        0 kB
Private_Hugetlb:       0 kB
Swap:                  0 kB
SwapPss:               0 kB
Locked:                0 kB
"""


def test_percentiles_interpolate_between_the_closest_ranks():
    assert bc.percentile([3.0, 1.0, 2.0, 4.0], 50) == 2.5
    assert bc.percentile([5.0], 50) == 5.0
    assert bc.percentile([1.0, 2.0, 3.0], 0) == 1.0 and bc.percentile([1.0, 2.0, 3.0], 100) == 3.0
    assert bc.percentile([0.0, 10.0], 90) == pytest.approx(9.0)
    with pytest.raises(ValueError):
        bc.percentile([], 50)
    with pytest.raises(ValueError):
        bc.percentile([1.0], 101)
    assert bc.summarize([2.3, 2.5, 2.4, 2.6, 9.0]) == {"n": 5, "median": 2.5, "max": 9.0, "min": 2.3}
    assert bc.summarize([]) == {"n": 0, "median": None, "max": None, "min": None}


def test_pss_and_the_other_fields_are_read_from_smaps_rollup_in_kb():
    fields = bc.parse_smaps_rollup(SMAPS_ROLLUP)
    assert fields["Pss"] == 61234 and fields["Rss"] == 120948 and fields["Private_Dirty"] == 58692
    assert "55d0c4a3e000-7ffd2b5f9000 ---p 00000000 00" not in fields  # the header line is no field
    assert bc.parse_smaps_rollup("") == {}


def test_pss_of_this_process_is_read_from_proc():
    kb = bc.pss_kb(__import__("os").getpid())
    assert kb is not None and kb > 1000
    assert bc.pss_kb(2**31 - 1) is None  # no such process


def test_the_process_tree_follows_parents_and_names_ray_s_processes():
    stat = "4242 (ray::IDLE (x) 1) S 4200 4242 4200 0 -1 4194560 1"
    assert bc.parse_stat_ppid(stat) == 4200
    table = {pid: bc.Proc(pid, ppid, name) for pid, ppid, name in [
        (10, 1, "/venv/lib/ray/core/src/ray/raylet/raylet --raylet_socket_name=x"),
        (11, 10, "ray::DashboardAgent"), (12, 10, "ray::NodeAgent.report"),
        (13, 12, "/venv/bin/python -m pipeline.stages capture"), (14, 13, "/venv/bin/python -c x"),
        (20, 1, "/venv/bin/python -u /venv/lib/ray/_private/log_monitor.py --session-dir=x")]}
    assert sorted(bc.descendants(10, table)) == [10, 11, 12, 13, 14]
    assert sorted(bc.descendants(12, table)) == [12, 13, 14]
    assert bc.descendants(99, table) == [99]  # a root the table does not know is still reported
    assert bc.process_kind(table[10].name) == "raylet"
    assert bc.process_kind(table[11].name) == "ray::DashboardAgent"
    assert bc.process_kind(table[12].name) == "ray::NodeAgent.report"
    assert bc.process_kind(table[20].name) == "log_monitor.py"
    assert bc.process_kind("") == "?"
    here = bc.process_table()
    me = __import__("os").getpid()
    assert me in here and here[me].ppid == __import__("os").getppid()


def test_cpu_is_grouped_by_stage_agent_coordinator_and_ray_and_summed_between_two_times():
    assert bc.process_kind("/venv/bin/python -m pipeline.stages embed") == "embed"
    assert [bc.cpu_group(k) for k in ("capture", "embed", "temporal", "ray::NodeAgent.report", "ray::Coordinator",
                                      "raylet", "ray::IDLE")] == [
        "capture", "embed", "temporal", "agent", "coordinator", "ray", "ray"]
    sampler = bc.CpuSampler(lambda: [], lambda pid, kind: kind)
    sampler.group_of = {1: "embed", 2: "capture", 3: "capture"}
    sampler.samples = [(10.0, {1: 5.0, 2: 1.0}), (11.0, {1: 6.0, 2: 1.5}), (12.0, {1: 7.0, 2: 2.0, 3: 0.25}),
                       (13.0, {1: 8.0, 3: 0.5})]  # 2 gone after 12, 3 first seen at 12
    # From the sample at or before 10.5 (10.0) to the one at or after 12.5 (13.0).
    assert sampler.between(10.5, 12.5) == {"embed": 3.0, "capture": 1.0 + 0.5}
    assert bc.cpu_per_step({"embed": 3.0, "capture": 1.5, "supervisor": 0.5}, 100) == {
        "groups": {"capture": 15.0, "embed": 30.0, "supervisor": 5.0}, "stages": 45.0, "all": 50.0}
    assert bc.cpu_per_step({"embed": 1.0}, 0) == {}
    assert bc.cpu_seconds(__import__("os").getpid()) > 0 and bc.cpu_seconds(2**31 - 1) is None


def test_same_threads_gives_both_sides_what_the_single_host_pipeline_picks():
    from pipeline.supervision.limits import decoder_threads_for, machine_facts

    cores = machine_facts().cpu_count
    assert bc.same_threads(4) == {"capture": {"decoder_threads": decoder_threads_for(4, 1, cores)},
                                  "engine": {"threads": cores}}
    base = bc._base_pipeline("s.jsonl", realtime=False, pinned=bc.same_threads(4))
    assert base["engine"] == {"threads": cores} and base["replay"] == {"realtime": False, "loop": False}


def test_steps_per_s_counts_from_the_first_to_the_last_step():
    assert bc.steps_per_s([10.0, 12.0, 11.0, 14.0]) == {"steps": 4, "span_s": 4.0, "steps_per_s": 1.0}
    assert bc.steps_per_s([3.0])["steps_per_s"] is None and bc.steps_per_s([])["steps"] == 0


def test_the_scores_tail_reads_only_new_whole_lines_of_every_node(tmp_path):
    def line(stream, wall):
        return json.dumps({"stream": stream, "t": 0.25, "scores": {"a": 0.5}, "wall_time": wall}) + "\n"

    (tmp_path / "node-a").mkdir()
    (tmp_path / "node-b").mkdir()
    a, b = tmp_path / "node-a" / "scores.jsonl", tmp_path / "node-b" / "scores.jsonl"
    a.write_text(line("s0", 1.0))
    half = line("s1", 2.0)
    b.write_text(half[:10])
    tail = bc.ScoresTail(tmp_path)
    assert tail.new_steps() == [("node-a", "s0", 1.0)]
    assert tail.new_steps() == []
    with b.open("a") as handle:
        handle.write(half[10:] + line("s1", 3.0))
    with a.open("a") as handle:
        handle.write(line("s0", 4.0))
    assert sorted(tail.new_steps()) == [("node-a", "s0", 4.0), ("node-b", "s1", 2.0), ("node-b", "s1", 3.0)]


def _result() -> dict:
    side = {"steps": 320, "span_s": 6.4, "steps_per_s": 50.0}
    kinds = {"raylet": {"processes": 1, "pss_mb": 16.0}, "ray::DashboardAgent": {"processes": 1, "pss_mb": 51.0}}
    node = {"node": "node-1", "ray": {"processes": 2, "pss_mb": 67.0, "kinds": kinds},
            "ours": {"processes": 4, "pss_mb": 450.0, "kinds": {}}, "ours_is": "the cell"}
    return {
        "command": "python -m tools.benchmark_cluster", "date": "2026-12-02 12:00 UTC",
        "machine": {"cpu": "a CPU", "cores": 2, "memory_gb": 23.5, "python": "3.11.7", "ray": "2.60.0",
                    "commit": "abc"},
        "settings": {"rounds": 1, "streams": 4, "seconds": 20.0, "failovers": 1, "failover_streams": 2},
        "throughput": {"rounds": [{"order": ["single_host", "cluster"], "single_host": side,
                                   "cluster": {**side, "steps_per_s": 48.0}, "ratio": 0.96}],
                       "ratio": bc.summarize([0.96]), "single_host_steps_per_s": bc.summarize([50.0]),
                       "cluster_steps_per_s": bc.summarize([48.0])},
        "failover": {"streams": 2, "errors": [], "seconds": bc.summarize([2.4]), "ray_told_s": bc.summarize([1.8]),
                     "coordinator_told_s": bc.summarize([2.2]),
                     "rounds": [{"victim": "node-1", "streams": ["f0"], "per_stream_s": {"f0": 2.4}, "to": ["node-2"],
                                 "seconds": 2.4, "ray_told_s": 1.8, "coordinator_told_s": 2.2,
                                 "victim_cell_processes_alive": 0}]},
        "footprint": {"head": {**node, "node": "head"}, "nodes": [node], "head_after": {**node, "node": "head"}},
    }


def test_the_report_and_its_markdown_section_carry_every_figure():
    text = bc.report_text(_result())
    assert "ratio cluster/single-host 0.960" in text and "median 2.40 s, max 2.40 s" in text
    assert "node-1: Ray 2 processes 67 MB" in text and bc.NOTE in text
    md = bc.report_markdown(_result())
    assert md.startswith("## 2026-12-02 12:00 UTC: cluster mode (Ray, simulated on one machine)")
    assert "`python -m tools.benchmark_cluster`" in md and "| median | | 50.0 | 48.0 | **0.960** |" in md
    assert "**median 2.40 s, max 2.40 s**" in md and "| node-1 | 2 | 67 |" in md
    partial = {k: v for k, v in _result().items() if k not in ("throughput", "failover", "footprint")}
    assert bc.report_text(partial) and bc.report_markdown(partial)  # a run that failed early still reports


def test_without_ray_it_says_so_in_one_line_and_fails(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    assert bc.main(["--rounds", "1"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Ray is not installed" in err and 'pip install -e ".[cluster]"' in err


def test_bad_settings_are_refused(capsys):
    assert bc.main(["--streams", "0"]) == 2
    assert "error:" in capsys.readouterr().err


@pytest.mark.cluster
@pytest.mark.slow
def test_the_benchmark_runs_end_to_end_on_a_simulated_cluster(tmp_path, capsys):
    pytest.importorskip("ray", reason='the cluster extra is not installed (pip install -e ".[cluster]")')
    out = tmp_path / "cluster.json"
    assert bc.main(["--rounds", "1", "--failovers", "1", "--streams", "2", "--seconds", "8", "--json", str(out),
                    "--markdown"]) == 0
    stdout = capsys.readouterr().out
    assert "ratio cluster/single-host" in stdout and "## " in stdout
    result = json.loads(out.read_text())
    (round_,) = result["throughput"]["rounds"]
    assert round_["single_host"]["steps"] == round_["cluster"]["steps"] > 0  # the same replays, every step
    assert result["throughput"]["ratio"]["median"] > 0
    for side in ("single_host", "cluster"):
        cpu = round_[side]["cpu_ms_per_step"]
        assert 0 < cpu["groups"]["embed"] and 0 < cpu["stages"] <= cpu["all"]
    assert {"agent", "coordinator", "ray"} <= set(round_["cluster"]["cpu_ms_per_step"]["groups"])
    (failover,) = result["failover"]["rounds"]
    assert 0 < failover["seconds"] < 30 and result["failover"]["errors"] == []
    assert failover["to"] and failover["victim"] not in failover["to"]
    assert failover["victim_cell_processes_alive"] == 0
    footprint = result["footprint"]
    assert len(footprint["nodes"]) == 2
    for row in [footprint["head"], *footprint["nodes"]]:
        assert row["ray"]["processes"] > 0 and row["ray"]["pss_mb"] > 0
    for row in footprint["nodes"]:
        assert row["ours"]["processes"] >= 4  # the agent's worker, capture, embed, temporal
        assert not any(kind.startswith("ray::NodeAgent") for kind in row["ray"]["kinds"])
    assert footprint["head"]["ours"]["processes"] == 1  # the coordinator, on the head
