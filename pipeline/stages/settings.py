"""What each stage process is started with: one typed, frozen settings object per stage kind.

The supervisor builds them (``pipeline.supervision.plan``) and writes one as
JSON to the new process's stdin (never its command line, where ``ps`` would
show stream URLs); the process reads it back with :func:`decode_settings`.
Both sides use these classes, so a key that one side misspells, forgets or
no longer knows fails loudly at the start (:class:`StageSettingsError`)
instead of being filtered out or filled in with a second default.

Light on purpose: a capture process imports this module and must not load
an inference runtime.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from enum import Enum
from typing import Any, ClassVar

from pipeline.config import EngineConfig, EventsConfig, OutputsConfig, TemporalConfig
from pipeline.errors import ActionPipeError
from pipeline.state.config import StateConfig


class StageKind(str, Enum):
    """The kinds of stage process, in the order frames pass through them."""

    CAPTURE = "capture"
    EMBED = "embed"
    TEMPORAL = "temporal"
    OVERLAY = "overlay"


class StageSettingsError(ActionPipeError, ValueError):
    """Settings a stage process cannot start with (a bug in the supervisor, or two versions of this code)."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class ProcessSettings:
    """What every stage process is started with."""

    stage: str  # its name on the control channel: capture:0, embed:1, temporal, overlay
    control_endpoint: str
    parent_pid: int
    run_dir: str  # the run's folder: its sockets, metrics and live board
    log_level: str = "info"
    high_water_mark: int = 4  # frames a socket queues (transport.high_water_mark)


@dataclasses.dataclass(frozen=True, kw_only=True)
class FedSettings(ProcessSettings):
    """A stage fed through a socket it binds (embed, temporal, overlay)."""

    in_endpoint: str
    # Told to drain, the stage ends after this long without work: everything upstream sent before it
    # exited is queued here by then, so a short quiet spell is the end of it.
    drain_idle_s: float = 0.1


@dataclasses.dataclass(frozen=True, kw_only=True)
class CaptureSettings(ProcessSettings):
    kind: ClassVar[StageKind] = StageKind.CAPTURE

    embed_endpoints: tuple[str, ...]
    # The model's input and step rate (from the head's metadata).
    width: int
    height: int
    step_rate: float
    decoder_threads: int = 1  # FFmpeg threads per stream (0: FFmpeg's choice); the supervisor decides
    decoder: str = "opencv"  # or "nvdec"
    gpu: int = 0
    # The overlay stage (if any): a preview of every frame sent to the model goes there, this wide.
    preview_endpoint: str = ""
    preview_width: int = 0


@dataclasses.dataclass(frozen=True, kw_only=True)
class EmbedSettings(FedSettings):
    kind: ClassVar[StageKind] = StageKind.EMBED

    worker: int
    engine: EngineConfig
    onnx_path: str | None  # resolved by the supervisor (the engine config's own may be unset)
    out_endpoint: str


@dataclasses.dataclass(frozen=True, kw_only=True)
class TemporalSettings(FedSettings):
    kind: ClassVar[StageKind] = StageKind.TEMPORAL

    model_path: str
    temporal: TemporalConfig
    events: EventsConfig  # the model's tuned settings with the config's explicit keys on top
    outputs: OutputsConfig
    overlay_endpoint: str = ""  # scored steps and events also go to the overlay stage, if any
    # Durable state: how often, and whether to restore; the folder snapshots go to (state.dir, else the
    # run's own folder), and whether each is fsynced (only worth it where the folder outlives the machine).
    state: StateConfig = dataclasses.field(default_factory=StateConfig)
    state_folder: str = ""  # "": no snapshots (a worker built by a test)
    state_fsync: bool = False
    # The backbone graph the embed workers run (None: the PyTorch backbone): part of a state's identity.
    onnx_path: str | None = None
    # Set when this worker replaces one that died.
    restarted: bool = False
    # stream -> the generation the predecessor was in the middle of (its seqs do not restart at 0 here).
    known_generations: dict[str, int] = dataclasses.field(default_factory=dict)
    # stream -> {"t": last step time, "actions": {action: confidence}} the predecessor reported open.
    orphaned_actions: dict[str, dict] = dataclasses.field(default_factory=dict)
    # Replays the supervisor reads again from their snapshot when this worker restores them (no loop, not live).
    rewind: tuple[str, ...] = ()
    # The first part of every event id: drawn once per run, so a restarted worker names a re-decided event alike.
    event_epoch: str = ""


@dataclasses.dataclass(frozen=True, kw_only=True)
class OverlaySettings(FedSettings):
    kind: ClassVar[StageKind] = StageKind.OVERLAY

    # The model's step rate, its start threshold (marked on each bar) and its classes.
    step_rate: float
    on_threshold: float
    classes: tuple[str, ...]
    width: int  # the preview frames' width (capture scales them; the panel comes beside)
    out_dir: str | None = None
    live_dir: str | None = None
    existing: str = "rotate"
    keep_rotated: int = 5
    jpeg_quality: int = 80
    drain_idle_s: float = 0.2


StageSettings = CaptureSettings | EmbedSettings | TemporalSettings | OverlaySettings

SETTINGS_BY_KIND: dict[StageKind, type] = {cls.kind: cls for cls in (CaptureSettings, EmbedSettings,
                                                                       TemporalSettings, OverlaySettings)}


def encode_settings(settings: StageSettings) -> str:
    """``settings`` as the JSON object a stage process reads from its stdin."""
    values = {f.name: getattr(settings, f.name) for f in dataclasses.fields(settings)}
    return json.dumps(values, default=_jsonable, separators=(",", ":"))


def _jsonable(value: object) -> object:
    if hasattr(value, "model_dump"):  # a config section
        return value.model_dump(mode="json")
    raise TypeError(f"{type(value).__name__} cannot travel in stage settings")


def decode_settings(kind: StageKind, text: str) -> StageSettings:
    """The settings of a ``kind`` process from the JSON its supervisor wrote; unknown or missing keys fail."""
    cls = SETTINGS_BY_KIND[kind]
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise StageSettingsError(f"{kind.value} settings are not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise StageSettingsError(f"{kind.value} settings must be a JSON object, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    if unknown := sorted(set(data) - known):
        raise StageSettingsError(f"{kind.value} settings: unknown key(s) {', '.join(unknown)}; "
                                 f"known: {', '.join(sorted(known))}")
    required = {f.name for f in dataclasses.fields(cls)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
    if missing := sorted(required - set(data)):
        raise StageSettingsError(f"{kind.value} settings: missing key(s) {', '.join(missing)}")
    try:
        return cls(**{name: _typed(hints[name], value) for name, value in data.items()})
    except (TypeError, ValueError) as exc:
        raise StageSettingsError(f"{kind.value} settings: {exc}") from None


def _typed(hint: Any, value: Any) -> Any:
    """JSON values back into what the field holds: tuples from lists, config sections from objects."""
    if isinstance(hint, type) and hasattr(hint, "model_validate"):
        return hint.model_validate(value)
    if typing.get_origin(hint) is tuple and isinstance(value, list):
        return tuple(value)
    return value
