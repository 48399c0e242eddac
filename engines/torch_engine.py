"""PyTorch backend (CPU or CUDA), running the same FrameEmbedder graph that is exported to ONNX.

On CUDA the uint8 frames are uploaded as they are (the graph scales them on
the device) through a pinned host buffer, optionally in FP16 (opt-in: its
embeddings differ from FP32, so a head should be judged on them), and each
batch size the batcher uses runs as a captured CUDA graph: a batch is padded
up to the next captured size, so kernel launches cost nothing per batch.
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch

from engines.backbone import EFFICIENTNET_LITE0, BackboneSpec, FrameEmbedder, build_frame_embedder
from engines.base import EngineUnavailableError, FrameEmbeddings, validate_frames

GRAPH_BATCHES = (1, 2, 4, 8, 16, 32)


def graph_batch_for(n: int, sizes: tuple[int, ...] = GRAPH_BATCHES) -> int | None:
    """The smallest captured batch size that holds ``n`` frames; None when ``n`` exceeds them all."""
    return next((size for size in sizes if size >= n), None)


class TorchEngine:
    def __init__(
        self,
        device: str = "cpu",
        model: FrameEmbedder | None = None,
        spec: BackboneSpec = EFFICIENTNET_LITE0,
        half: bool = False,
        cuda_graphs: bool = True,
        graph_batches: tuple[int, ...] = GRAPH_BATCHES,
    ) -> None:
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise EngineUnavailableError(f"torch device {device!r} requested but CUDA is not available")
        self._device = torch.device(device)
        self._spec = spec
        self._half = half and self._device.type == "cuda"
        if self._device.type == "cuda" and not self._half:
            # FP32 means FP32 (cuDNN would use TF32 convolutions on Ampere and newer). Process-wide,
            # and the embed worker's process exists for this engine alone.
            torch.backends.cudnn.allow_tf32 = False
        # FP16 through autocast rather than half weights: the convolutions run in FP16 while the
        # uint8 -> float scaling and the frame statistics stay FP32, as the graph writes them.
        self._model = (model or build_frame_embedder()).eval().to(self._device)
        self._graphs: dict[int, tuple] = {}
        self._host_in: torch.Tensor | None = None
        if self._device.type == "cuda":
            largest = max(graph_batches)
            self._stream = torch.cuda.Stream(self._device)
            self._host_in = torch.empty((largest, spec.input_height, spec.input_width, 3), dtype=torch.uint8).pin_memory()
            if cuda_graphs:
                self._capture_graphs(graph_batches)

    def _precision(self):
        # No autocast weight cache: it does not survive CUDA graph capture.
        if self._half:
            return torch.autocast("cuda", dtype=torch.float16, cache_enabled=False)
        return contextlib.nullcontext()

    @torch.inference_mode()
    def _capture_graphs(self, sizes: tuple[int, ...]) -> None:
        frame = (self._spec.input_height, self._spec.input_width, 3)
        with torch.cuda.stream(self._stream), self._precision():
            for size in sizes:
                static_in = torch.zeros((size, *frame), dtype=torch.uint8, device=self._device)
                for _ in range(2):  # warm-up on this stream before capture, as CUDA graphs require
                    self._model(static_in)
                self._stream.synchronize()
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph, stream=self._stream):
                    static_out = self._model(static_in)
                self._graphs[size] = (graph, static_in, static_out)

    @property
    def name(self) -> str:
        return f"torch-{self._device.type}" + ("-fp16" if self._half else "")

    @property
    def spec(self) -> BackboneSpec:
        return self._spec

    @torch.inference_mode()
    def embed(self, frames: np.ndarray) -> FrameEmbeddings:
        frames = validate_frames(frames, self._spec)
        if self._device.type != "cuda":
            embedding, stats = self._model(torch.from_numpy(frames))
            return FrameEmbeddings(embedding=embedding.float().numpy(), stats=stats.float().numpy())
        n = frames.shape[0]
        size = graph_batch_for(n, tuple(self._graphs)) if self._graphs else None
        with torch.cuda.stream(self._stream), self._precision():
            if size is not None and self._host_in is not None and n <= self._host_in.shape[0]:
                graph, static_in, (static_embedding, static_stats) = self._graphs[size]
                self._host_in[:n].numpy()[...] = frames
                static_in[:n].copy_(self._host_in[:n], non_blocking=True)
                graph.replay()
                embedding, stats = static_embedding[:n].float().cpu(), static_stats[:n].float().cpu()
            else:
                batch = torch.from_numpy(frames).pin_memory().to(self._device, non_blocking=True)
                out_embedding, out_stats = self._model(batch)
                embedding, stats = out_embedding.float().cpu(), out_stats.float().cpu()
        self._stream.synchronize()
        return FrameEmbeddings(embedding=embedding.numpy(), stats=stats.numpy())

    def close(self) -> None:
        self._model = None
        self._graphs = {}
        self._host_in = None
        if self._device.type == "cuda":
            torch.cuda.empty_cache()
