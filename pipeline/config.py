"""The pipeline's configuration: YAML validated into typed models.

A bad value fails with a message naming the key, the value and what is
allowed (``ConfigError``); the command line prints it as one line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from engines.factory import BACKENDS, REPO_ROOT
from pipeline.errors import ConfigError
from pipeline.sources.config import LiveConfig, ReplayConfig, SourceConfig
from pipeline.state.config import StateConfig

DEFAULT_MODEL = REPO_ROOT / "models" / "synthactions_gru.safetensors"


def is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CaptureConfig(_Model):
    workers: int = Field(default=1, ge=1, le=64, description="capture processes; each serves many streams on threads")
    decoder_threads: int | None = Field(
        default=None, ge=0, le=64,
        description="FFmpeg threads per stream; null: FFmpeg's own choice when the configured streams per capture "
                    "worker are fewer than the cores, else one each (the streams decode in parallel already)",
    )
    decoder: Literal["opencv", "nvdec"] = Field(
        default="opencv", description="nvdec: decode files and network streams on an NVIDIA GPU (PyNvVideoCodec)",
    )
    gpu: int = Field(default=0, ge=0, le=64, description="the GPU NVDEC decodes on")


class EngineConfig(_Model):
    backend: Literal[("auto",) + BACKENDS] = "onnxruntime"  # type: ignore[valid-type]
    onnx_path: Path | None = Field(
        default=None, description="the backbone graph; null: the one make models builds. With precision int8 on "
                                  "ONNX Runtime: an INT8 graph (python -m tools.quantize_backbone)",
    )
    threads: int = Field(default=0, ge=0, le=256, description="intra-op threads per engine (0: the backend's default)")
    spinning: bool = Field(
        default=False, description="ONNX Runtime's idle threads spin: faster alone, slower beside decoders"
    )
    precision: Literal["fp32", "fp16", "int8"] | None = Field(
        default=None,
        description="null: fp32, except that backend auto on a CPU with integer dot products (VNNI, AMX) runs the "
                    "INT8 graph make models builds; fp16 (torch-cuda, tensorrt) and int8 (onnxruntime, tensorrt) "
                    "on request: judge your head on them",
    )
    workers: int | None = Field(
        default=None, ge=1, le=64,
        description="embed worker processes; null: on a CPU one per core (up to 4), each with one thread unless "
                    "threads says otherwise; on a GPU one",
    )
    max_batch_size: int | None = Field(
        default=None, ge=1, le=1024,
        description="the most frames per engine call; default 8 on a CPU, 32 on a GPU. Up to it each call takes "
                    "what is waiting, at the size measured cheapest per frame here",
    )
    max_wait_ms: float = Field(
        default=0.0, ge=0.0, le=10_000.0,
        description="wait up to this long for a fuller batch; 0: a frame goes as soon as the engine is free",
    )
    max_frames_per_s: float = Field(
        default=0.0, ge=0.0, le=1_000_000.0,
        description="cap each embed worker's throughput (0: none), to share a machine or see how the pipeline degrades",
    )


class TemporalConfig(_Model):
    capacity: int = Field(default=256, ge=1, le=100_000, description="streams held at once")
    threads: int = Field(default=1, ge=1, le=256, description="PyTorch threads for the GRU (its matrices are small)")
    device: Literal["cpu", "cuda"] = Field(default="cpu", description="where the GRU and every stream's state live")
    idle_timeout_s: float = Field(default=30.0, gt=0.0)
    reorder_window: int = Field(default=64, ge=0, le=100_000, description="frames held per stream (live sources)")
    reorder_timeout_s: float = Field(default=2.0, gt=0.0, description="wait for a missing frame (live sources)")
    # A replay loses nothing upstream, so a gap is only a slower embed worker and
    # is always filled: replays wait this long before giving a frame up.
    replay_reorder_window: int = Field(default=4096, ge=0, le=1_000_000)
    replay_reorder_timeout_s: float = Field(default=60.0, gt=0.0)
    max_batch_size: int = Field(default=64, ge=1, le=100_000)
    round_wait_ms: float = Field(
        default=40.0, ge=0.0, le=1000.0,
        description="a round of GRU steps waits up to this long after its first ready stream for the others "
                    "(one call for many streams costs about what one costs); 0: each steps as it comes",
    )


class EventsConfig(_Model):
    on_threshold: float = Field(default=0.5, gt=0.0, le=1.0)
    off_threshold: float = Field(default=0.3, gt=0.0, lt=1.0)
    min_on_steps: int = Field(default=2, ge=1)
    min_off_steps: int = Field(default=2, ge=1)
    warmup_steps: int = Field(default=2, ge=0)
    # A start's time goes back to where the score first rose above this (pipeline.events); None: off.
    onset_threshold: float | None = Field(default=None, gt=0.0, le=1.0)

    def hysteresis(self):
        """The detector's own config (pipeline.events), from these validated values."""
        from pipeline.events import HysteresisConfig

        return HysteresisConfig(
            on_threshold=self.on_threshold, off_threshold=self.off_threshold, min_on_steps=self.min_on_steps,
            min_off_steps=self.min_off_steps, warmup_steps=self.warmup_steps, onset_threshold=self.onset_threshold,
        )

    @model_validator(mode="after")
    def _hysteresis_order(self) -> "EventsConfig":
        if not self.off_threshold < self.on_threshold:
            raise ValueError(
                f"off_threshold ({self.off_threshold}) must be below on_threshold ({self.on_threshold})"
            )
        if self.onset_threshold is not None and self.onset_threshold > self.on_threshold:
            raise ValueError(
                f"onset_threshold ({self.onset_threshold}) must not be above on_threshold ({self.on_threshold})"
            )
        return self


