"""Judge a head against the project's bar, on what the streaming pipeline itself writes
(``python -m tools.judge_model``, ``make evaluate``).

Three test sets that no training or checkpoint selection ever saw, rendered
on first use (deterministic seeds; mixed sizes 320x240 to 1280x720, 10 to
30 fps):

* ``ordinary``: 48 streams of the project's renderer in the training looks
  (seed 424242, ``--looks train``);
* ``heldout_looks``: 40 streams whose background kinds, actor shapes and
  fills and noise levels were all kept out of training (seed 515151,
  ``--looks heldout``);
* ``alt_renderer``: 40 streams of the independent renderer
  (``tools.synthactions.alt_renderer``, seed 5150).

Each set is replayed through the whole streaming pipeline (``run_pipeline.py
--fast --scores-out --events-out``); :mod:`tools.evaluation.map` scores the
per-step output and :mod:`tools.evaluation.events` the start events the
pipeline emitted. The frame-only baseline is run the same way on the ordinary
set. :func:`verdict` lists what misses the bar (below), :func:`table` shows
the figures against it.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from engines.factory import REPO_ROOT

BAR = {
    "mAP": 0.90,
    "mirror_pair_accuracy": 0.95,
    "p_mAP@1s": 0.80,
    "min_class_AP": 0.80,
    "event_precision": 0.90,
    "event_recall": 0.90,
}
# How close the other sets must come to the ordinary one (mAP).
ROBUSTNESS_GAP = 0.05


@dataclass(frozen=True)
class TestSet:
    """A test set and the command that renders it."""

    name: str
    command: tuple[str, ...]  # renders it into the folder given as the last argument

    def render(self, folder: Path) -> None:
        """Render the set into ``folder`` unless it is there already."""
        if (folder / "annotations.txt").is_file():
            return
        print(f"rendering test set {self.name} into {folder} ...", file=sys.stderr, flush=True)
        subprocess.run([sys.executable, "-m", *self.command, str(folder)], cwd=REPO_ROOT, check=True)


TEST_SETS = (
    TestSet("ordinary", ("tools.make_synthactions", "--count", "48", "--seed", "424242", "--size", "mixed",
                         "--fps-range", "10", "30", "--duration-range", "30", "60", "--looks", "train",
                         "--workers", "2", "--overwrite", "--quiet", "--out")),
    TestSet("heldout_looks", ("tools.make_synthactions", "--count", "40", "--seed", "515151", "--size", "mixed",
                              "--fps-range", "10", "30", "--duration-range", "30", "60", "--looks", "heldout",
                              "--workers", "2", "--overwrite", "--quiet", "--out")),
    TestSet("alt_renderer", ("tools.alt_renderer", "--count", "40", "--seed", "5150", "--out")),
)


def run_pipeline(model: Path, videos: Path, out: Path, engine: Sequence[str] = ()) -> tuple[Path, Path]:
    """The streaming pipeline over every video of ``videos`` (replayed as fast as it goes, lossless);
    ``engine``: its options (``--engine``, ``--precision``), if not the default's."""
    scores, events = out / "scores.jsonl", out / "events.jsonl"
    sources = [arg for path in sorted(videos.glob("*.mp4")) for arg in ("--source", str(path))]
    out.mkdir(parents=True, exist_ok=True)
    for stale in (scores, events):
        stale.unlink(missing_ok=True)
    subprocess.run([sys.executable, "run_pipeline.py", "--model", str(model), *sources, "--fast", "--quiet",
                    "--no-control", "--no-metrics", "--log-level", "warning", "--scores-out", str(scores),
                    "--events-out", str(events), "--summary-json", str(out / "summary.json"), *engine],
                   cwd=REPO_ROOT, check=True, stdout=subprocess.DEVNULL)
    return scores, events


EDGE_MARGIN_S = 0.5


def map_away_from_edges(steps, instances, margin_s: float = EDGE_MARGIN_S) -> float | None:
    """mAP over the steps more than ``margin_s`` from every annotated start and end of their stream:
    what an online model scores once the lag at an action's edges is left out."""
    import numpy as np

    from tools.evaluation.annotations import BACKGROUND, group_by_video, label_at
    from tools.evaluation.map import average_precision

    by_stream = group_by_video(instances)
    classes = [c for c in steps[0].scores if c != BACKGROUND]
    kept = [s for s in steps
            if all(abs(s.t - i.start) > margin_s and abs(s.t - i.end) > margin_s for i in by_stream.get(s.stream, ()))]
    labels = np.array([label_at(by_stream.get(s.stream, ()), s.t) for s in kept])
    aps = [average_precision(np.array([s.scores[c] for s in kept]), labels == c) for c in classes
           if (labels == c).any()]
    return float(np.mean(aps)) if aps else None


