"""The ``state`` section of the configuration: how often streams are snapshotted, where, and restoring them.

Here rather than in ``pipeline/config.py`` so that the section lives beside
what it configures; that module imports it into ``PipelineConfig``.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator


class StateConfig(BaseModel):
    # The same rules as every section of pipeline/config.py (which this module cannot import: it imports us).
    model_config = ConfigDict(extra="forbid", frozen=True)

    snapshot_interval_s: float = Field(
        default=1.0, gt=0.0, le=3600.0,
        description="a stream's state is written at most this often (and at every drained stop)")
    max_age_s: float = Field(
        default=10.0, gt=0.0, le=30 * 86400.0,
        description="an older snapshot is not continued: the stream starts a new sequence")
    dir: Path | None = Field(
        default=None,
        description="a folder that outlives the run, for restoring streams across restarts; "
                    "null: snapshots live in the run's folder (a crashed stage's streams continue, a new run starts fresh)")
    shared: bool = Field(
        default=False,
        description="dir is a folder several machines mount (NFS and the like), read by other nodes after "
                    "this one dies: reads retried while a file is replaced, writes named per host (cluster mode sets it)")
    restore: bool = Field(default=True, description="continue streams from their snapshots (--no-restore: start fresh)")

    @model_validator(mode="after")
    def _interval_within_age(self) -> "StateConfig":
        if self.shared and self.dir is None:
            raise ValueError("shared: true needs dir, the folder every node mounts")
        # Otherwise the newest snapshot a crash leaves may always be too old to continue.
        if self.snapshot_interval_s >= self.max_age_s:
            raise ValueError(f"snapshot_interval_s ({self.snapshot_interval_s}) must be below max_age_s ({self.max_age_s})")
        return self
