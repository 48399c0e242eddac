"""Choosing and building an embedding engine by name.

``auto`` tries, fastest first: TensorRT (only with an engine already built
for this GPU: building one takes minutes, ``python -m tools.build_engine``),
then CUDA through PyTorch or ONNX Runtime, then the CPU (ONNX Runtime, then
PyTorch); it logs what it chose and why it skipped the others. Every backend
raises EngineUnavailableError when it cannot run here, so ``auto`` moves on.

Precision: ``fp32`` everywhere by default. ``fp16`` (PyTorch on CUDA,
TensorRT) and ``int8`` (TensorRT, calibrated; ONNX Runtime on the CPU, on the
graph ``python -m tools.quantize_backbone`` writes) are opt-in: their
embeddings differ from FP32, so the head should be judged on what they produce.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from engines.base import EmbeddingEngine, EngineError, EngineUnavailableError
from engines.cpu_features import int8_refusal

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_ONNX_PATH = REPO_ROOT / "build" / "models" / "efficientnet_lite0.onnx"
# The INT8 graph for the CPU backends (python -m tools.quantize_backbone), calibrated on capture's frames.
DEFAULT_INT8_ONNX_PATH = REPO_ROOT / "build" / "models" / "efficientnet_lite0.int8.onnx"

BACKENDS = ("tensorrt", "torch-cuda", "onnxruntime-cuda", "onnxruntime", "torch")
PRECISIONS = ("fp32", "fp16", "int8")
_PRECISIONS_BY_BACKEND = {"tensorrt": PRECISIONS, "torch-cuda": ("fp32", "fp16"), "onnxruntime": ("fp32", "int8")}


@dataclass(frozen=True)
class EngineChoice:
    engine: EmbeddingEngine
    reasons_skipped: tuple[str, ...]


def create_engine(backend: str = "onnxruntime", onnx_path: Path | None = None, threads: int = 0,
                  spinning: bool = True, precision: str | None = "fp32", max_batch_size: int = 32,
                  build: bool = True) -> EmbeddingEngine:
    """Build one backend; raises EngineUnavailableError if it cannot run on this machine.

    ``build``: TensorRT may build its engine now when none is cached (``auto`` passes False).
    """
    precision = precision or "fp32"
    if backend == "auto":
        return choose_engine(onnx_path, threads, spinning, precision, max_batch_size).engine
    if backend not in BACKENDS:
        raise EngineError(f"unknown engine backend {backend!r}; choose one of {('auto',) + BACKENDS}")
    if precision not in _PRECISIONS_BY_BACKEND.get(backend, ("fp32",)):
        raise EngineUnavailableError(f"{backend} runs {'/'.join(_PRECISIONS_BY_BACKEND.get(backend, ('fp32',)))}, "
                                     f"not {precision}")
    if backend == "tensorrt":
        return _tensorrt(onnx_path, precision, max_batch_size, build)
    if backend.startswith("onnxruntime"):
        from engines.onnxruntime_engine import OnnxRuntimeEngine

        if precision == "int8" and (refusal := int8_refusal()) is not None:
            raise EngineUnavailableError(refusal)
        path = int8_graph(onnx_path) if precision == "int8" else onnx_path or _ensure_default_onnx()
        providers = ("CUDAExecutionProvider",) if backend == "onnxruntime-cuda" else ("CPUExecutionProvider",)
        return OnnxRuntimeEngine(path, providers=providers, intra_op_threads=threads, allow_spinning=spinning,
                                 precision=precision)
    import torch

    from engines.torch_engine import TorchEngine

    if threads:
        torch.set_num_threads(threads)
    return TorchEngine(device="cuda" if backend == "torch-cuda" else "cpu", half=precision == "fp16")


def _ensure_default_onnx() -> Path:
    from engines.backbone import ensure_onnx

    return ensure_onnx(DEFAULT_ONNX_PATH)


def int8_graph(onnx_path: Path | None = None) -> Path:
    """The INT8 graph ONNX Runtime runs: ``onnx_path`` when given (one tools.quantize_backbone wrote), else
    the default one; EngineUnavailableError naming how to make it when it is not there."""
    path = Path(onnx_path or DEFAULT_INT8_ONNX_PATH)
    if not path.is_file():
        raise EngineUnavailableError(f"no INT8 graph at {path} (make models builds the default one; python -m "
                                     "tools.quantize_backbone --calibrate VIDEOS makes one from your own video)")
    return path


def _tensorrt(onnx_path: Path | None, precision: str, max_batch_size: int, build: bool) -> EmbeddingEngine:
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise EngineUnavailableError("TensorRT is not installed (pip install '.[tensorrt]' on an NVIDIA machine)") from exc
    from engines.tensorrt_build import build_engine, current_gpu, engine_key, profile_for
    from engines.tensorrt_engine import TensorRTEngine

    path = onnx_path or _ensure_default_onnx()
    profile = profile_for(max_batch_size)
    plan = engine_key(path, trt.__version__, current_gpu(), precision, profile).plan_path()
    if not plan.is_file():
        if not build:
            raise EngineUnavailableError(
                f"no TensorRT {precision} engine built for this GPU yet: python -m tools.build_engine "
                f"--precision {precision} --max-batch {max_batch_size}"
            )
        if precision == "int8":
            raise EngineUnavailableError("an INT8 engine needs calibration frames: build it first with "
                                         "python -m tools.build_engine --precision int8 --calibrate VIDEOS")
        plan = build_engine(path, precision, profile)
    return TensorRTEngine(plan)


def choose_engine(onnx_path: Path | None = None, threads: int = 0, spinning: bool = True, precision: str = "fp32",
                  max_batch_size: int = 32) -> EngineChoice:
    skipped: list[str] = []
    for backend in BACKENDS:
        try:
            engine = create_engine(backend, onnx_path, threads, spinning, precision, max_batch_size, build=False)
        except EngineUnavailableError as exc:
            skipped.append(f"{backend}: {exc}")
            continue
        logger.info("engine auto: chose %s%s", engine.name, f" (skipped {'; '.join(skipped)})" if skipped else "")
        return EngineChoice(engine, tuple(skipped))
    raise EngineUnavailableError("no embedding backend can run here: " + "; ".join(skipped))
