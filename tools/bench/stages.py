"""Each stage's work alone, and a hand-written loop, on the benchmark's videos:

* decode alone: decode every frame, convert and resize the sampled ones
  (what capture does), one decoder thread, one stream at a time;
* the engine alone at batch 1, 2, 4, 8, 16, for the ONNX Runtime settings worth comparing;
* one batched GRU step for 1 to 256 streams;
* the naive loop: read, sample, resize, embed at batch 1, GRU step, streams
  round-robin in one Python loop (what people write by hand);
* NVDEC decode alone (GPU machines).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from engines.base import EngineUnavailableError
from engines.factory import DEFAULT_ONNX_PATH, int8_graph
from tools.bench.paths import MODEL
from tools.cli import UsageError
from tools.testbed.frames import first_frames


def decode_alone(videos: list[Path], step_rate: float, size: int = 224) -> dict:
    """Capture's work without the sending: decode all, convert and resize the sampled frames."""
    import cv2

    from pipeline.sources.decoding import prepare_frame
    from pipeline.sources.sampling import StepSampler

    frames = steps = 0
    wall0, cpu0 = time.perf_counter(), time.process_time()
    for video in videos:
        capture = cv2.VideoCapture(str(video), cv2.CAP_FFMPEG, [cv2.CAP_PROP_N_THREADS, 1])
        sampler = StepSampler(step_rate)
        while capture.grab():
            frames += 1
            t = capture.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
            if sampler.accept(t):
                ok, image = capture.retrieve()
                if ok:
                    prepare_frame(image, size, size)
                    steps += 1
        capture.release()
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    return {"frames": frames, "steps": steps, "frames_per_s": frames / wall, "steps_per_s": steps / wall,
            "cpu_s_per_step": cpu / steps}


def sample_frames(video: Path, count: int = 64, size: int = 224) -> np.ndarray:
    """The first ``count`` frames of ``video`` prepared for the backbone, as one batch."""
    from pipeline.sources.decoding import prepare_frame

    return np.stack([prepare_frame(image, size, size) for image in first_frames(video, count)])


def graph_for(precision: str) -> Path:
    """The backbone graph ONNX Runtime runs at ``precision`` (fp32, int8: the one make models builds)."""
    if precision == "fp32":
        return DEFAULT_ONNX_PATH
    try:
        return int8_graph()
    except EngineUnavailableError as exc:
        raise UsageError(str(exc)) from None


def engine_alone(frames: np.ndarray, seconds: float, graph: Path = DEFAULT_ONNX_PATH) -> list[dict]:
    """Frames/s and CPU-s per frame at each batch size, for the ONNX Runtime settings worth comparing."""
    from engines.onnxruntime_engine import OnnxRuntimeEngine

    rows = []
    for threads, spinning in ((0, True), (0, False), (1, False)):
        engine = OnnxRuntimeEngine(graph, intra_op_threads=threads, allow_spinning=spinning)
        for batch in (1, 2, 4, 8, 16):
            rows.append({"threads": threads or "default", "spinning": spinning, "batch": batch,
                         **_timed(engine, frames, batch, seconds)})
        engine.close()
    return rows


def engine_setting(frames: np.ndarray, seconds: float, setting: dict, graph: Path = DEFAULT_ONNX_PATH) -> dict:
    """One row of :func:`engine_alone` timed again: ``setting``'s threads, spinning and batch."""
    from engines.onnxruntime_engine import OnnxRuntimeEngine

    threads = 0 if setting["threads"] == "default" else setting["threads"]
    engine = OnnxRuntimeEngine(graph, intra_op_threads=threads, allow_spinning=setting["spinning"])
    try:
        return {**setting, **_timed(engine, frames, setting["batch"], seconds)}
    finally:
        engine.close()


def _timed(engine, frames: np.ndarray, batch: int, seconds: float) -> dict:
    engine.embed(frames[:batch])  # warm-up: the arena grows to this batch once
    done = 0
    wall0, cpu0 = time.perf_counter(), time.process_time()
    while time.perf_counter() - wall0 < seconds:
        start = done % (len(frames) - batch + 1)
        engine.embed(frames[start:start + batch])
        done += batch
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    return {"frames_per_s": done / wall, "cpu_s_per_frame": cpu / done}


def gru_alone(seconds: float, device: str = "cpu", counts: tuple[int, ...] = (1, 4, 16, 64, 256)) -> list[dict]:
    """One batched GRU step (state table gather, step, scatter, scores back on the host) for N streams."""
    from engines.temporal_head import load_head
    from pipeline.stages.temporal.state_table import StepInput, StreamStateTable

    head, _ = load_head(MODEL, device=device)
    rng = np.random.default_rng(0)
    rows = []
    for streams in counts:
        table = StreamStateTable(head, streams, 3600.0, device=device)
        inputs = [StepInput(f"s{i}", 0, 0.0, rng.normal(size=1280).astype(np.float32),
                            rng.uniform(size=head.config.backbone.stats_dim).astype(np.float32)) for i in range(streams)]
        table.step(inputs, 0.0)
        steps = 0
        start = time.perf_counter()
        while time.perf_counter() - start < seconds:
            table.step(inputs, 0.0)
            steps += 1
        elapsed = time.perf_counter() - start
        rows.append({"streams": streams, "ms_per_step": 1000 * elapsed / steps, "stream_steps_per_s": streams * steps / elapsed})
    return rows


def naive_loop(videos: list[Path], step_rate: float, graph: Path = DEFAULT_ONNX_PATH) -> dict:
    """What a hand-written OpenCV loop does: every stream in turn, one frame at a time, batch 1."""
    import cv2
    import torch

    from engines.onnxruntime_engine import OnnxRuntimeEngine
    from engines.temporal_head import load_head
    from pipeline.sources.decoding import prepare_frame
    from pipeline.sources.sampling import StepSampler

    engine = OnnxRuntimeEngine(graph)
    head, _ = load_head(MODEL)
    captures = [cv2.VideoCapture(str(v)) for v in videos]
    samplers = [StepSampler(step_rate) for _ in videos]
    states = [head.initial_state(1) for _ in videos]
    steps = 0
    start = time.perf_counter()
    live = list(range(len(videos)))
    with torch.inference_mode():
        while live:
            for i in list(live):
                ok, image = captures[i].read()
                if not ok:
                    live.remove(i)
                    continue
                if not samplers[i].accept(captures[i].get(cv2.CAP_PROP_POS_MSEC) / 1000.0):
                    continue
                out = engine.embed(prepare_frame(image, 224, 224)[None])
                _, states[i] = head.step(torch.from_numpy(out.embedding), torch.from_numpy(out.stats), states[i])
                steps += 1
    elapsed = time.perf_counter() - start
    return {"steps": steps, "steps_per_s": steps / elapsed}


def nvdec_decode_alone(videos: list[Path], step_rate: float) -> dict:
    """Frames/s and steps/s of NVDEC decoding every frame and preparing the sampled ones."""
    from pipeline.sources.nvdec import NvdecReader
    from pipeline.sources.sampling import StepSampler

    frames = steps = 0
    start = time.perf_counter()
    for video in videos:
        reader, sampler = NvdecReader(str(video), False, 224, 224), StepSampler(step_rate)
        try:
            while (frame := reader.read(sampler.accept)) is not None:
                frames += 1
                steps += frame.image is not None
        finally:
            reader.close()
    elapsed = time.perf_counter() - start
    return {"frames_per_s": frames / elapsed, "steps_per_s": steps / elapsed}
