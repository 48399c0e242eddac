"""`make run`: the demo model on SynthActions streams it never saw, through the
whole streaming pipeline at real-time pace.

Renders the demo streams on first use (seed 777001, never used in training),
runs ``run_pipeline.py --config configs/demo.yaml`` (events printed as they
happen, Prometheus metrics served, a per-stream summary at the end), then
scores the run's per-step output against the streams' annotations.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from engines.factory import REPO_ROOT
from pipeline.config import load_config
from pipeline.scores import read_scores
from tools.cli import run
from tools.evaluation.annotations import read_annotations
from tools.evaluation.map import evaluate
from tools.synthactions.dataset import write_dataset

DEMO_SEED = 777001
DEMO_CONFIG = REPO_ROOT / "configs" / "demo.yaml"
DEMO_DIR = REPO_ROOT / "build" / "demo"


def ensure_demo_streams(count: int = 4) -> Path:
    if not (DEMO_DIR / "annotations.txt").is_file():
        print(f"rendering {count} SynthActions demo streams into {DEMO_DIR} ...", flush=True)
        write_dataset(DEMO_DIR, count=count, seed=DEMO_SEED, sizes="mixed", fps_range=(10, 30),
                      duration_range=(25.0, 35.0), progress=False, overwrite=True)
    return DEMO_DIR


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--fast", action="store_true", help="replay as fast as possible instead of real-time")
    args = p.parse_args(argv)
    os.chdir(REPO_ROOT)  # the demo config's paths are relative to the repository
    ensure_demo_streams()
    import run_pipeline

    code = run_pipeline.main(["--config", str(DEMO_CONFIG)] + (["--fast"] if args.fast else []))
    if code != 0:
        return code
    config = load_config(DEMO_CONFIG)
    metrics = evaluate(read_scores(config.outputs.scores_jsonl), read_annotations(DEMO_DIR / "annotations.txt"))
    annotations = (DEMO_DIR / "annotations.txt").relative_to(REPO_ROOT)
    print(f"\nper-step scores of this run against the annotations (python -m tools.evaluate --scores "
          f"{config.outputs.scores_jsonl} --annotations {annotations}):")
    print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in metrics.items()
                      if not k.startswith("per_class")}))
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
