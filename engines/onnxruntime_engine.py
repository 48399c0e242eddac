"""ONNX Runtime backend: the CPU default, or its CUDA provider on NVIDIA GPUs."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from engines.base import EngineError, EngineUnavailableError, FrameEmbeddings, validate_frames
from engines.spec import EFFICIENTNET_LITE0, INPUT_NAME, OUTPUT_NAMES, BackboneSpec


class OnnxRuntimeEngine:
    def __init__(
        self,
        model_path: Path,
        providers: Sequence[str] = ("CPUExecutionProvider",),
        intra_op_threads: int = 0,
        spec: BackboneSpec = EFFICIENTNET_LITE0,
        allow_spinning: bool = True,
        precision: str = "fp32",
    ) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise EngineUnavailableError("onnxruntime is not installed: pip install onnxruntime") from exc
        if not Path(model_path).is_file():
            raise EngineError(f"ONNX model not found: {model_path} (build it with `make models`)")
        available = set(ort.get_available_providers())
        missing = [p for p in providers if p not in available]
        if missing:
            raise EngineUnavailableError(
                f"ONNX Runtime providers {missing} are not available here (available: {sorted(available)})"
            )
        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        if not allow_spinning:
            # Idle intra-op threads sleep instead of spinning: with other processes on the same
            # cores (decoders, the temporal worker), spinning only takes CPU from them.
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self._session = ort.InferenceSession(str(model_path), sess_options=options, providers=list(providers))
        self._providers = tuple(providers)
        self._precision = precision  # what model_path holds: named, not checked (an INT8 graph looks like any other)
        self._spec = spec
        names = [o.name for o in self._session.get_outputs()]
        if list(OUTPUT_NAMES) != names[: len(OUTPUT_NAMES)]:
            raise EngineError(f"{model_path}: expected outputs {list(OUTPUT_NAMES)}, found {names}")

    @property
    def name(self) -> str:
        device = "cuda" if "CUDAExecutionProvider" in self._providers else "cpu"
        return f"onnxruntime-{device}" + ("" if self._precision == "fp32" else f"-{self._precision}")

    @property
    def spec(self) -> BackboneSpec:
        return self._spec

    def embed(self, frames: np.ndarray) -> FrameEmbeddings:
        frames = validate_frames(frames, self._spec)
        embedding, stats = self._session.run(list(OUTPUT_NAMES), {INPUT_NAME: frames})
        return FrameEmbeddings(embedding=embedding.astype(np.float32, copy=False), stats=stats.astype(np.float32, copy=False))

    def close(self) -> None:
        self._session = None