def events_for_model(configured: "EventsConfig", from_model: dict | None) -> "EventsConfig":
    """The detector's settings: what the model's checkpoint carries (tuned on its validation streams),
    with every key the user set explicitly taking precedence."""
    if not from_model:
        return configured
    known = {k: v for k, v in from_model.items() if k in EventsConfig.model_fields}
    merged = {**known, **configured.model_dump(include=configured.model_fields_set)}
    try:
        return EventsConfig.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(f"events: the settings given ({configured.model_dump(include=configured.model_fields_set)}) "
                          f"do not fit the model's own ({known}): {describe_validation_error(exc, EventsConfig)}; "
                          "set all of them, or none") from None


class _NetworkOutput(_Model):
    buffer: int = Field(default=1000, ge=1, le=1_000_000,
                        description="events held while the receiver is down; when full the oldest make room (counted)")
    retry_max_s: float = Field(default=30.0, gt=0.0, le=3600.0, description="the longest wait between retries")
    flush_timeout_s: float = Field(default=5.0, ge=0.0, le=600.0, description="at shutdown, time to deliver what is left")
    spool_dir: Path | None = Field(default=None, description="what is still unsent after flush_timeout_s is written "
                                   "here and sent first by the next run (default: counted as lost)")


class WebhookConfig(_NetworkOutput):
    """Each event POSTed as JSON to ``url``, in order; retried with backoff while the receiver is down."""

    url: str = Field(description="http(s)://...; credentials in it become a Basic header and never reach the logs")
    timeout_s: float = Field(default=10.0, gt=0.0, le=300.0, description="per request: no answer by then is a failure, retried")

    @field_validator("url")
    @classmethod
    def _http(cls, url: str) -> str:
        if not url.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return url


class MqttConfig(_NetworkOutput):
    """Events to an MQTT broker: TOPIC_PREFIX/events, TOPIC_PREFIX/<stream>/events, retained
    TOPIC_PREFIX/<stream>/<action> (ON/OFF) and TOPIC_PREFIX/<stream>/state, TOPIC_PREFIX/available."""

    host: str = "127.0.0.1"
    port: int = Field(default=1883, ge=1, le=65535)
    topic_prefix: str = "actionpipe"
    client_id: str | None = Field(default=None, description="default: actionpipe-<pid>")
    username: str | None = None
    password: str | None = None

    @field_validator("topic_prefix")
    @classmethod
    def _topic(cls, prefix: str) -> str:
        from pipeline.outputs.mqtt import TopicLayout

        TopicLayout(prefix)  # raises ValueError naming what is wrong
        return prefix


class OutputsConfig(_Model):
    stdout: bool = True
    events_jsonl: Path | None = None
    scores_jsonl: Path | None = None
    events_pub: str | None = Field(default=None, description="ZeroMQ endpoint to PUB events on, e.g. tcp://127.0.0.1:5557")
    webhook: WebhookConfig | None = None
    mqtt: MqttConfig | None = None
    existing: Literal["rotate", "append"] = Field(
        default="rotate", description="an output file left by an earlier run: rotate it to FILE.1 (FILE.2, ...) or append"
    )
    keep_rotated: int = Field(default=5, ge=1, le=1000)


class MetricsConfig(_Model):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(default=9108, ge=0, le=65535, description="0 picks a free port")


