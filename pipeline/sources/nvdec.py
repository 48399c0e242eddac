"""Hardware video decode with NVDEC through PyNvVideoCodec (``capture.decoder: nvdec``).

A :class:`~pipeline.sources.readers.FrameReader` for files and network streams on an
NVIDIA GPU: packets are demuxed (FFmpeg, inside PyNvVideoCodec), decoded by
NVDEC into GPU memory (NV12), converted to RGB and resized to the model's
input on the GPU, and only the small model-sized frame is copied to the host
to travel to the embed stage like any other frame. Frames a sampler does not
want are decoded (the codec needs them) but never converted or copied.

Not exercised in this project's CI (no GPU there); ``tests/engines/test_gpu_paths.py``
runs it wherever PyNvVideoCodec imports and a CUDA device exists.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable

import numpy as np

from pipeline.sources.frames import RawFrame, SourceOpenError, want_all

logger = logging.getLogger(__name__)


def nv12_to_rgb(nv12, height: int, width: int):
    """NV12 [H * 3/2, W] uint8 (CUDA tensor) -> RGB float [3, H, W] in 0..255 (BT.601, limited range)."""
    import torch

    y = nv12[:height].float()
    uv = nv12[height:height + height // 2].reshape(height // 2, width // 2, 2).float()  # reshape: rows may be pitched
    u = uv[..., 0].repeat_interleave(2, 0).repeat_interleave(2, 1) - 128.0
    v = uv[..., 1].repeat_interleave(2, 0).repeat_interleave(2, 1) - 128.0
    c = (y - 16.0) * 1.164
    r = c + 1.596 * v
    g = c - 0.392 * u - 0.813 * v
    b = c + 2.017 * u
    return torch.stack([r, g, b]).clamp_(0.0, 255.0)


class NvdecReader:
    """Decodes on the GPU; hands the capture stage model-sized RGB frames (its ``image`` is already prepared)."""

    prepared = True  # frames come out RGB at the model's size: capture must not resize them again
    decode_errors = 0
    ended_early = False

    def __init__(self, uri: str, live: bool, width: int, height: int, gpu_id: int = 0,
                 origin: float | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        try:
            import PyNvVideoCodec as nvc
            import torch
        except ModuleNotFoundError as exc:
            raise SourceOpenError("capture.decoder is nvdec, but PyNvVideoCodec is not installed "
                                  "(pip install PyNvVideoCodec on an NVIDIA machine)", True) from exc
        except ImportError as exc:  # installed, but a library it loads is missing or does not fit the driver
            raise SourceOpenError(f"capture.decoder is nvdec, but PyNvVideoCodec does not load: {exc}", True) from exc
        if not torch.cuda.is_available():
            raise SourceOpenError("capture.decoder is nvdec, but there is no CUDA device here", True)
        self._torch = torch
        self.is_live = live
        self._width, self._height = width, height
        self._clock = clock
        self._origin = clock() if origin is None else origin
        try:
            self._demuxer = nvc.CreateDemuxer(uri)
            self._decoder = nvc.CreateDecoder(gpuid=gpu_id, codec=self._demuxer.GetNvCodecId(), cudacontext=0,
                                              cudastream=0, usedevicememory=True)
        except Exception as exc:  # PyNvVideoCodec raises plain exceptions for every failure
            raise SourceOpenError(f"NVDEC cannot open the stream: {type(exc).__name__}: {exc}", live is False) from exc
        fps = float(self._demuxer.FrameRate() or 0.0)
        self.fps: float | None = fps if 0 < fps < 1000 else None
        self._frames: deque = deque()
        self._packets = iter(self._demuxer)
        self._index = 0
        self._drained = False

    def _next_decoded(self):
        while not self._frames:
            if self._drained:
                return None
            packet = next(self._packets, None)
            if packet is None:
                self._drained = True
                return None
            self._frames.extend(self._decoder.Decode(packet))
        return self._frames.popleft()

    def read(self, want: Callable[[float], bool] = want_all) -> RawFrame | None:
        frame = self._next_decoded()
        if frame is None:
            return None
        # Live: arrival time. Files: frame index over the container's rate (the core API gives no time base).
        t = self._clock() - self._origin if self.is_live else self._index / (self.fps or 25.0)
        self._index += 1
        if not want(t):
            return RawFrame(t, None)
        torch = self._torch
        nv12 = torch.from_dlpack(frame)
        height = nv12.shape[0] * 2 // 3
        rgb = nv12_to_rgb(nv12, height, nv12.shape[1])
        small = torch.nn.functional.interpolate(rgb[None], size=(self._height, self._width), mode="bilinear",
                                                antialias=True, align_corners=False)[0]
        image = small.round_().to(torch.uint8).permute(1, 2, 0).contiguous().cpu().numpy()
        return RawFrame(t, image)

    def close(self) -> None:
        self._frames.clear()
        self._decoder = None
        self._demuxer = None


def nv12_reference(rgb: np.ndarray) -> np.ndarray:
    """RGB uint8 [H, W, 3] -> NV12 [H * 3/2, W] (BT.601, limited range), for testing the conversion."""
    r, g, b = (rgb[..., i].astype(np.float64) for i in range(3))
    y = 16 + 0.257 * r + 0.504 * g + 0.098 * b
    u = 128 - 0.148 * r - 0.291 * g + 0.439 * b
    v = 128 + 0.439 * r - 0.368 * g - 0.071 * b
    h, w = y.shape
    uv = np.stack([u.reshape(h // 2, 2, w // 2, 2).mean((1, 3)), v.reshape(h // 2, 2, w // 2, 2).mean((1, 3))], -1)
    return np.concatenate([y, uv.reshape(h // 2, w)]).round().clip(0, 255).astype(np.uint8)
