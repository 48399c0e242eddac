"""Judge a head against the project's bar, on what the streaming pipeline itself writes.

    python -m tools.judge_model [--model models/synthactions_gru.safetensors] [--out build/judge]

Three test sets that no training or checkpoint selection ever saw, rendered
on first use: ``ordinary`` (the project's renderer in the training looks),
``heldout_looks`` (looks kept out of training) and ``alt_renderer`` (the
independent renderer); what each holds and how it is scored:
tools.evaluation.judging. ``tools.evaluate`` scores the per-step output and
``tools.event_metrics`` the start events the pipeline emitted. The
frame-only baseline is run the same way on the ordinary set. Prints a table
against the bar and writes ``OUT/report.json``; exit status 0 when every
figure meets it, 1 when some do not.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from engines.factory import REPO_ROOT
from tools.evaluation.judging import TEST_SETS, judge, table


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.judge_model", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, default=REPO_ROOT / "models" / "synthactions_gru.safetensors")
    p.add_argument("--baseline", default=str(REPO_ROOT / "models" / "synthactions_frame_only.safetensors"),
                   help="the frame-only head, run on the ordinary set beside it ('' to skip)")
    p.add_argument("--data", type=Path, default=REPO_ROOT / "data" / "judge", help="where the test sets are rendered")
    p.add_argument("--out", type=Path, default=REPO_ROOT / "build" / "judge")
    p.add_argument("--engine", help="the pipeline's embedding backend (default: its config's, ONNX Runtime FP32)")
    p.add_argument("--precision", choices=("fp32", "fp16", "int8"), help="that engine's precision")
    p.add_argument("--sets", nargs="+", choices=[t.name for t in TEST_SETS], default=[t.name for t in TEST_SETS])
    args = p.parse_args(argv)
    if not args.model.is_file():
        print(f"error: --model {args.model} does not exist", file=sys.stderr)
        return 2
    engine = [*(["--engine", args.engine] if args.engine else []), *(["--precision", args.precision] if args.precision else [])]
    report = judge(args.model, Path(args.baseline) if args.baseline else None, args.data, args.out, args.sets, engine)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    print(table(report))
    print("meets the bar" if not report["misses"] else "misses the bar:\n  " + "\n  ".join(report["misses"]))
    return 0 if not report["misses"] else 1


if __name__ == "__main__":
    sys.exit(main())
