"""Cheaper CPU engines side by side with the default, in one run (``python -m tools.benchmark_engines
--candidates``): ONNX Runtime FP32 (the default), ONNX Runtime static INT8 (``tools.quantize_backbone``,
calibrated on frames prepared as capture prepares them), OpenVINO FP32 and BF16 and OpenVINO on the
INT8 graph. For each: CPU ms per frame and frames/s at a few batch sizes with one and two threads,
and how far its embeddings are from FP32's on real frames (cosine; a head is judged on them before
any is kept: docs/engines.md).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from engines.factory import DEFAULT_ONNX_PATH
from engines.spec import INPUT_NAME, OUTPUT_NAMES

Runner = Callable[[np.ndarray], list[np.ndarray]]


def _onnxruntime(path: Path, threads: int) -> Runner:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # as the pipeline runs it
    session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    return lambda frames: session.run(list(OUTPUT_NAMES), {INPUT_NAME: frames})


def _openvino(path: Path, threads: int, hint: str) -> Runner:
    import openvino as ov

    core = ov.Core()
    compiled = core.compile_model(core.read_model(str(path)), "CPU", {
        "INFERENCE_PRECISION_HINT": hint, "INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY"})
    request = compiled.create_infer_request()
    outputs = [compiled.output(name) for name in OUTPUT_NAMES]
    return lambda frames: [np.array(request.infer({INPUT_NAME: frames})[o]) for o in outputs]


def _speed(run: Runner, frames: np.ndarray, batch: int) -> tuple[float, float]:
    """CPU ms per frame and frames/s over ``frames`` at ``batch`` (after two warm-up calls)."""
    run(frames[:batch])
    run(frames[:batch])
    count = len(frames) // batch * batch
    cpu, wall = time.process_time(), time.perf_counter()
    for i in range(0, count, batch):
        run(frames[i:i + batch])
    return 1000 * (time.process_time() - cpu) / count, count / (time.perf_counter() - wall)


def _agreement(run: Runner, frames: np.ndarray, reference: list[np.ndarray]) -> dict:
    embedding, stats = run(frames)
    want = reference[0]
    cosine = np.sum(embedding * want, 1) / np.linalg.norm(embedding, axis=1) / np.linalg.norm(want, axis=1)
    return {"cosine_mean": float(cosine.mean()), "cosine_min": float(cosine.min()),
            "embedding_max_abs_diff": float(np.abs(embedding - want).max()),
            "stats_max_abs_diff": float(np.abs(stats - reference[1]).max())}


def candidates(frames: np.ndarray, calibration: np.ndarray, batches: tuple[int, ...] = (1, 2, 4, 8),
               report: Callable[[dict], None] = print) -> list[dict]:
    """Every candidate's rows; ``report`` is told of each as it is measured."""
    from tools.quantize_backbone import quantize

    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        int8 = quantize(DEFAULT_ONNX_PATH, Path(scratch) / "int8.onnx", calibration)
        reference = _onnxruntime(DEFAULT_ONNX_PATH, 1)(frames)
        makers = {"onnxruntime fp32": lambda t: _onnxruntime(DEFAULT_ONNX_PATH, t),
                  "onnxruntime int8": lambda t: _onnxruntime(int8, t)}
        try:
            import openvino  # noqa: F401

            makers.update({"openvino fp32": lambda t: _openvino(DEFAULT_ONNX_PATH, t, "f32"),
                           "openvino bf16": lambda t: _openvino(DEFAULT_ONNX_PATH, t, "bf16"),
                           "openvino int8": lambda t: _openvino(int8, t, "f32")})
        except ImportError:
            report({"candidate": "openvino", "skipped": "not installed (pip install openvino)"})
        for name, make in makers.items():
            for threads in (1, 2):
                run = make(threads)
                row = {"candidate": name, "threads": threads, **(_agreement(run, frames, reference) if threads == 1 else {})}
                for batch in batches:
                    cpu_ms, fps = _speed(run, frames, batch)
                    row[f"batch{batch}"] = {"cpu_ms_per_frame": round(cpu_ms, 2), "frames_per_s": round(fps, 1)}
                report(row)
                rows.append(row)
    return rows