class ControlConfig(_Model):
    """The HTTP/JSON control API: list, add and remove streams; /healthz and /readyz."""

    enabled: bool = True
    host: str = Field(default="127.0.0.1", description="listening beyond loopback requires a token")
    port: int = Field(default=9109, ge=0, le=65535, description="0 picks a free port")
    token: str | None = Field(default=None, min_length=16, description="required as 'Authorization: Bearer TOKEN'")
    require_token: bool = Field(default=False, description="refuse to start without a token, even on loopback")
    media_roots: list[Path] = Field(default_factory=list, description="folders the files added through the API "
                                    "must be in; none: files cannot be added through the API")
    keep_running: bool = Field(default=False, description="stay up when every stream has ended, waiting for new ones")

    @model_validator(mode="after")
    def _token_beyond_loopback(self) -> "ControlConfig":
        if self.enabled and self.require_token and not self.token:
            raise ValueError("require_token is set but there is no token: set control.token (16+ characters)")
        if self.enabled and not is_loopback(self.host) and not self.token:
            raise ValueError(
                f"host {self.host!r} is reachable from other machines: set a token (16+ characters) "
                "or listen on 127.0.0.1"
            )
        return self

    def __repr__(self) -> str:
        return (f"ControlConfig(enabled={self.enabled}, host={self.host!r}, port={self.port}, "
                f"token={'***' if self.token else None}, require_token={self.require_token}, "
                f"media_roots={list(map(str, self.media_roots))})")


class OverlayConfig(_Model):
    """The annotated overlay: the frame, class probabilities as bars, active actions, stream time.

    Drawn by its own stage beside scoring (which never waits for it); feeds
    the videos below and the live page."""

    out_dir: Path | None = Field(default=None, description="an H.264 MP4 per stream in this folder (--overlay-out)")
    width: int = Field(default=480, ge=64, le=3840, description="frames are scaled to this width (never up)")
    jpeg_quality: int = Field(default=80, ge=10, le=100, description="the live page's frames")


class LivePageConfig(_Model):
    """A page in the browser: every stream's state, latest annotated frame, active actions, last events."""

    enabled: bool = Field(default=False, description="--live-port PORT turns it on")
    host: str = Field(default="127.0.0.1", description="it shows camera frames: beyond loopback anyone who can "
                      "reach it sees them")
    port: int = Field(default=9110, ge=0, le=65535, description="0 picks a free port")


class SupervisionConfig(_Model):
    restart_initial_s: float = Field(default=0.2, ge=0.0, le=60.0, description="wait before restarting a dead stage")
    restart_max_s: float = Field(default=10.0, gt=0.0, le=600.0)
    max_restarts: int = Field(default=5, ge=0, le=1000, description="deaths of one stage within restart_window_s before the run fails")
    restart_window_s: float = Field(default=60.0, gt=0.0)
    stop_timeout_s: float = Field(default=20.0, gt=0.0, le=600.0, description="the longest a drain may take before stages are killed")
    double_signal_window_s: float = Field(
        default=2.0, ge=0.0, le=60.0, description="a second SIGTERM/SIGINT/SIGHUP this soon after the first is the same "
        "stop request (timeout and service managers signal the main process, then its group); a later one stops at once")

    def restart_policy(self):
        """When a dead stage is restarted, and when the run gives up on it (pipeline.supervision.restart)."""
        from pipeline.backoff import Backoff
        from pipeline.supervision.restart import RestartPolicy

        backoff = Backoff(self.restart_initial_s, max(self.restart_initial_s, self.restart_max_s))
        return RestartPolicy(backoff, self.max_restarts, self.restart_window_s)


class LoggingConfig(_Model):
    level: Literal["debug", "info", "warning", "error"] = "info"


class TransportConfig(_Model):
    ipc_dir: Path | None = Field(default=None, description="where each run makes its folder (ipc sockets, metrics "
                                 "files); default $XDG_RUNTIME_DIR, else the temp dir")
    # Frames queued per socket; small keeps latency low and embed workers evenly loaded.
    high_water_mark: int = Field(default=4, ge=1, le=100_000)


