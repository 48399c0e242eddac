"""Score videos offline: backbone + head over each whole video as one sequence.

    python -m tools.score_offline --model HEAD.safetensors --videos DIR_OR_FILE [...] --out SCORES.jsonl

Writes the per-step scores file that ``tools.evaluate`` reads; the stream of
each line is the video's file name without extension. This is the reference
that the streaming pipeline must reproduce step for step. With ``--features``
it reads embeddings cached by ``tools.extract_features`` instead of decoding.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from tqdm import tqdm

from engines.factory import BACKENDS, create_engine
from engines.temporal_head import load_head
from pipeline.scores import ScoresWriter, StepScores
from pipeline.sources.decoding import list_videos
from pipeline.sources.uri import VIDEO_SUFFIXES
from tools.cli import UsageError, run
from tools.evaluation.offline import embed_video, score_steps
from tools.training.features_cache import load_feature_dir


def _collect_videos(items: Sequence[Path]) -> list[Path]:
    videos: list[Path] = []
    for item in items:
        if item.is_dir():
            videos.extend(list_videos(item))
        elif item.is_file() and item.suffix.lower() in VIDEO_SUFFIXES:
            videos.append(item)
        else:
            raise UsageError(f"--videos {item}: not a video file ({', '.join(VIDEO_SUFFIXES)}) or a folder of them")
    if not videos:
        raise UsageError("--videos: no video files found")
    stems = [v.stem for v in videos]
    if dupes := sorted({s for s in stems if stems.count(s) > 1}):
        raise UsageError(f"--videos: several files share the stream name(s) {dupes}; stream names must be unique")
    return videos


def _write_stream(writer: ScoresWriter, stream: str, times, probs, classes: Sequence[str]) -> None:
    for t, row in zip(times, probs):
        writer.write(StepScores(stream, float(t), dict(zip(classes, map(float, row)))))


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.score_offline", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, required=True, help="head checkpoint (.safetensors)")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--videos", type=Path, nargs="+", help="video files or folders of videos")
    source.add_argument("--features", type=Path, help="folder of cached step embeddings (tools.extract_features)")
    p.add_argument("--out", type=Path, required=True, help="scores file to write (JSON lines)")
    p.add_argument("--engine", default="onnxruntime", choices=("auto",) + BACKENDS)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)

    head, _ = load_head(args.model)
    cfg = head.config
    classes = cfg.classes
    with ScoresWriter(args.out) as writer:
        if args.features:
            cached = load_feature_dir(args.features)
            for video_id, feats in tqdm(sorted(cached.items()), desc="scoring", unit="video", disable=args.quiet):
                key = json.loads(feats.key)
                if key["step_rate"] != cfg.step_rate_hz or key["backbone"] != cfg.backbone.name:
                    raise UsageError(
                        f"--features {args.features}: {video_id} was extracted at {key['step_rate']} steps/s with "
                        f"{key['backbone']}, the model needs {cfg.step_rate_hz} steps/s with {cfg.backbone.name}"
                    )
                _write_stream(writer, video_id, feats.times, score_steps(head, feats.embedding, feats.stats), classes)
        else:
            videos = _collect_videos(args.videos)
            engine = create_engine(args.engine, threads=args.threads)
            if engine.spec.name != cfg.backbone.name:
                raise UsageError(f"--model {args.model} was trained on {cfg.backbone.name}, engine runs {engine.spec.name}")
            try:
                for path in tqdm(videos, desc="scoring", unit="video", disable=args.quiet):
                    steps = embed_video(path, engine, cfg.step_rate_hz)
                    _write_stream(writer, path.stem, steps.times, score_steps(head, steps.embedding, steps.stats), classes)
            finally:
                engine.close()
    print(f"wrote {writer.count} steps to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
