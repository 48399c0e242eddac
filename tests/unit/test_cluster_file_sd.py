"""Prometheus file-based service discovery: the target groups of the cells, and their file written atomically."""

from __future__ import annotations

import json
import os
import stat

import pytest

from pipeline.cluster import file_sd
from pipeline.cluster.file_sd import FileSdError, file_sd_targets, write_file_sd
from pipeline.cluster.placement import ClusterTable, NodeInfo


def cluster() -> ClusterTable:
    t = ClusterTable()
    for name, address in [("zeta", "10.0.0.3:9400"), ("alpha", "10.0.0.1:9400"), ("quiet", ""),
                          ("gone", "10.0.0.4:9400"), ("leaving", "[fd00::5]:9400")]:
        t.join(NodeInfo(name, {"CPU": 4}, 2, address))
    t.node_lost("gone")
    t.drain("leaving")
    return t


def test_one_group_per_live_node_with_an_address_sorted_by_name():
    assert file_sd_targets(cluster().nodes()) == [
        {"targets": ["10.0.0.1:9400"], "labels": {"node": "alpha", "role": "cell"}},
        {"targets": ["[fd00::5]:9400"], "labels": {"node": "leaving", "role": "cell"}},  # draining: still scraped
        {"targets": ["10.0.0.3:9400"], "labels": {"node": "zeta", "role": "cell"}},
    ]


def test_the_coordinator_comes_last_with_its_own_role():
    groups = file_sd_targets(cluster().nodes(), coordinator="10.0.0.100:9500")
    assert groups[-1] == {"targets": ["10.0.0.100:9500"], "labels": {"node": "coordinator", "role": "coordinator"}}
    assert len(groups) == 4


def test_no_node_gives_an_empty_list_which_prometheus_accepts():
    assert file_sd_targets([]) == []


def test_the_shape_is_what_prometheus_reads_strings_only():
    for group in file_sd_targets(cluster().nodes(), coordinator="c:1"):
        assert set(group) == {"targets", "labels"}
        assert all(isinstance(t, str) for t in group["targets"])
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in group["labels"].items())


def test_the_file_reads_back_as_the_same_json_and_no_temporary_file_is_left(tmp_path):
    path = tmp_path / "cells.json"
    groups = file_sd_targets(cluster().nodes(), coordinator="10.0.0.100:9500")
    write_file_sd(path, groups)
    assert json.loads(path.read_text()) == groups
    assert os.listdir(tmp_path) == ["cells.json"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o644  # readable by a Prometheus running as another user


def test_writing_again_replaces_the_old_targets(tmp_path):
    path = tmp_path / "cells.yml"  # JSON is YAML: a .yml name works too
    write_file_sd(str(path), [{"targets": ["a:1"], "labels": {"node": "a", "role": "cell"}}])
    write_file_sd(path, [])
    assert json.loads(path.read_text()) == []
    assert os.listdir(tmp_path) == ["cells.yml"]


def test_a_name_prometheus_would_ignore_is_refused_before_anything_is_written(tmp_path):
    with pytest.raises(FileSdError, match=r"\*\.json"):
        write_file_sd(tmp_path / "cells.txt", [])
    assert os.listdir(tmp_path) == []


def test_a_missing_folder_is_an_error_of_ours(tmp_path):
    with pytest.raises(FileSdError, match="cannot be written"):
        write_file_sd(tmp_path / "nowhere" / "cells.json", [])


def test_a_failed_replace_leaves_the_old_file_whole_and_no_temporary_file(tmp_path, monkeypatch):
    path = tmp_path / "cells.json"
    write_file_sd(path, [{"targets": ["a:1"], "labels": {"node": "a", "role": "cell"}}])
    old = path.read_text()

    def refuse(src, dst):
        raise PermissionError("read-only")

    monkeypatch.setattr(file_sd.os, "replace", refuse)
    with pytest.raises(FileSdError, match="read-only"):
        write_file_sd(path, [])
    assert path.read_text() == old
    assert os.listdir(tmp_path) == ["cells.json"]
