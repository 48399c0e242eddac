"""Export the default backbone (EfficientNet-Lite0, ImageNet weights) to ONNX.

    python -m tools.export_backbone --out build/models/efficientnet_lite0.onnx

The graph takes uint8 RGB frames [N, 224, 224, 3] (dynamic N) and returns the
1280-d pooled embedding and 5 stats statistics. Skips the export when the file
is already current for these weights.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from engines.backbone import ensure_onnx, export_onnx, onnx_is_current
from engines.factory import DEFAULT_ONNX_PATH
from tools.cli import run


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.export_backbone", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=DEFAULT_ONNX_PATH)
    p.add_argument("--force", action="store_true", help="export even if the file is current")
    args = p.parse_args(argv)
    if args.force:
        export_onnx(args.out)
    elif onnx_is_current(args.out):
        print(f"{args.out} is current", file=sys.stderr)
        return 0
    else:
        ensure_onnx(args.out)
    print(f"exported {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
