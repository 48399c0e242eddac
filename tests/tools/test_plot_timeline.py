"""tools.plot_timeline: what it draws (bands per annotated action, marks per event, a line per class)
and the picture it writes."""

from __future__ import annotations

import json

import cv2
import pytest

from pipeline.scores import StepScores, write_scores
from tools.cli import UsageError
from tools.evaluation.annotations import SYNTH_ACTIONS_CLASSES, ActionInstance
from tools.evaluation.timeline import timeline_figure
from tools.plot_timeline import main


def _steps(stream: str = "cam1", n: int = 40) -> list[StepScores]:
    classes = list(SYNTH_ACTIONS_CLASSES)
    steps = []
    for i in range(n):
        t = i / 4
        enter = 0.9 if 2.0 <= t < 4.0 else 0.05
        scores = {c: 0.01 for c in classes}
        scores["enter"] = enter
        scores["background"] = 1.0 - enter
        steps.append(StepScores(stream, t, scores))
    return steps


def test_each_class_gets_a_row_with_its_own_bands_and_marks():
    truth = [ActionInstance("cam1", "enter", 2.0, 4.0), ActionInstance("cam1", "lights_on", 6.0, 7.0)]
    events = [{"action": "enter", "kind": "start", "t": 2.25}, {"action": "enter", "kind": "end", "t": 4.25}]
    figure = timeline_figure(_steps(), truth, events, "cam1")
    axes = {ax.get_ylabel(): ax for ax in figure.axes}
    assert set(axes) == set(SYNTH_ACTIONS_CLASSES) - {"background"}
    assert len(axes["enter"].patches) == 1 and len(axes["lights_on"].patches) == 1 and not axes["exit"].patches
    enter_lines = axes["enter"].get_lines()
    assert len(enter_lines) == 3  # the probabilities, a start mark, an end mark
    assert max(enter_lines[0].get_ydata()) == pytest.approx(0.9)
    assert [line.get_marker() for line in enter_lines[1:]] == ["^", "v"]
    assert len(axes["lights_on"].get_lines()) == 1  # no events for lights_on


def test_the_command_writes_a_picture_and_names_a_missing_stream(tmp_path):
    scores = tmp_path / "scores.jsonl"
    write_scores(scores, _steps("cam1") + _steps("cam2"))
    annotations = tmp_path / "annotations.txt"
    annotations.write_text("cam1 enter 2.0 4.0\ncam2 exit 1.0 2.0\n")
    events = tmp_path / "events.jsonl"
    events.write_text(json.dumps({"stream": "cam1", "action": "enter", "kind": "start", "t": 2.25, "confidence": 0.9,
                                  "wall_time": 0.0, "reason": "threshold"}) + "\n")
    out = tmp_path / "plots" / "cam1.png"
    assert main(["--scores", str(scores), "--annotations", str(annotations), "--events", str(events),
                 "--stream", "cam1", "--out", str(out)]) == 0
    image = cv2.imread(str(out))
    assert image is not None and image.shape[1] > 1000 and image.shape[0] > 600
    with pytest.raises(UsageError, match="'cam9' has no steps .* streams there: cam1, cam2"):
        main(["--scores", str(scores), "--annotations", str(annotations), "--stream", "cam9", "--out", str(out)])
    events.write_text("not json\n")
    with pytest.raises(UsageError, match="line 1: not an event line"):
        main(["--scores", str(scores), "--annotations", str(annotations), "--events", str(events),
              "--stream", "cam1", "--out", str(out)])
