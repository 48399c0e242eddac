"""Score a per-step scores file against THUMOS'14-style annotations.

    python -m tools.evaluate --scores SCORES.jsonl --annotations ANN.txt [--out metrics.json]

Prints the metrics as JSON (see tools.evaluation.map.evaluate). Bad input: one
``error: ...`` line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from pipeline.errors import ActionPipeError
from pipeline.scores import read_scores
from tools.evaluation.annotations import read_annotations
from tools.evaluation.map import evaluate, unannotated_streams

EXIT_BAD_INPUT = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tools.evaluate",
        description="Per-frame mAP, mcAP, point-level start mAP and mirror-pair accuracy "
        "of per-step class scores (classes as the scores file names them; one must be 'background').",
    )
    parser.add_argument("--scores", required=True, type=Path, help="JSON-lines per-step scores file")
    parser.add_argument("--annotations", required=True, type=Path, help="'<video_id> <class> <start> <end>' lines")
    parser.add_argument("--out", type=Path, help="also write the metrics JSON to this file")
    parser.add_argument(
        "--require-annotations",
        action="store_true",
        help="fail when a scored stream has no annotation lines (default: score it as all background)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        steps = read_scores(args.scores)
        instances = read_annotations(args.annotations)
        bare = unannotated_streams(steps, instances)
        if bare and not args.require_annotations:
            print(
                f"warning: scored stream(s) without annotation lines, scored as all background: {', '.join(bare)}",
                file=sys.stderr,
            )
        # The scores file names the model's classes; SynthActions' are only one vocabulary.
        classes = tuple(steps[0].scores) if steps else ()
        metrics = evaluate(steps, instances, classes=classes, allow_unannotated=not args.require_annotations)
        text = json.dumps(metrics, indent=2)
        if args.out is not None:
            args.out.write_text(text + "\n", encoding="utf-8")
    except ActionPipeError as exc:  # a bad scores or annotations file, or ones that do not fit together
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as exc:
        print(f"error: {exc.filename or ''}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
