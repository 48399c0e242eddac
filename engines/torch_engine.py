"""PyTorch backend (CPU or CUDA), running the same FrameEmbedder graph that is exported to ONNX."""

from __future__ import annotations

import numpy as np
import torch

from engines.backbone import EFFICIENTNET_LITE0, BackboneSpec, FrameEmbedder, build_frame_embedder
from engines.base import EngineUnavailableError, FrameEmbeddings, validate_frames


class TorchEngine:
    def __init__(
        self,
        device: str = "cpu",
        model: FrameEmbedder | None = None,
        spec: BackboneSpec = EFFICIENTNET_LITE0,
        half: bool = False,
    ) -> None:
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise EngineUnavailableError(f"torch device {device!r} requested but CUDA is not available")
        self._device = torch.device(device)
        self._spec = spec
        self._half = half and self._device.type == "cuda"
        module = (model or build_frame_embedder()).eval().to(self._device)
        self._model = module.half() if self._half else module

    @property
    def name(self) -> str:
        return f"torch-{self._device.type}" + ("-fp16" if self._half else "")

    @property
    def spec(self) -> BackboneSpec:
        return self._spec

    @torch.inference_mode()
    def embed(self, frames: np.ndarray) -> FrameEmbeddings:
        frames = validate_frames(frames, self._spec)
        batch = torch.from_numpy(frames).to(self._device, non_blocking=True)
        embedding, stats = self._model(batch)
        return FrameEmbeddings(
            embedding=embedding.float().cpu().numpy(),
            stats=stats.float().cpu().numpy(),
        )

    def close(self) -> None:
        self._model = None
        if self._device.type == "cuda":
            torch.cuda.empty_cache()
