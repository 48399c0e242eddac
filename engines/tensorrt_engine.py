"""TensorRT backend (TensorRT 10 API): runs a plan built by :mod:`engines.tensorrt_build`.

The engine owns its buffers: a device input and outputs sized for the
profile's largest batch, and pinned host buffers to move frames in and
embeddings out without an extra copy; :meth:`TensorRTEngine.close` frees
them (never ``__del__``). Each call sets the batch's input shape, binds the
tensors by name and enqueues on its own CUDA stream
(``set_input_shape`` / ``set_tensor_address`` / ``execute_async_v3``).

Not exercised in this project's CI (no GPU, and TensorRT's libraries are not
installable there); the engine contract suite in ``tests/engines/test_engines.py``
runs it wherever ``tensorrt`` imports and a CUDA device exists.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from engines.base import EngineError, EngineUnavailableError, FrameEmbeddings, validate_frames
from engines.spec import EFFICIENTNET_LITE0, INPUT_NAME, OUTPUT_NAMES, BackboneSpec

logger = logging.getLogger(__name__)


class TensorRTEngine:
    def __init__(self, plan_path: Path, spec: BackboneSpec = EFFICIENTNET_LITE0) -> None:
        try:
            import tensorrt as trt
            import torch
        except ImportError as exc:
            raise EngineUnavailableError("TensorRT is not installed: pip install '.[tensorrt]' on an NVIDIA machine") from exc
        if not torch.cuda.is_available():
            raise EngineUnavailableError("no CUDA device: TensorRT needs an NVIDIA GPU")
        self._spec = spec
        self._torch = torch
        sidecar = Path(plan_path).with_suffix(".json")
        self.precision = json.loads(sidecar.read_text()).get("precision", "fp32") if sidecar.is_file() else "fp32"
        self._runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self._engine = self._runtime.deserialize_cuda_engine(Path(plan_path).read_bytes())
        if self._engine is None:
            raise EngineError(f"{plan_path}: TensorRT cannot load this plan (built by another TensorRT version or "
                              "for another GPU?): rebuild it with python -m tools.build_engine")
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        inputs = [n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if inputs != [INPUT_NAME] or not set(OUTPUT_NAMES) <= set(outputs):
            raise EngineError(f"{plan_path}: expected input {INPUT_NAME!r} and outputs {list(OUTPUT_NAMES)}, "
                              f"found {inputs} / {outputs}")
        _minimum, _optimum, maximum = self._engine.get_tensor_profile_shape(INPUT_NAME, 0)
        self.max_batch = int(maximum[0])
        self._context = self._engine.create_execution_context()
        self._stream = torch.cuda.Stream()
        frame = (spec.input_height, spec.input_width, 3)
        self._device_in = torch.empty((self.max_batch, *frame), dtype=torch.uint8, device="cuda")
        self._host_in = torch.empty((self.max_batch, *frame), dtype=torch.uint8).pin_memory()
        dims = {"embedding": spec.embedding_dim, "stats": spec.stats_dim}
        self._device_out = {}
        self._host_out = {}
        for name in OUTPUT_NAMES:
            dtype = torch.float16 if self._engine.get_tensor_dtype(name) == trt.float16 else torch.float32
            self._device_out[name] = torch.empty((self.max_batch, dims[name]), dtype=dtype, device="cuda")
            self._host_out[name] = torch.empty((self.max_batch, dims[name]), dtype=dtype).pin_memory()

    @property
    def name(self) -> str:
        return f"tensorrt-{self.precision}"

    @property
    def spec(self) -> BackboneSpec:
        return self._spec

    def embed(self, frames: np.ndarray) -> FrameEmbeddings:
        if self._context is None:
            raise EngineError("this TensorRT engine is closed")
        frames = validate_frames(frames, self._spec, max_batch=self.max_batch)
        n = frames.shape[0]
        torch = self._torch
        self._host_in[:n].numpy()[...] = frames
        with torch.cuda.stream(self._stream):
            self._device_in[:n].copy_(self._host_in[:n], non_blocking=True)
            self._context.set_input_shape(INPUT_NAME, (n, *frames.shape[1:]))
            self._context.set_tensor_address(INPUT_NAME, int(self._device_in.data_ptr()))
            for name, buffer in self._device_out.items():
                self._context.set_tensor_address(name, int(buffer.data_ptr()))
            if not self._context.execute_async_v3(self._stream.cuda_stream):
                raise EngineError("TensorRT failed to enqueue the batch")
            for name, buffer in self._device_out.items():
                self._host_out[name][:n].copy_(buffer[:n], non_blocking=True)
        self._stream.synchronize()
        return FrameEmbeddings(
            embedding=self._host_out["embedding"][:n].float().numpy().copy(),
            stats=self._host_out["stats"][:n].float().numpy().copy(),
        )

    def close(self) -> None:
        self._context = None
        self._engine = None
        self._runtime = None
        self._device_in = self._host_in = None
        self._device_out, self._host_out = {}, {}
        self._torch.cuda.empty_cache()
