"""The GPU figures: the engine against the FP16 peak, the GRU step for many streams, NVDEC decode,
and the 1080p30 streams held with p99 under 100 ms (measured only where CUDA is)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from pipeline.sources.frames import SourceOpenError
from tools.bench.capacity import capacity
from tools.bench.engine_speed import flops_per_frame
from tools.bench.stages import gru_alone, nvdec_decode_alone, sample_frames


def gpu_rows(videos_1080: list[Path], workdir: Path, capacity_seconds: float, peak_tflops: float | None,
             step_rate: float) -> dict:
    """The GPU figures: engine frames/s at batch 1, 8, 32, 128 (FP16; against the peak when given), one GRU
    step for 1..1024 streams, NVDEC decode, and the 1080p30 streams held with p99 under 100 ms."""
    import torch

    if not torch.cuda.is_available():
        return {"not_measured": "no CUDA device on this machine"}
    from engines.factory import choose_engine

    out: dict = {"gpu": torch.cuda.get_device_name(0), "gflop_per_frame": flops_per_frame() / 1e9}
    choice = choose_engine(precision="fp16", max_batch_size=128)
    engine = choice.engine
    frames = sample_frames(videos_1080[0])
    frames = np.concatenate([frames] * -(-128 // len(frames)))[:128]
    out["engine"] = {"backend": engine.name, "rows": []}
    try:
        for batch in (1, 8, 32, 128):
            engine.embed(frames[:batch])
            done, start = 0, time.perf_counter()
            while time.perf_counter() - start < 5.0:
                engine.embed(frames[:batch])
                done += batch
            fps = done / (time.perf_counter() - start)
            tflops = fps * out["gflop_per_frame"] / 1e3
            out["engine"]["rows"].append({"batch": batch, "frames_per_s": fps, "tflops": tflops,
                                          "of_peak": tflops / peak_tflops if peak_tflops else None})
            print(f"  {engine.name} batch {batch}: {fps:.0f} frames/s", flush=True)
    finally:
        engine.close()
    out["gru"] = gru_alone(3.0, "cuda", (1, 4, 16, 64, 256, 1024))
    print("  GRU step on cuda: " + ", ".join(f"{g['streams']} streams {g['ms_per_step']:.2f} ms" for g in out["gru"]),
          flush=True)
    decoder = "nvdec"
    try:
        out["nvdec"] = nvdec_decode_alone(videos_1080, step_rate)
        print(f"  NVDEC decode: {out['nvdec']['frames_per_s']:.0f} frames/s", flush=True)
    except SourceOpenError as exc:  # e.g. PyNvVideoCodec missing: the GPU's other figures still count
        out["nvdec"], decoder = {"not_measured": str(exc)}, "opencv"
        print(f"  NVDEC decode: not measured ({exc}); the capacity trials decode with OpenCV", flush=True)
    print("  real-time capacity, 1080p30, p99 < 100 ms:", flush=True)
    sections = {"engine": {"backend": "auto", "precision": "fp16"}, "capture": {"decoder": decoder},
                "temporal": {"device": "cuda"}}
    out["capacity_1080p30"] = {**capacity(videos_1080, capacity_seconds, workdir, start=8, limit=256, bound_s=0.1,
                                          sections=sections), "decoder": decoder}
    return out
