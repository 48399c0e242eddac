"""The frame backbone as the engines run it: uint8 RGB frames in, embeddings out.

Preprocessing lives inside the model so that every backend (ONNX Runtime,
PyTorch, TensorRT) consumes the same bytes that capture produced:

    frames   uint8  [N, 224, 224, 3]  RGB, already resized by capture
    embedding float32 [N, 1280]        EfficientNet-Lite0 pooled features
    stats     float32 [N, 49]          in [0, 1]: the frame's mean luma, then the
                                       mean R, G, B of each cell of a 4x4 grid
                                       (cells row-major from the top left)

``stats`` exists because the temporal head must see global brightness (the
lights_on / lights_off actions), which the CNN's features largely normalise
away, and *where* in the frame things change (an object entering across an
edge, growing in the middle), which global pooling discards. Cell means
average thousands of pixels, so sensor noise barely moves them.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from engines.efficientnet_lite import EfficientNetLite0, load_pretrained
from engines.spec import (  # noqa: F401  (the contract's names, re-exported for the tools)
    EFFICIENTNET_LITE0,
    INPUT_NAME,
    OUTPUT_NAMES,
    STATS_DIM,
    STATS_GRID,
    BackboneSpec,
    file_sha256,
)

# Bump when the graph's inputs, outputs or preprocessing change: cached exports rebuild.
EXPORT_REVISION = 2
ONNX_OPSET = 17


class FrameEmbedder(nn.Module):
    """uint8 NHWC RGB -> (embedding, stats); the graph every backend runs."""

    def __init__(self, network: EfficientNetLite0) -> None:
        super().__init__()
        self.network = network
        # Rec.601 luma weights for R, G, B.
        self.register_buffer("luma_weights", torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1))

    def forward(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = frames.permute(0, 3, 1, 2).to(torch.float32)
        embedding = self.network.features((x - 127.0) / 128.0)
        unit = x / 255.0
        luma = (unit * self.luma_weights).sum(dim=1).mean(dim=(1, 2))
        # Mean colour per cell: [N, 3, G, G] -> [N, G, G, 3] -> [N, G*G*3], row-major cells.
        grid = nn.functional.adaptive_avg_pool2d(unit, STATS_GRID).permute(0, 2, 3, 1).flatten(1)
        return embedding, torch.cat([luma[:, None], grid], dim=1)


def build_frame_embedder(weights: Path | None = None) -> FrameEmbedder:
    return FrameEmbedder(load_pretrained(weights)).eval()


def export_onnx(out_path: Path, weights: Path | None = None) -> Path:
    """Export the FrameEmbedder to ONNX with a dynamic batch axis."""
    from engines.efficientnet_lite import pretrained_weights_path

    weights = weights or pretrained_weights_path()
    model = build_frame_embedder(weights)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    example = torch.zeros(2, EFFICIENTNET_LITE0.input_height, EFFICIENTNET_LITE0.input_width, 3, dtype=torch.uint8)
    tmp_path = out_path.with_suffix(".onnx.partial")
    torch.onnx.export(
        model,
        (example,),
        str(tmp_path),
        input_names=[INPUT_NAME],
        output_names=list(OUTPUT_NAMES),
        dynamic_axes={INPUT_NAME: {0: "batch"}, "embedding": {0: "batch"}, "stats": {0: "batch"}},
        opset_version=ONNX_OPSET,
        dynamo=False,
    )
    import onnx

    proto = onnx.load(str(tmp_path))
    stamp = {
        "backbone": EFFICIENTNET_LITE0.to_json(),
        "weights_sha256": file_sha256(weights),
        "export_revision": str(EXPORT_REVISION),
    }
    for key, value in stamp.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, str(tmp_path))
    tmp_path.replace(out_path)
    return out_path


def onnx_is_current(path: Path, weights: Path | None = None) -> bool:
    """True when ``path`` was exported from these weights by this export revision."""
    if not path.is_file():
        return False
    import onnx

    from engines.efficientnet_lite import pretrained_weights_path

    props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    return props.get("export_revision") == str(EXPORT_REVISION) and props.get(
        "weights_sha256"
    ) == file_sha256(weights or pretrained_weights_path())


def ensure_onnx(path: Path, weights: Path | None = None) -> Path:
    if not onnx_is_current(path, weights):
        export_onnx(path, weights)
    return path
