"""The cluster's configuration (``pipeline/cluster/config.py``): the shipped example loads and names every
setting, a cell's pipeline config gets what a cell must have (each node its own output files), and the
settings that cannot work are refused with the file and the reason."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from pipeline.cluster.config import ClusterConfig, ClusterSource, CoordinatorApi, cell_config, load_cluster_config
from pipeline.config import PipelineConfig
from pipeline.errors import ConfigError
from tests.conftest import REPO_ROOT

EXAMPLE = REPO_ROOT / "configs" / "cluster.example.yaml"
TOKEN = "0123456789abcdef"  # 16 characters, the shortest allowed


def _write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _cell(base: dict, node: str = "node-1a2b3c4d", capacity: int = 16) -> PipelineConfig:
    return cell_config(base, node, Path("/mnt/state"), "0.0.0.0", 0, capacity)


# -- the example ---------------------------------------------------------------------------------------

def test_the_example_loads_and_names_every_setting():
    config = load_cluster_config(EXAMPLE)
    written = yaml.safe_load(EXAMPLE.read_text())
    # A setting added to ClusterConfig must be added to the example (with its default and a comment).
    assert set(written) == set(ClusterConfig.model_fields), set(ClusterConfig.model_fields) ^ set(written)
    assert set(written["api"]) == set(CoordinatorApi.model_fields)
    defaults = ClusterConfig(state_dir=Path("/x"))
    for key in ("namespace", "cell_resource", "node_capacity", "heartbeat_s", "node_lost_after_s", "metrics_host",
                "metrics_port", "api", "log_level"):
        assert getattr(config, key) == getattr(defaults, key), f"{key}: the example says it is the default"
    assert all(source.name for source in config.sources), "the example names every stream"
    assert {s.name: dict(s.needs) for s in config.sources} == {"dock": {}, "yard": {"site_dock": 1.0},
                                                              "gate": {"GPU": 1.0}}


def test_the_example_s_pipeline_makes_a_valid_cell_with_per_node_outputs():
    config = load_cluster_config(EXAMPLE)
    cell = cell_config(config.base_pipeline(), "node-1a2b3c4d", config.state_dir, config.metrics_host,
                       config.metrics_port, config.node_capacity)
    assert str(cell.outputs.events_jsonl) == "/var/lib/actionpipe/out/node-1a2b3c4d/events.jsonl"
    assert str(cell.outputs.scores_jsonl) == "/var/lib/actionpipe/out/node-1a2b3c4d/scores.jsonl"
    assert cell.state.dir == config.state_dir and cell.state.shared


def test_a_pipeline_given_as_a_file_is_read_and_its_sources_are_left_to_the_coordinator():
    config = ClusterConfig(pipeline=REPO_ROOT / "configs" / "example.yaml", state_dir=Path("/mnt/state"))
    base = config.base_pipeline()
    assert base["sources"], "configs/example.yaml has sources"
    cell = _cell(base)
    assert cell.sources == []  # the coordinator places every stream


# -- what a cell gets ----------------------------------------------------------------------------------

def test_node_in_output_paths_becomes_the_node_s_name():
    cell = _cell({"outputs": {"events_jsonl": "/out/{node}/events.jsonl", "scores_jsonl": "/out/scores-{node}.jsonl",
                              "webhook": {"url": "http://127.0.0.1:9/hook", "spool_dir": "/spool/{node}/webhook"},
                              "mqtt": {"host": "127.0.0.1", "spool_dir": "/spool/{node}/mqtt"}},
                  "overlay": {"out_dir": "/videos/{node}"}}, node="node-a")
    assert str(cell.outputs.events_jsonl) == "/out/node-a/events.jsonl"
    assert str(cell.outputs.scores_jsonl) == "/out/scores-node-a.jsonl"
    assert str(cell.outputs.webhook.spool_dir) == "/spool/node-a/webhook"
    assert str(cell.outputs.mqtt.spool_dir) == "/spool/node-a/mqtt"
    assert str(cell.overlay.out_dir) == "/videos/node-a"


def test_a_path_without_node_gets_the_node_s_name_before_its_suffix():
    cell = _cell({"outputs": {"events_jsonl": "/out/events.jsonl", "scores_jsonl": "/out/scores"},
                  "overlay": {"out_dir": "/videos"}}, node="node-b")
    assert str(cell.outputs.events_jsonl) == "/out/events.node-b.jsonl"
    assert str(cell.outputs.scores_jsonl) == "/out/scores.node-b"
    assert str(cell.overlay.out_dir) == "/videos.node-b"


def test_two_nodes_never_share_an_output_file():
    base = {"outputs": {"events_jsonl": "/out/events.jsonl", "scores_jsonl": "/out/{node}/scores.jsonl"}}
    a, b = _cell(base, node="node-a"), _cell(base, node="node-b")
    assert a.outputs.events_jsonl != b.outputs.events_jsonl and a.outputs.scores_jsonl != b.outputs.scores_jsonl


def test_a_cell_gets_the_shared_state_loopback_control_its_metrics_and_room_for_its_cap():
    base = {"state": {"snapshot_interval_s": 0.5, "dir": "/elsewhere"},
            "control": {"host": "0.0.0.0", "port": 9109, "token": TOKEN},
            "metrics": {"host": "127.0.0.1", "port": 9108},
            "live_page": {"enabled": True}, "temporal": {"capacity": 8},
            "sources": [{"uri": "/data/dock.mp4"}]}
    cell = cell_config(base, "node-a", Path("/mnt/state"), "0.0.0.0", 9400, 32)
    assert cell.state.dir == Path("/mnt/state") and cell.state.shared and cell.state.snapshot_interval_s == 0.5
    assert (cell.control.enabled, cell.control.host, cell.control.port, cell.control.keep_running) == (
        True, "127.0.0.1", 0, True)
    assert (cell.metrics.enabled, cell.metrics.host, cell.metrics.port) == (True, "0.0.0.0", 9400)
    assert not cell.live_page.enabled
    assert cell.temporal.capacity == 32  # raised to the node's cap
    assert _cell({"temporal": {"capacity": 64}}, capacity=16).temporal.capacity == 64  # never lowered
    assert cell.sources == []


# -- refusals ------------------------------------------------------------------------------------------

def test_an_api_beyond_loopback_without_a_token_is_refused():
    with pytest.raises(ValidationError, match="api.host 0.0.0.0 is reachable from other machines: set api.token"):
        CoordinatorApi(host="0.0.0.0")
    assert CoordinatorApi(host="0.0.0.0", token=TOKEN).token == TOKEN
    assert CoordinatorApi(host="127.0.0.1").token is None  # loopback: a token is optional
    with pytest.raises(ValidationError):
        CoordinatorApi(host="127.0.0.1", token="short")


def test_the_refusal_names_the_file(tmp_path):
    path = _write(tmp_path, {"state_dir": "/mnt/state", "api": {"host": "10.0.0.5"}})
    with pytest.raises(ConfigError, match=rf"{path}: .*api.token"):
        load_cluster_config(path)


def test_node_lost_after_s_must_exceed_two_heartbeats():
    with pytest.raises(ValidationError, match=r"node_lost_after_s \(2.0\) must exceed two heartbeats \(2.0\)"):
        ClusterConfig(state_dir=Path("/mnt/state"), heartbeat_s=1.0, node_lost_after_s=2.0)
    with pytest.raises(ValidationError, match="must exceed two heartbeats"):
        ClusterConfig(state_dir=Path("/mnt/state"), heartbeat_s=2.0, node_lost_after_s=3.0)
    assert ClusterConfig(state_dir=Path("/mnt/state"), heartbeat_s=1.0, node_lost_after_s=2.5).node_lost_after_s == 2.5


def test_unknown_keys_and_a_missing_state_dir_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="state_dir"):
        load_cluster_config(_write(tmp_path, {"node_capacity": 4}))
    with pytest.raises(ConfigError, match="heartbeat"):
        load_cluster_config(_write(tmp_path, {"state_dir": "/mnt/state", "heartbeats": 1}))
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_cluster_config(_write(tmp_path, ["state_dir"]))  # type: ignore[arg-type]


def test_a_source_s_needs_are_resource_amounts():
    assert ClusterSource(uri="rtsp://10.0.0.7/s", name="yard", needs={"site_dock": 1}).needs == {"site_dock": 1.0}
    with pytest.raises(ValidationError):
        ClusterSource(uri="rtsp://10.0.0.7/s", needs={"GPU": "one"})
