"""Building TensorRT engines from the ONNX backbone, and the cache they live in.

An engine (a serialized "plan") is specific to the ONNX model, the TensorRT
version, the GPU and the precision, so it is cached under a key of all four
plus the optimisation profile: ``build/engines/<key>.plan`` with a JSON note
beside it saying what it was built from. The parts that need no TensorRT (the
key, the profile, the INT8 calibration data) are plain functions, tested on
machines without a GPU; :func:`build_engine` itself imports ``tensorrt``.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from engines.base import EngineUnavailableError
from engines.spec import EFFICIENTNET_LITE0, INPUT_NAME, BackboneSpec, file_sha256
from pipeline.errors import ActionPipeError

logger = logging.getLogger(__name__)

PRECISIONS = ("fp32", "fp16", "int8")
DEFAULT_CACHE_DIR = Path(__file__).resolve().parents[1] / "build" / "engines"
WORKSPACE_BYTES = 1 << 30


class EngineBuildError(ActionPipeError, RuntimeError):
    """A TensorRT engine could not be built; the message says which step failed."""


@dataclass(frozen=True)
class BatchProfile:
    """The optimisation profile: the batch sizes the engine accepts, and the one it is tuned for."""

    min_batch: int
    opt_batch: int
    max_batch: int

    def __post_init__(self) -> None:
        if not 1 <= self.min_batch <= self.opt_batch <= self.max_batch:
            raise ValueError(f"need 1 <= min <= opt <= max batch, got {self.min_batch}/{self.opt_batch}/{self.max_batch}")

    def shapes(self, spec: BackboneSpec = EFFICIENTNET_LITE0) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
        frame = (spec.input_height, spec.input_width, 3)
        return (self.min_batch, *frame), (self.opt_batch, *frame), (self.max_batch, *frame)


def profile_for(max_batch_size: int) -> BatchProfile:
    """The profile for the embed batcher's sizes: 1 up to its maximum, tuned for half of it
    (a busy pipeline fills batches, a quiet one sends small ones)."""
    if max_batch_size < 1:
        raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
    return BatchProfile(1, max(1, max_batch_size // 2), max_batch_size)


@dataclass(frozen=True)
class EngineKey:
    onnx_sha256: str
    tensorrt_version: str
    gpu: str  # device name and compute capability, e.g. "NVIDIA H100 80GB HBM3 sm_90"
    precision: str
    profile: BatchProfile

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")

    @property
    def digest(self) -> str:
        text = json.dumps(asdict(self), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:24]

    def plan_path(self, cache_dir: Path = DEFAULT_CACHE_DIR) -> Path:
        return Path(cache_dir) / f"{self.precision}-b{self.profile.max_batch}-{self.digest}.plan"


def engine_key(onnx_path: Path, tensorrt_version: str, gpu: str, precision: str, profile: BatchProfile) -> EngineKey:
    return EngineKey(file_sha256(Path(onnx_path)), tensorrt_version, gpu, precision, profile)


def current_gpu() -> str:
    """Name and compute capability of CUDA device 0 (the key needs both: a plan is specific to the SM)."""
    import torch

    if not torch.cuda.is_available():
        raise EngineUnavailableError("no CUDA device: TensorRT needs an NVIDIA GPU")
    props = torch.cuda.get_device_properties(0)
    return f"{props.name} sm_{props.major}{props.minor}"


# -- INT8 calibration data (the frames: pipeline.sources.decoding.calibration_frames) -----------------
def calibration_batches(frames: np.ndarray, batch_size: int) -> Iterator[np.ndarray]:
    """Full batches only: the calibrator's batch size is fixed."""
    for start in range(0, len(frames) - batch_size + 1, batch_size):
        yield np.ascontiguousarray(frames[start:start + batch_size])


# -- the build (needs TensorRT and a GPU) --------------------------------------------------------
def build_engine(onnx_path: Path, precision: str, profile: BatchProfile, cache_dir: Path = DEFAULT_CACHE_DIR,
                 calibration: np.ndarray | None = None, rebuild: bool = False) -> Path:
    """The cached plan for this model, TensorRT, GPU, precision and profile; built first if missing."""
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise EngineUnavailableError("TensorRT is not installed: pip install '.[tensorrt]' on an NVIDIA machine") from exc
    key = engine_key(onnx_path, trt.__version__, current_gpu(), precision, profile)
    plan = key.plan_path(cache_dir)
    if plan.is_file() and not rebuild:
        logger.info("TensorRT engine for %s found in the cache: %s", key.gpu, plan)
        return plan
    if precision == "int8" and calibration is None:
        raise EngineBuildError("INT8 needs calibration frames (python -m tools.build_engine --calibrate VIDEOS ...)")
    if precision == "int8" and len(calibration) < profile.opt_batch:
        raise EngineBuildError(f"INT8 calibration got {len(calibration)} frames, fewer than one batch of "
                               f"{profile.opt_batch}: give more videos or --calibration-frames")
    logger.info("building a TensorRT %s engine for %s (TensorRT %s; minutes, once)", precision, key.gpu, trt.__version__)
    trt_logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(trt_logger)
    network = builder.create_network(0)  # TensorRT 10: explicit batch is the only mode
    parser = trt.OnnxParser(network, trt_logger)
    if not parser.parse(Path(onnx_path).read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EngineBuildError(f"TensorRT cannot parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
    minimum, optimum, maximum = profile.shapes()
    trt_profile = builder.create_optimization_profile()
    trt_profile.set_shape(INPUT_NAME, minimum, optimum, maximum)
    config.add_optimization_profile(trt_profile)
    calibrator = None
    if precision == "fp32":
        config.clear_flag(trt.BuilderFlag.TF32)  # FP32 means FP32: the contract suite holds it to 1e-4
    if precision in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)
    if precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)
        calibrator = _entropy_calibrator(trt, calibration, profile.opt_batch, plan.with_suffix(".calibration"))
        config.int8_calibrator = calibrator
        config.set_calibration_profile(trt_profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineBuildError(f"TensorRT could not build a {precision} engine from {onnx_path} (see its log above)")
    plan.parent.mkdir(parents=True, exist_ok=True)
    partial = plan.with_suffix(".partial")
    partial.write_bytes(bytes(serialized))
    partial.replace(plan)
    plan.with_suffix(".json").write_text(json.dumps({**asdict(key), "onnx": str(onnx_path)}, indent=1))
    logger.info("TensorRT engine written: %s", plan)
    return plan


def _entropy_calibrator(trt, frames: np.ndarray, batch_size: int, cache: Path):
    """An IInt8EntropyCalibrator2 feeding ``frames`` in fixed batches from a device buffer it owns."""
    import torch

    class Calibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            super().__init__()
            self._batches = calibration_batches(frames, batch_size)
            self._device = torch.empty((batch_size, *frames.shape[1:]), dtype=torch.uint8, device="cuda")

        def get_batch_size(self) -> int:
            return batch_size

        def get_batch(self, names):
            batch = next(self._batches, None)
            if batch is None:
                return None
            self._device.copy_(torch.from_numpy(batch))
            return [int(self._device.data_ptr())]

        def read_calibration_cache(self):
            return cache.read_bytes() if cache.is_file() else None

        def write_calibration_cache(self, data) -> None:
            cache.write_bytes(bytes(data))

    return Calibrator()
