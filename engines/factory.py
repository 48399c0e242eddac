"""Choosing and building an embedding engine by name."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from engines.base import EmbeddingEngine, EngineError, EngineUnavailableError

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_ONNX_PATH = REPO_ROOT / "build" / "models" / "efficientnet_lite0.onnx"

# Preference order for "auto": fastest first. TensorRT slots in at the front
# once its backend lands; each entry must raise EngineUnavailableError when it
# cannot run here, so auto can move on to the next.
BACKENDS = ("onnxruntime-cuda", "torch-cuda", "onnxruntime", "torch")


@dataclass(frozen=True)
class EngineChoice:
    engine: EmbeddingEngine
    reasons_skipped: tuple[str, ...]


def create_engine(backend: str = "onnxruntime", onnx_path: Path | None = None, threads: int = 0,
                  spinning: bool = True) -> EmbeddingEngine:
    """Build one backend; raises EngineUnavailableError if it cannot run on this machine."""
    if backend == "auto":
        return choose_engine(onnx_path=onnx_path, threads=threads, spinning=spinning).engine
    if backend not in BACKENDS:
        raise EngineError(f"unknown engine backend {backend!r}; choose one of {('auto',) + BACKENDS}")
    if backend.startswith("onnxruntime"):
        from engines.backbone import ensure_onnx
        from engines.onnxruntime_engine import OnnxRuntimeEngine

        path = onnx_path or ensure_onnx(DEFAULT_ONNX_PATH)
        providers = ("CUDAExecutionProvider",) if backend == "onnxruntime-cuda" else ("CPUExecutionProvider",)
        return OnnxRuntimeEngine(path, providers=providers, intra_op_threads=threads, allow_spinning=spinning)
    from engines.torch_engine import TorchEngine

    if threads:
        import torch

        torch.set_num_threads(threads)
    return TorchEngine(device="cuda" if backend == "torch-cuda" else "cpu")


def choose_engine(onnx_path: Path | None = None, threads: int = 0, spinning: bool = True) -> EngineChoice:
    skipped: list[str] = []
    for backend in BACKENDS:
        try:
            engine = create_engine(backend, onnx_path, threads, spinning)
        except EngineUnavailableError as exc:
            skipped.append(f"{backend}: {exc}")
            continue
        logger.info("engine auto: chose %s%s", engine.name, f" (skipped {'; '.join(skipped)})" if skipped else "")
        return EngineChoice(engine, tuple(skipped))
    raise EngineUnavailableError("no embedding backend can run here: " + "; ".join(skipped))
