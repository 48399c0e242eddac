"""The pipeline's configuration: YAML validated into typed models.

A bad value fails with a message naming the key, the value and what is
allowed (``ConfigError``); the command line prints it as one line.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from engines.factory import BACKENDS, REPO_ROOT

DEFAULT_MODEL = REPO_ROOT / "models" / "synthactions_gru.safetensors"
_STREAM_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")


class ConfigError(ValueError):
    """A configuration that cannot be used; the message says where and why."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SourceConfig(_Model):
    uri: str = Field(min_length=1, description="file, image folder, camera index or /dev/videoN, rtsp:// or http(s):// URL")
    name: str | None = Field(default=None, description="stream name in outputs and metrics; default: the file's stem")
    mode: Literal["auto", "replay", "live"] = "auto"

    @field_validator("name")
    @classmethod
    def _name_is_a_label(cls, value: str | None) -> str | None:
        if value is not None and not _STREAM_NAME.match(value):
            raise ValueError("must be 1-64 letters, digits, '_', '-' or '.', starting with a letter or digit")
        return value


class ReplayConfig(_Model):
    realtime: bool = Field(default=True, description="pace recorded sources at their own frame rate")
    loop: bool = False


class EngineConfig(_Model):
    backend: Literal[("auto",) + BACKENDS] = "onnxruntime"  # type: ignore[valid-type]
    onnx_path: Path | None = None
    threads: int = Field(default=0, ge=0, le=256)
    workers: int = Field(default=1, ge=1, le=64, description="embed worker processes")
    max_batch_size: int = Field(default=16, ge=1, le=1024)
    max_wait_ms: float = Field(default=20.0, ge=0.0, le=10_000.0)


class TemporalConfig(_Model):
    capacity: int = Field(default=256, ge=1, le=100_000, description="streams held at once")
    idle_timeout_s: float = Field(default=30.0, gt=0.0)
    reorder_window: int = Field(default=64, ge=0, le=100_000, description="frames held per stream (live sources)")
    reorder_timeout_s: float = Field(default=2.0, gt=0.0, description="wait for a missing frame (live sources)")
    # A replay loses nothing upstream, so a gap is only a slower embed worker and
    # is always filled: replays wait this long before giving a frame up.
    replay_reorder_window: int = Field(default=4096, ge=0, le=1_000_000)
    replay_reorder_timeout_s: float = Field(default=60.0, gt=0.0)
    max_batch_size: int = Field(default=64, ge=1, le=100_000)


class EventsConfig(_Model):
    on_threshold: float = Field(default=0.5, gt=0.0, le=1.0)
    off_threshold: float = Field(default=0.3, gt=0.0, lt=1.0)
    min_on_steps: int = Field(default=2, ge=1)
    min_off_steps: int = Field(default=2, ge=1)
    warmup_steps: int = Field(default=2, ge=0)

    def hysteresis(self):
        """The detector's own config (pipeline.events), from these validated values."""
        from pipeline.events import HysteresisConfig

        return HysteresisConfig(
            on_threshold=self.on_threshold, off_threshold=self.off_threshold, min_on_steps=self.min_on_steps,
            min_off_steps=self.min_off_steps, warmup_steps=self.warmup_steps,
        )

    @model_validator(mode="after")
    def _hysteresis_order(self) -> "EventsConfig":
        if not self.off_threshold < self.on_threshold:
            raise ValueError(
                f"off_threshold ({self.off_threshold}) must be below on_threshold ({self.on_threshold})"
            )
        return self


class OutputsConfig(_Model):
    stdout: bool = True
    events_jsonl: Path | None = None
    scores_jsonl: Path | None = None
    events_pub: str | None = Field(default=None, description="ZeroMQ endpoint to PUB events on, e.g. tcp://127.0.0.1:5557")


class MetricsConfig(_Model):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(default=9108, ge=0, le=65535, description="0 picks a free port")


class TransportConfig(_Model):
    ipc_dir: Path | None = Field(default=None, description="where per-run ipc sockets live; default a fresh temp dir")
    # Frames queued per socket; small keeps latency low and embed workers evenly loaded.
    high_water_mark: int = Field(default=4, ge=1, le=100_000)


class PipelineConfig(_Model):
    model: Path = DEFAULT_MODEL
    sources: list[SourceConfig] = Field(min_length=1)
    replay: ReplayConfig = ReplayConfig()
    engine: EngineConfig = EngineConfig()
    temporal: TemporalConfig = TemporalConfig()
    events: EventsConfig = EventsConfig()
    outputs: OutputsConfig = OutputsConfig()
    metrics: MetricsConfig = MetricsConfig()
    transport: TransportConfig = TransportConfig()

    @model_validator(mode="after")
    def _unique_names(self) -> "PipelineConfig":
        names = [stream_name(s) for s in self.sources]
        if dupes := sorted({n for n in names if names.count(n) > 1}):
            raise ValueError(f"stream names must be unique, {dupes} repeat: give the sources distinct 'name's")
        return self


def stream_name(source: SourceConfig) -> str:
    """The operator's name for a stream: never the URL, which may hold a password."""
    if source.name:
        return source.name
    uri = source.uri
    if "://" in uri:
        # rtsp://user:pass@host:554/path/cam1 -> cam1 ; no credentials leak into labels.
        tail = uri.split("://", 1)[1].split("@")[-1].split("?")[0].rstrip("/")
        candidate = tail.rsplit("/", 1)[-1] if "/" in tail else tail.split(":")[0]
    elif uri.isdigit():
        candidate = f"camera{uri}"
    else:
        path = Path(uri)
        candidate = path.stem if path.suffix else path.name
    cleaned = re.sub(r"[^A-Za-z0-9_.\-]", "_", candidate).strip("._-") or "stream"
    return cleaned[:64]


def _allowed_keys(loc: tuple) -> list[str]:
    """The keys the model at ``loc``'s parent accepts (list indices skipped)."""
    model: type[BaseModel] = PipelineConfig
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        annotation = model.model_fields[part].annotation
        inner = getattr(annotation, "__args__", (annotation,))[0]
        if isinstance(inner, type) and issubclass(inner, BaseModel):
            model = inner
    return sorted(model.model_fields)


def _describe(error: dict) -> str:
    loc = tuple(error["loc"])
    location = ".".join(str(p) for p in loc) or "(top level)"
    if error["type"] == "extra_forbidden":
        return f"{location}: unknown key; allowed here: {', '.join(_allowed_keys(loc))}"
    if error["type"] == "missing":
        return f"{location}: required key is missing"
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "value_error" and isinstance(error.get("input"), dict):
        return f"{location}: {message}"
    return f"{location}: {message}, got {error.get('input')!r}"


def validate_config(data: object, source: str = "config") -> PipelineConfig:
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping of keys at the top level, got {type(data).__name__}")
    try:
        return PipelineConfig.model_validate(data)
    except ValidationError as exc:
        details = "; ".join(_describe(e) for e in exc.errors())
        raise ConfigError(f"{source}: {details}") from None


def load_config(path: str | Path) -> PipelineConfig:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    return validate_config(data, str(path))
