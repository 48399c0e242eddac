"""Choose the event detector's settings for a head on its validation streams.

The detector (``pipeline.events``: hysteresis thresholds, steps to confirm an
action's start and end, warm-up, the onset level a start is dated back to)
turns per-step probabilities into start and end events. The settings that give the best start-event F1 within 1 s on the
validation streams are frozen in the checkpoint's metadata; the pipeline runs
with them unless the user's ``events:`` config says otherwise.

    python -m tools.tune_events --model HEAD --features VAL_FEATURES --annotations ANN.txt [--write]
    python -m tools.tune_events --model HEAD --features TRAIN_FEATURES --annotations ANN.txt ... \
        --validation-split [--write]

``--validation-split`` keeps only the streams that the head's training held out
for validation (the fraction and seed in its checkpoint's training record), so
the features folder it was trained from can be given as it is.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from tools.cli import UsageError, run
from tools.training.dataset import read_all_annotations
from tools.training.events_tuning import ScoredStream, held_out_for_validation, tune


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.tune_events", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--features", type=Path, required=True, help="validation streams' feature caches")
    p.add_argument("--annotations", type=Path, nargs="+", required=True)
    p.add_argument("--validation-split", action="store_true",
                   help="use only the streams the head's training held out for validation")
    p.add_argument("--write", action="store_true", help="freeze the chosen settings in the checkpoint")
    args = p.parse_args(argv)
    from engines.head_config import EVENTS_METADATA_KEY
    from engines.temporal_head import load_head, save_head
    from tools.evaluation.offline import score_steps
    from tools.training.features_cache import load_feature_dir

    head, metadata = load_head(args.model)
    truth = read_all_annotations(args.annotations)
    features = load_feature_dir(args.features)
    annotated = {i.video_id for i in truth}
    chosen = [f for f in features.values() if f.video_id in annotated]
    if not chosen:
        raise UsageError("no stream of --features has annotations in --annotations")
    if args.validation_split:
        chosen = held_out_for_validation(chosen, metadata, args.model)
    streams = [ScoredStream(f.video_id, f.times, score_steps(head, f.embedding, f.stats)) for f in chosen]
    settings, figures = tune(streams, head.config.classes, truth)
    print(json.dumps({"events": settings, "validation": figures}, indent=2))
    if args.write:
        extra = {k: v for k, v in metadata.items() if k not in ("format", "head")}
        extra[EVENTS_METADATA_KEY] = json.dumps(settings, sort_keys=True)
        save_head(args.model, head, extra)
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