def judge_set(model: Path, videos_root: Path, out: Path, engine: Sequence[str] = ()) -> dict:
    """The figures of ``model`` on one rendered test set, from the pipeline's own output."""
    from pipeline.scores import read_scores
    from tools.evaluation.annotations import read_annotations
    from tools.evaluation.events import match_starts, read_start_events
    from tools.evaluation.map import evaluate

    scores_path, events_path = run_pipeline(model, videos_root / "videos", out, engine)
    instances = read_annotations(videos_root / "annotations.txt")
    steps = read_scores(scores_path)
    metrics = evaluate(steps, instances, classes=tuple(steps[0].scores))
    # Every scored stream counts, also one where the pipeline emitted no event at all.
    starts = match_starts(read_start_events(events_path), instances, 1.0, streams={s.stream for s in steps})
    per_class = metrics["per_class_AP"]
    return {
        "streams": metrics["num_streams"], "steps": metrics["num_steps"],
        "mAP": metrics["mAP"], "mcAP": metrics["mcAP"], "p_mAP@1s": metrics["p_mAP@1s"],
        "p_mAP@2s": metrics["p_mAP@2s"], "mirror_pair_accuracy": metrics["mirror_pair_accuracy"],
        "per_class_AP": per_class, "min_class_AP": min(v for v in per_class.values() if v is not None),
        "event_precision": starts["precision"], "event_recall": starts["recall"],
        f"mAP_beyond_{EDGE_MARGIN_S:g}s_of_edges": map_away_from_edges(steps, instances),
    }


def verdict(report: dict) -> list[str]:
    """What misses the bar, one line each (empty: it is met)."""
    misses = []
    ordinary = report["sets"]["ordinary"]
    for key, bound in BAR.items():
        value = ordinary.get(key)
        if value is None or value < bound:
            misses.append(f"ordinary {key} {value if value is None else round(value, 3)} < {bound}")
    for name in ("heldout_looks", "alt_renderer"):
        other = report["sets"].get(name)
        if other is not None and other["mAP"] < ordinary["mAP"] - ROBUSTNESS_GAP:
            misses.append(f"{name} mAP {other['mAP']:.3f} is more than {ROBUSTNESS_GAP} below ordinary "
                          f"{ordinary['mAP']:.3f}")
    return misses


COLUMNS = (("mAP", "mAP"), ("mcAP", "mcAP"), ("p_mAP@1s", "p-mAP@1s"), ("p_mAP@2s", "p-mAP@2s"),
           ("mirror_pair_accuracy", "mirror"), ("min_class_AP", "min class AP"), ("event_precision", "event P"),
           ("event_recall", "event R"))


def table(report: dict) -> str:
    """Every set's figures, one row each, and the bar under them."""
    rows = [f"{'set':<22}{'streams':>8}" + "".join(f"{label:>13}" for _, label in COLUMNS)]
    for name, figures in report["sets"].items():
        cells = "".join(f"{'-' if figures.get(k) is None else format(figures[k], '.3f'):>13}" for k, _ in COLUMNS)
        rows.append(f"{name:<22}{figures.get('streams') or '-':>8}{cells}")
    rows.append(f"{'bar (ordinary)':<22}{'':>8}" + "".join(
        f"{format(BAR[k], '.2f') if k in BAR else '':>13}" for k, _ in COLUMNS))
    return "\n".join(rows)


def judge(model: Path, baseline: Path | None, data: Path, out: Path, sets: Sequence[str],
          engine: Sequence[str] = ()) -> dict:
    """The report on ``model`` over the test sets named in ``sets`` (rendered under ``data`` on first use, the
    pipeline's output under ``out``), with the frame-only ``baseline`` on the ordinary set when given;
    ``engine``: the pipeline's engine options, when not its default engine."""
    report: dict = {"model": str(model), "bar": BAR, "robustness_gap": ROBUSTNESS_GAP, "engine": list(engine),
                    "sets": {}}
    for test_set in TEST_SETS:
        if test_set.name not in sets:
            continue
        folder = data / test_set.name
        test_set.render(folder)
        print(f"judging {model.name} on {test_set.name} ...", file=sys.stderr, flush=True)
        report["sets"][test_set.name] = judge_set(model, folder, out / test_set.name, engine)
    if baseline is not None and "ordinary" in sets and baseline.is_file():
        report["sets"]["ordinary (frame-only)"] = judge_set(baseline, data / "ordinary", out / "ordinary_frame_only",
                                                            engine)
    report["misses"] = verdict(report) if "ordinary" in report["sets"] else []
    return report