class PipelineConfig(_Model):
    model: Path = DEFAULT_MODEL
    sources: list[SourceConfig] = Field(default_factory=list)
    live: LiveConfig = LiveConfig()
    replay: ReplayConfig = ReplayConfig()
    capture: CaptureConfig = CaptureConfig()
    engine: EngineConfig = EngineConfig()
    temporal: TemporalConfig = TemporalConfig()
    state: StateConfig = StateConfig()
    events: EventsConfig = EventsConfig()
    outputs: OutputsConfig = OutputsConfig()
    metrics: MetricsConfig = MetricsConfig()
    control: ControlConfig = ControlConfig()
    overlay: OverlayConfig = OverlayConfig()
    live_page: LivePageConfig = LivePageConfig()
    supervision: SupervisionConfig = SupervisionConfig()
    logging: LoggingConfig = LoggingConfig()
    transport: TransportConfig = TransportConfig()

    @model_validator(mode="after")
    def _something_to_run(self) -> "PipelineConfig":
        if not self.sources and not self.control.enabled:
            raise ValueError("no sources and the control API is off: nothing to run")
        return self

    @model_validator(mode="after")
    def _unique_names(self) -> "PipelineConfig":
        if problem := duplicate_names(self.sources):
            raise ValueError(problem)
        return self

    @model_validator(mode="after")
    def _capacity_holds_the_sources(self) -> "PipelineConfig":
        if len(self.sources) > self.temporal.capacity:
            raise ValueError(
                f"{len(self.sources)} sources but temporal.capacity holds {self.temporal.capacity} streams: raise it"
            )
        return self


def stream_name(source: SourceConfig) -> str:
    """The operator's name for a stream: never the URL, which may hold a password."""
    from pipeline.sources.uri import default_stream_name

    return source.name or default_stream_name(source.uri)


def duplicate_names(sources: list[SourceConfig]) -> str | None:
    """A message naming the sources that would share a stream name, or None."""
    from pipeline.sources.uri import redact

    by_name: dict[str, list[str]] = {}
    for source in sources:
        by_name.setdefault(stream_name(source), []).append(redact(source.uri))
    clashes = {name: uris for name, uris in by_name.items() if len(uris) > 1}
    if not clashes:
        return None
    detail = "; ".join(f"{' and '.join(repr(u) for u in uris)} would all be {name!r}" for name, uris in sorted(clashes.items()))
    return (f"stream names must be unique: {detail}. Give the sources distinct names "
            "('name:' in a config, or --source NAME=URI)")


def live_settings(source: SourceConfig, live: LiveConfig):
    """The reconnect policy, open timeout and stale limit of one source (its own overrides first)."""
    stale = source.stale_after_s or live.stale_after_s
    reconnect = source.reconnect or live.reconnect
    return reconnect.policy(stale), source.open_timeout_s or live.open_timeout_s


def _allowed_keys(loc: tuple, root: type[BaseModel]) -> list[str]:
    """The keys the model at ``loc``'s parent accepts (list indices skipped)."""
    model: type[BaseModel] = root
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        annotation = model.model_fields[part].annotation
        inner = getattr(annotation, "__args__", (annotation,))[0]
        if isinstance(inner, type) and issubclass(inner, BaseModel):
            model = inner
    return sorted(model.model_fields)


def _describe(error: dict, root: type[BaseModel]) -> str:
    loc = tuple(error["loc"])
    location = ".".join(str(p) for p in loc) or "(top level)"
    if error["type"] == "extra_forbidden":
        return f"{location}: unknown key; allowed here: {', '.join(_allowed_keys(loc, root))}"
    if error["type"] == "missing":
        return f"{location}: required key is missing"
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "value_error" and (isinstance(error.get("input"), dict) or loc[-1:] == ("uri",)):
        return f"{location}: {message}"  # the message already names the (redacted) URI
    return f"{location}: {message}, got {_shown(loc, error.get('input'))}"


def _shown(loc: tuple, value: object) -> str:
    """A rejected value as an error may show it: secrets masked, URLs redacted."""
    from pipeline.sources.uri import redact

    if any(str(part) in ("token", "password") for part in loc):
        return "***"
    if isinstance(value, str):
        return repr(redact(value))
    return repr(value)


def describe_validation_error(exc: ValidationError, root: type[BaseModel]) -> str:
    """Every problem in one line: the key, what is wrong, the (redacted) value or the allowed keys."""
    return "; ".join(_describe(e, root) for e in exc.errors())


def validate_config(data: object, source: str = "config", model: type[BaseModel] = PipelineConfig):
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping of keys at the top level, got {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{source}: {describe_validation_error(exc, model)}") from None


def load_yaml_mapping(path: str | Path) -> dict:
    """A YAML file's contents (the caller checks for a mapping); ConfigError naming a missing or bad file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    return data


def load_config(path: str | Path) -> PipelineConfig:
    return validate_config(load_yaml_mapping(path), str(path))
