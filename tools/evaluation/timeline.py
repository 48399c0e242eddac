"""One stream's scores over time, with the true actions as bands and the events as marks: for judging a model by eye
(``python -m tools.plot_timeline``).

One row per action class (background left out): the class's probability at
every step as a line, the annotated instances of that class as shaded bands,
and the pipeline's start (▲) and end (▼) events for that class as marks.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from pipeline.scores import StepScores
from tools.cli import UsageError
from tools.evaluation.annotations import ActionInstance


def read_events(path: Path, stream: str) -> list[dict]:
    """The events of ``stream`` in an events file (action, kind, t)."""
    if not path.is_file():
        raise UsageError(f"--events {path}: no such file")
    events = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            event = json.loads(line)
            if event["stream"] == stream:
                events.append({"action": event["action"], "kind": event["kind"], "t": float(event["t"])})
        except (ValueError, KeyError, TypeError) as exc:
            raise UsageError(f"--events {path}, line {number}: not an event line ({exc})") from exc
    return events


def timeline_figure(steps: Sequence[StepScores], truth: Sequence[ActionInstance], events: Sequence[dict],
                    stream: str, background: str = "background"):
    """The figure (matplotlib, headless): one axis per class, shared time axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    classes = [c for c in steps[0].scores if c != background]
    times = [s.t for s in steps]
    fig, axes = plt.subplots(len(classes), 1, sharex=True, figsize=(12, 0.9 * len(classes) + 1.2), squeeze=False)
    for ax, name in zip(axes[:, 0], classes):
        for instance in truth:
            if instance.action == name:
                ax.axvspan(instance.start, instance.end, color="tab:green", alpha=0.25, linewidth=0)
        ax.plot(times, [s.scores[name] for s in steps], color="tab:blue", linewidth=1.2)
        for event in events:
            if event["action"] == name:
                start = event["kind"] == "start"
                ax.plot(event["t"], 0.95 if start else 0.05, marker="^" if start else "v", linestyle="none",
                        color="tab:red" if start else "black", markersize=6)
        ax.set_ylim(0, 1)
        ax.set_yticks([0, 1])
        ax.set_ylabel(name, rotation=0, ha="right", va="center", fontsize=9)
        ax.grid(axis="x", alpha=0.3)
    axes[-1, 0].set_xlabel("stream time (s)")
    axes[0, 0].set_title(f"{stream}: class probability (line), annotated actions (green), "
                         f"events start \u25b2 / end \u25bc", fontsize=10)
    fig.tight_layout()
    return fig
