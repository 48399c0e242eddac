"""Everything about a run that can be checked before a process starts.

A bad model, too many workers for this machine, an output file that cannot
be written, a ZeroMQ endpoint that cannot be bound, an overlay folder that
cannot be made: each is refused here with one line naming the setting
(:class:`~pipeline.errors.ConfigError`), before any stage has started and
before any output file was touched (other than rotating an old one aside).
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import zmq

from engines.base import EngineUnavailableError
from engines.cpu_features import INT8_REFUSAL
from engines.factory import DEFAULT_INT8_ONNX_PATH, DEFAULT_ONNX_PATH, int8_graph
from engines.head_config import HeadConfig, read_head_config, read_head_events
from pipeline.config import EngineConfig, EventsConfig, PipelineConfig, SourceConfig, events_for_model
from pipeline.errors import ConfigError
from pipeline.outputs.files import OutputError, prepare_output
from pipeline.supervision.limits import MachineFacts, check_worker_counts, embed_layout, engine_precision, machine_facts
from pipeline.supervision.registry import StreamRequestError

logger = logging.getLogger(__name__)

# The command line's flag for each output path it can set, named beside the config key when refused.
FLAGS = {"outputs.events_jsonl": "--events-out", "outputs.scores_jsonl": "--scores-out",
         "overlay.out_dir": "--overlay-out"}


@dataclass(frozen=True)
class Checked:
    """What the checks learnt that the run needs."""

    head: HeadConfig
    events: EventsConfig  # the model's tuned event settings, with the config's explicit keys on top
    engine: EngineConfig  # workers, threads and precision as they run on this machine (embed_layout, engine_precision)


def preflight(config: PipelineConfig, machine: MachineFacts | None = None) -> Checked:
    """Raises ConfigError naming the first setting this run cannot use."""
    head = read_head_config(config.model)
    events = events_for_model(config.events, read_head_events(config.model))
    facts = machine or machine_facts()
    layout = embed_layout(config.engine.backend, config.engine.workers, config.engine.threads, facts)
    precision = engine_precision(config.engine.backend, config.engine.precision, config.engine.onnx_path is not None,
                                 DEFAULT_INT8_ONNX_PATH.is_file(), facts)
    engine = config.engine.model_copy(update={"workers": layout.workers, "threads": layout.threads,
                                              "precision": precision})
    on_cpu = config.engine.backend == "onnxruntime" or (config.engine.backend == "auto" and not facts.nvidia_gpu)
    if precision == "int8" and on_cpu and not facts.int8_dot:
        raise ConfigError(f"engine.precision int8: {INT8_REFUSAL}")
    if precision != (config.engine.precision or "fp32"):
        logger.info("engine auto: the INT8 graph on this CPU (it has integer dot products); "
                    "engine.precision: fp32 keeps FP32")
    problems = check_worker_counts(engine.workers, config.capture.workers, facts,
                                   gpu_backend=engine.backend.endswith("cuda") or engine.backend == "tensorrt")
    if problems:
        raise ConfigError("; ".join(problems))
    outputs = config.outputs
    for setting, path in (("outputs.events_jsonl", outputs.events_jsonl), ("outputs.scores_jsonl", outputs.scores_jsonl)):
        if path is not None:
            try:
                prepare_output(Path(path), setting, outputs.existing, outputs.keep_rotated)
            except OutputError as exc:
                raise ConfigError(f"{exc} (the {FLAGS[setting]} flag)") from None
    if outputs.events_pub:
        _check_bindable(outputs.events_pub, "outputs.events_pub")
    if config.overlay.out_dir is not None:
        check_writable_folder(Path(config.overlay.out_dir), "overlay.out_dir")
    return Checked(head, events, engine)


def check_writable_folder(folder: Path, setting: str) -> None:
    """``folder`` exists (made if need be) and a file can be written in it: found now, not after start.

    A file is really made and removed: permission bits do not tell (root, ACLs, a read-only mount)."""
    flag = f" (the {FLAGS[setting]} flag)" if setting in FLAGS else ""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"{setting}: cannot create {folder} ({exc.strerror}){flag}; "
                          "choose a folder this user can write") from None
    try:
        with tempfile.TemporaryFile(dir=folder, prefix=".actionpipe-check-"):
            pass
    except OSError as exc:
        raise ConfigError(f"{setting}: cannot write in {folder} ({exc.strerror}){flag}; "
                          "choose a folder this user can write") from None


def check_writable_file(path: Path, setting: str) -> None:
    """``path`` can be written at the end of the run; checked before it starts. A file made to find out
    is removed again, so a run refused later leaves none."""
    if not path.parent.is_dir():
        raise ConfigError(f"{setting}: folder {path.parent} does not exist (create it, or choose another path)")
    if path.is_dir():
        raise ConfigError(f"{setting}: {path} is a folder; give a file path")
    existed = path.exists()
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644))
    except OSError as exc:
        raise ConfigError(f"{setting}: {path} cannot be written: {exc.strerror}") from None
    if not existed:
        path.unlink()


def onnx_path_for(engine: EngineConfig) -> str | None:
    """The backbone graph the embed workers load (exported once if it is the default and missing), or
    None for a backend that does not read one. ONNX Runtime in INT8 reads the quantized graph."""
    if not (engine.backend.startswith("onnxruntime") or engine.backend in ("auto", "tensorrt")):
        return None
    if engine.precision == "int8" and engine.backend != "tensorrt":
        try:
            return str(int8_graph(engine.onnx_path).resolve())
        except EngineUnavailableError as exc:
            raise ConfigError(f"engine.precision int8: {exc}") from None
    if engine.onnx_path is not None:
        if not Path(engine.onnx_path).is_file():
            raise ConfigError(f"engine.onnx_path: {engine.onnx_path} does not exist")
        return str(Path(engine.onnx_path).resolve())
    if not DEFAULT_ONNX_PATH.is_file():
        logger.info("exporting the ONNX backbone to %s (once)", DEFAULT_ONNX_PATH)
        from engines.backbone import ensure_onnx

        ensure_onnx(DEFAULT_ONNX_PATH)
    return str(DEFAULT_ONNX_PATH)


def check_recorded_source(source: SourceConfig) -> None:
    """A request for a file or folder that cannot be opened is refused before anything changes."""
    from pipeline.sources.frames import SourceOpenError
    from pipeline.sources.readers import open_source

    try:
        open_source(source.uri, image_fps=source.image_fps).close()
    except SourceOpenError as exc:
        raise StreamRequestError(str(exc)) from None


def _check_bindable(endpoint: str, setting: str) -> None:
    context = zmq.Context.instance()
    probe = context.socket(zmq.PUB)
    probe.setsockopt(zmq.LINGER, 0)
    try:
        probe.bind(endpoint)
    except zmq.ZMQError as exc:
        raise ConfigError(f"{setting}: cannot bind {endpoint}: {exc}") from None
    finally:
        probe.close()
