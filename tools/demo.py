"""`make run`: the demo model on freshly rendered SynthActions streams, offline.

Renders a few held-out streams (seeds never used in training), runs the
offline scorer (backbone + GRU over each video as one sequence), prints the
actions it detects next to the annotated ones, and the evaluation metrics.
No GPU, camera or network needed. The streaming pipeline replaces this demo
in the next release.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from engines.factory import REPO_ROOT, create_engine
from engines.temporal_head import load_head
from pipeline.annotations import BACKGROUND, group_by_video, read_annotations
from pipeline.offline import embed_video, score_steps
from pipeline.scores import StepScores, write_scores
from pipeline.video_io import list_videos
from tools.cli import run
from tools.metrics import evaluate, extract_starts
from tools.synthactions import write_dataset

DEMO_SEED = 777001  # outside every seed range used for training (see tools/reproduce_demo_model.sh)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, default=REPO_ROOT / "models" / "synthactions_gru.safetensors")
    p.add_argument("--streams", type=int, default=4)
    p.add_argument("--out", type=Path, default=REPO_ROOT / "build" / "demo")
    args = p.parse_args(argv)

    head, _ = load_head(args.model)
    classes = head.config.classes
    data_dir = args.out / f"synthactions_seed{DEMO_SEED}_n{args.streams}"
    if not (data_dir / "annotations.txt").is_file():
        print(f"rendering {args.streams} SynthActions streams into {data_dir} ...", file=sys.stderr)
        write_dataset(data_dir, count=args.streams, seed=DEMO_SEED, sizes="mixed", fps_range=(10, 30),
                      duration_range=(25.0, 35.0), progress=False)
    annotations = read_annotations(data_dir / "annotations.txt")
    by_video = group_by_video(annotations)
    engine = create_engine("onnxruntime")
    print(f"engine: {engine.name}; head: {args.model.name} ({head.config.kind}, {head.config.step_rate_hz:g} steps/s)\n")
    steps: list[StepScores] = []
    try:
        for path in list_videos(data_dir / "videos"):
            started = time.perf_counter()
            emb = embed_video(path, engine, head.config.step_rate_hz)
            probs = score_steps(head, emb.embedding, emb.stats)
            elapsed = time.perf_counter() - started
            steps.extend(StepScores(path.stem, float(t), dict(zip(classes, map(float, r)))) for t, r in zip(emb.times, probs))
            starts = extract_starts(emb.times, probs, classes, BACKGROUND, stream=path.stem)
            print(f"== {path.stem}: {len(emb.times)} steps over {emb.times[-1]:.1f} s, processed in {elapsed:.1f} s")
            print("   annotated : " + ", ".join(f"{i.action}@{i.start:.1f}s" for i in by_video.get(path.stem, [])))
            print("   detected  : " + ", ".join(f"{s.action}@{s.t:.1f}s({s.confidence:.2f})" for s in starts))
    finally:
        engine.close()
    scores_path = args.out / "scores.jsonl"
    write_scores(scores_path, steps)
    metrics = evaluate(steps, annotations, classes=classes)
    print("\nmetrics over these streams (python -m tools.evaluate --scores "
          f"{scores_path} --annotations {data_dir / 'annotations.txt'}):")
    print(json.dumps({k: v for k, v in metrics.items() if not k.startswith("per_class")}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
