"""The configuration of sources: each stream's entry, the defaults for live ones, and how
recordings are replayed. Beside the sources it configures; ``pipeline/config.py`` imports
it into ``PipelineConfig``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from pipeline.sources.uri import STREAM_NAME_PATTERN as _STREAM_NAME


class _Model(BaseModel):
    # The same rules as every section of pipeline/config.py (which this module cannot import: it imports us).
    model_config = ConfigDict(extra="forbid", frozen=True)


class ReconnectConfig(_Model):
    """How a live source that drops or cannot be opened is retried (exponential backoff with jitter)."""

    initial_s: float = Field(default=0.5, ge=0.0, le=3600.0, description="wait before the first retry")
    max_s: float = Field(default=30.0, gt=0.0, le=86400.0, description="the longest wait between retries")
    multiplier: float = Field(default=2.0, ge=1.0, le=10.0)
    jitter: float = Field(default=0.2, ge=0.0, le=1.0, description="each wait moves by up to this share of itself")
    max_attempts: int | None = Field(default=None, ge=1, description="consecutive failures before the stream fails; null: never")
    stable_s: float = Field(
        default=10.0, gt=0.0, le=3600.0,
        description="a reopened source counts as recovered (its backoff starts over) after delivering frames this "
                    "long; one that drops sooner is 'flapping' and stays reconnecting",
    )
    slow_s: float = Field(
        default=60.0, gt=0.0, le=86400.0,
        description="the wait between attempts while the server answers what needs a person (401, 403, 404)",
    )

    @model_validator(mode="after")
    def _bounds_in_order(self) -> "ReconnectConfig":
        if self.initial_s > self.max_s:
            raise ValueError(f"initial_s ({self.initial_s}) must not exceed max_s ({self.max_s})")
        return self

    def policy(self, stale_after_s: float):
        from pipeline.backoff import Backoff
        from pipeline.sources.lifecycle import ReconnectPolicy

        return ReconnectPolicy(Backoff(self.initial_s, self.max_s, self.multiplier, self.jitter), self.max_attempts,
                               stale_after_s, self.stable_s, self.slow_s)


class LiveConfig(_Model):
    """Defaults for every live source (cameras, network streams); a source may override them."""

    reconnect: ReconnectConfig = ReconnectConfig()
    stale_after_s: float = Field(default=5.0, gt=0.0, le=3600.0, description="no frame for this long: reconnect")
    open_timeout_s: float = Field(default=10.0, gt=0.0, le=300.0)
    buffer_frames: int = Field(default=2, ge=1, le=1000, description="sampled frames held per stream; the oldest is dropped")


class SourceConfig(_Model):
    uri: str = Field(min_length=1, description="file, image folder, camera index or /dev/videoN, rtsp:// or http(s):// URL")
    name: str | None = Field(default=None, description="stream name in outputs and metrics; default: the file's stem")
    mode: Literal["auto", "replay", "live"] = "auto"
    reconnect: ReconnectConfig | None = Field(default=None, description="live sources: overrides live.reconnect")
    stale_after_s: float | None = Field(default=None, gt=0.0, le=3600.0)
    open_timeout_s: float | None = Field(default=None, gt=0.0, le=300.0)
    image_fps: float | None = Field(default=None, gt=0.0, le=1000.0, description="image folders: frames per second")
    replay_speed: float | None = Field(
        default=None, gt=0.0, le=100.0,
        description="a paced recording (a file replayed live, say) runs at this multiple of its own rate; "
                    "overrides replay.speed: a camera whose clock runs fast or slow",
    )
    rtsp_transport: Literal["auto", "tcp", "udp", "http"] = Field(
        default="auto", description="rtsp:// sources: RTP over the RTSP connection (tcp), on its own ports (udp), "
                                    "tunnelled in HTTP (http); auto: TCP, then UDP when the server refuses TCP",
    )

    @field_validator("uri")
    @classmethod
    def _uri_names_a_source(cls, value: str) -> str:
        from pipeline.sources.uri import UriError, classify

        try:
            classify(value)
        except UriError as exc:
            raise ValueError(str(exc)) from None
        return value

    @model_validator(mode="after")
    def _transport_for_rtsp_only(self) -> "SourceConfig":
        if self.rtsp_transport != "auto" and not self.uri.lower().startswith(("rtsp://", "rtsps://")):
            raise ValueError(f"rtsp_transport {self.rtsp_transport!r} is for rtsp:// sources; this one is "
                             f"{self!s}")
        return self

    @field_validator("name")
    @classmethod
    def _name_is_a_label(cls, value: str | None) -> str | None:
        if value is not None and not _STREAM_NAME.match(value):
            raise ValueError("must be 1-64 letters, digits, '_', '-' or '.', starting with a letter or digit")
        return value

    def __repr__(self) -> str:  # the URI may hold a password
        from pipeline.sources.uri import redact

        return f"SourceConfig(uri={redact(self.uri)!r}, name={self.name!r}, mode={self.mode!r})"

    __str__ = __repr__


class ReplayConfig(_Model):
    realtime: bool = Field(default=True, description="pace recorded sources at their own frame rate")
    speed: float = Field(
        default=1.0, gt=0.0, le=100.0,
        description="paced recorded sources run at this multiple of their own rate (2: twice as fast)",
    )
    loop: bool = False
