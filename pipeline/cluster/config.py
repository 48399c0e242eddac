"""The cluster's configuration (``configs/cluster.example.yaml``): the pipeline every cell runs, where
stream state is shared, how streams are placed, how a lost node is told, and the coordinator's API.

Each cell runs the single-host pipeline with :func:`cell_config`: the base pipeline config with the
cluster's overrides (the shared state folder, ``keep_running``, its control API on loopback only: the
coordinator's is the cluster's (a cell's own stays on loopback), and ``{node}`` in output paths replaced by the node's name, so that
nodes never write one file).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from pipeline.config import PipelineConfig, SourceConfig, is_loopback, load_config, load_yaml_mapping, validate_config

NODE_PLACEHOLDER = "{node}"
# Output settings that name a file or folder: each node writes its own (``{node}`` in them, or a suffix).
OUTPUT_FILES = ("events_jsonl", "scores_jsonl")
SPOOLING_OUTPUTS = ("webhook", "mqtt")


class ClusterSource(SourceConfig):
    """A source of the cluster: any source setting, and the resources a node needs to serve it."""

    needs: dict[str, float] = Field(
        default_factory=dict,
        description="Ray resources a node must have to serve this stream, e.g. {GPU: 1} or {site_dock: 1}")


class CoordinatorApi(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = Field(default="127.0.0.1", description="listening beyond loopback requires a token")
    port: int = Field(default=9120, ge=0, le=65535, description="0 picks a free port (the CLI asks Ray for it)")
    token: str | None = Field(default=None, min_length=16, description="required as 'Authorization: Bearer TOKEN'")
    media_roots: list[Path] = Field(
        default_factory=list,
        description="files and folders added through the API only from under these (empty: any file, as "
                    "control.media_roots); every node opens what is added, so keep this tight beyond loopback")

    @model_validator(mode="after")
    def _token_beyond_loopback(self) -> "CoordinatorApi":
        if not is_loopback(self.host) and not self.token:
            raise ValueError(f"api.host {self.host} is reachable from other machines: set api.token (16+ characters)")
        return self


class ClusterConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    pipeline: Path | dict[str, Any] = Field(
        default_factory=dict,
        description="the pipeline every cell runs: a YAML file (as for run_pipeline.py) or its settings inline")
    state_dir: Path = Field(description="a folder every node mounts (NFS and the like): the streams' snapshots")
    namespace: str = Field(default="actionpipe", min_length=1, description="the Ray namespace of the named actors")
    cell_resource: str = Field(
        default="CPU", min_length=1, description="a node with at least 1 of this Ray resource runs a cell")
    node_capacity: int = Field(default=16, ge=1, le=100_000, description="streams per node at most")
    heartbeat_s: float = Field(default=0.5, gt=0.0, le=60.0, description="how often the coordinator asks each node")
    node_lost_after_s: float = Field(
        default=3.0, gt=0.0, le=600.0,
        description="a node that answers nothing this long is lost (Ray's own verdict on a dead node comes first)")
    metrics_host: str = Field(default="0.0.0.0", description="where each cell serves its /metrics")
    metrics_port: int = Field(default=0, ge=0, le=65535, description="each cell's metrics port (0: a free one)")
    file_sd: Path | None = Field(
        default=None, description="a Prometheus file_sd file the coordinator keeps listing the live nodes")
    api: CoordinatorApi = Field(default_factory=CoordinatorApi)
    log_level: str = Field(default="info", pattern="^(debug|info|warning|error)$", description="the coordinator's")
    sources: list[ClusterSource] = Field(default_factory=list, description="streams placed at the start")

    @model_validator(mode="after")
    def _heartbeats_before_loss(self) -> "ClusterConfig":
        if self.node_lost_after_s <= 2 * self.heartbeat_s:
            raise ValueError(f"node_lost_after_s ({self.node_lost_after_s}) must exceed two heartbeats "
                             f"({2 * self.heartbeat_s}): one late answer must not lose a node")
        return self

    def base_pipeline(self) -> dict[str, Any]:
        """The pipeline settings every cell starts from (a file is read here, on the coordinator's machine)."""
        if isinstance(self.pipeline, Path):
            return load_config(self.pipeline).model_dump(exclude_unset=True, mode="json")
        return dict(self.pipeline)


def load_cluster_config(path: str | Path) -> ClusterConfig:
    """The cluster YAML at ``path``; ConfigError naming the file and the bad key."""
    return validate_config(load_yaml_mapping(path), str(path), ClusterConfig)


def cell_config(base: dict[str, Any], node: str, state_dir: Path, metrics_host: str, metrics_port: int,
                node_capacity: int) -> PipelineConfig:
    """The pipeline config of ``node``'s cell: ``base`` with what a cell must have."""
    data = {key: value for key, value in base.items() if key != "sources"}  # the coordinator places streams
    outputs = dict(data.get("outputs", {}))
    for key in OUTPUT_FILES:
        if outputs.get(key):
            outputs[key] = _per_node(str(outputs[key]), node)
    for key in SPOOLING_OUTPUTS:
        if isinstance(outputs.get(key), dict) and outputs[key].get("spool_dir"):
            outputs[key] = {**outputs[key], "spool_dir": _per_node(str(outputs[key]["spool_dir"]), node)}
    if isinstance(outputs.get("mqtt"), dict) and outputs["mqtt"].get("client_id"):
        # A broker takes one connection per client id: two nodes sharing one would push each other off.
        outputs["mqtt"] = {**outputs["mqtt"], "client_id": f"{outputs['mqtt']['client_id']}-{node}"}
    data["outputs"] = outputs
    if isinstance(data.get("overlay"), dict) and data["overlay"].get("out_dir"):
        data["overlay"] = {**data["overlay"], "out_dir": _per_node(str(data["overlay"]["out_dir"]), node)}
    temporal = dict(data.get("temporal", {}))
    temporal["capacity"] = max(int(temporal.get("capacity", 0) or 0), node_capacity)
    data["temporal"] = temporal
    data["state"] = {**data.get("state", {}), "dir": str(state_dir), "shared": True}
    # Its own control API stays on loopback, for an operator on that node; the cluster's is the coordinator's.
    data["control"] = {**data.get("control", {}), "enabled": True, "host": "127.0.0.1", "port": 0,
                       "keep_running": True}
    data["metrics"] = {**data.get("metrics", {}), "enabled": True, "host": metrics_host, "port": metrics_port}
    data["live_page"] = {**data.get("live_page", {}), "enabled": False}
    capture = dict(data.get("capture", {}))
    if capture.get("decoder_threads") is None:
        # A cell's streams come and go (it starts with none): decode each on one thread, as the single-host
        # pipeline does once its streams fill the cores (pipeline.supervision.limits.decoder_threads_for),
        # rather than FFmpeg's own count for each of many streams. capture.decoder_threads overrides it.
        capture["decoder_threads"] = 1
    data["capture"] = capture
    return validate_config(data, f"cluster cell {node}")


def _per_node(path: str, node: str) -> str:
    if NODE_PLACEHOLDER in path:
        return path.replace(NODE_PLACEHOLDER, node)
    p = Path(path)
    return str(p.with_name(f"{p.stem}.{node}{p.suffix}"))
