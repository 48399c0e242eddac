"""What each stage process and each stream is started with, decided from the run's config.

The run's stages, wired through ipc sockets in the run's folder:

    capture:i --frames--> embed:j --embeddings--> temporal
    capture:i --previews--> overlay <--steps and events-- temporal   (only with an overlay video or the live page)

Pure: config in, typed settings (:mod:`pipeline.stages.settings`) and
``AddStream`` messages out.
"""

from __future__ import annotations

import dataclasses
import secrets
from pathlib import Path

from engines.head_config import HeadConfig
from pipeline.config import EventsConfig, PipelineConfig, live_settings
from pipeline.sources.uri import SourceKind, classify
from pipeline.stages.settings import CaptureSettings, EmbedSettings, OverlaySettings, StageSettings, TemporalSettings
from pipeline.supervision.limits import decoder_threads_for
from pipeline.supervision.registry import StreamEntry
from pipeline.supervision.run_folder import RunFolder
from pipeline.transport.control import AddStream


def overlay_wanted(config: PipelineConfig) -> bool:
    return config.overlay.out_dir is not None or config.live_page.enabled


def stage_settings(config: PipelineConfig, head: HeadConfig, events: EventsConfig, onnx_path: str | None,
                   folder: RunFolder, control_endpoint: str, parent_pid: int, cpu_count: int) -> list[StageSettings]:
    """Every stage process of the run, downstream first (the order they are started in)."""
    process = {"control_endpoint": control_endpoint, "parent_pid": parent_pid, "run_dir": str(folder.path),
               "log_level": config.logging.level, "high_water_mark": config.transport.high_water_mark}
    temporal_endpoint = folder.endpoint("temporal")
    embed_endpoints = tuple(folder.endpoint(f"embed-{i}") for i in range(config.engine.workers))
    overlay_endpoint = folder.endpoint("overlay") if overlay_wanted(config) else ""
    outputs = config.outputs.model_copy(update={
        key: Path(path).resolve() for key in ("events_jsonl", "scores_jsonl")
        if (path := getattr(config.outputs, key)) is not None
    })
    stages: list[StageSettings] = [TemporalSettings(
        stage="temporal", **process, model_path=str(Path(config.model).resolve()), temporal=config.temporal,
        events=events, outputs=outputs, in_endpoint=temporal_endpoint, overlay_endpoint=overlay_endpoint,
        state=config.state, onnx_path=onnx_path, **state_folder(config, folder), event_epoch=secrets.token_hex(4),
    )]
    if overlay_endpoint:
        out_dir = config.overlay.out_dir
        stages.append(OverlaySettings(
            stage="overlay", **process, classes=tuple(head.classes), step_rate=head.step_rate_hz,
            on_threshold=events.on_threshold, width=config.overlay.width, in_endpoint=overlay_endpoint,
            out_dir=str(Path(out_dir).resolve()) if out_dir else None,
            live_dir=str(folder.live) if config.live_page.enabled else None,
            keep_rotated=config.outputs.keep_rotated, jpeg_quality=config.overlay.jpeg_quality,
        ))
    for i, endpoint in enumerate(embed_endpoints):
        stages.append(EmbedSettings(
            stage=f"embed:{i}", **process, worker=i, engine=config.engine, onnx_path=onnx_path,
            in_endpoint=endpoint, out_endpoint=temporal_endpoint,
        ))
    decoder_threads = config.capture.decoder_threads
    if decoder_threads is None:
        decoder_threads = decoder_threads_for(len(config.sources), config.capture.workers, cpu_count)
    for i in range(config.capture.workers):
        stages.append(CaptureSettings(
            stage=f"capture:{i}", **process, embed_endpoints=embed_endpoints, width=head.backbone.input_width,
            height=head.backbone.input_height, step_rate=head.step_rate_hz, decoder_threads=decoder_threads,
            decoder=config.capture.decoder, gpu=config.capture.gpu, preview_endpoint=overlay_endpoint,
            preview_width=config.overlay.width if overlay_endpoint else 0,
        ))
    return stages


def state_folder(config: PipelineConfig, folder: RunFolder) -> dict:
    """Where the temporal worker keeps snapshots: ``state.dir`` (fsynced: it is there to outlive the
    machine's uptime), else the run's own folder (a crashed worker's successor reads them back; the
    page cache outlives a process, so no fsync)."""
    if config.state.dir is not None:
        return {"state_folder": str(Path(config.state.dir).resolve()), "state_fsync": True}
    return {"state_folder": str(folder.path / "state"), "state_fsync": False}


def add_stream_message(config: PipelineConfig, entry: StreamEntry, start_t: float | None) -> AddStream:
    """What a capture process is told to serve ``entry`` with (``start_t``: where a live stream's
    time resumes after a capture restart)."""
    source = entry.source
    policy, open_timeout = live_settings(source, config.live)
    uri = source.uri
    classified = classify(uri)
    if classified.kind in (SourceKind.FILE, SourceKind.FOLDER):
        uri = str(Path(classified.raw).resolve())  # a plain path (file:// taken off): stages need not share our cwd
    backoff = policy.backoff
    return AddStream(
        stream=entry.name, uri=uri, live=entry.live, realtime=config.replay.realtime or entry.live,
        loop=config.replay.loop, generation=entry.generation, open_timeout_s=open_timeout,
        stale_after_s=policy.stale_after_s, buffer_frames=config.live.buffer_frames,
        reconnect={"initial_s": backoff.initial_s, "max_s": backoff.max_s, "multiplier": backoff.multiplier,
                   "jitter": backoff.jitter, "max_attempts": policy.max_attempts, "stable_s": policy.stable_s,
                   "slow_s": policy.slow_s},
        image_fps=source.image_fps, resume_after_t=entry.resume_after_t,
        start_t=start_t if entry.start_reason == "restart" else entry.start_t, start_reason=entry.start_reason,
        rtsp_transport=source.rtsp_transport, speed=source.replay_speed or config.replay.speed,
    )


def temporal_after_restart(settings: TemporalSettings, known_generations: dict[str, int],
                           open_actions: dict[str, dict], rewind: tuple[str, ...] = ()) -> TemporalSettings:
    """A replacement temporal worker's settings: it ends the actions its predecessor reported open
    (their state died with it), takes each stream's sequence numbers as they come in the
    generation its predecessor was in the middle of, and waits for the replays in ``rewind`` to be
    read again from their snapshots (it keeps the run's event epoch)."""
    return dataclasses.replace(settings, restarted=True, known_generations=known_generations,
                               orphaned_actions=open_actions, rewind=rewind)
