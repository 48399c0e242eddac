"""tools.evaluation.judging's verdict against the bar (the runs themselves take minutes: `make evaluate`)."""

from __future__ import annotations

from tools.evaluation.judging import BAR, table, verdict


def _figures(**changes) -> dict:
    base = {"streams": 48, "mAP": 0.92, "mcAP": 0.97, "p_mAP@1s": 0.85, "p_mAP@2s": 0.9,
            "mirror_pair_accuracy": 0.97, "min_class_AP": 0.85, "event_precision": 0.93, "event_recall": 0.91}
    return {**base, **changes}


def test_a_model_that_meets_every_figure_passes():
    report = {"sets": {"ordinary": _figures(), "heldout_looks": _figures(mAP=0.88), "alt_renderer": _figures(mAP=0.9)}}
    assert verdict(report) == []
    assert "0.920" in table(report) and "bar (ordinary)" in table(report)


def test_each_missed_figure_is_named_with_its_value_and_bound():
    report = {"sets": {"ordinary": _figures(mAP=0.89, event_recall=None, min_class_AP=0.79)}}
    misses = verdict(report)
    assert "ordinary mAP 0.89 < 0.9" in misses
    assert "ordinary event_recall None < 0.9" in misses
    assert "ordinary min_class_AP 0.79 < 0.8" in misses
    assert len(misses) == 3


def test_another_renderer_or_look_more_than_the_gap_below_ordinary_misses():
    report = {"sets": {"ordinary": _figures(mAP=0.93), "heldout_looks": _figures(mAP=0.87),
                       "alt_renderer": _figures(mAP=0.89)}}
    misses = verdict(report)
    assert misses == ["heldout_looks mAP 0.870 is more than 0.05 below ordinary 0.930"]
    assert set(BAR) == {"mAP", "mirror_pair_accuracy", "p_mAP@1s", "min_class_AP", "event_precision", "event_recall"}


def test_map_away_from_edges_leaves_out_the_steps_near_an_actions_start_and_end():
    from pipeline.scores import StepScores
    from tools.evaluation.annotations import ActionInstance
    from tools.evaluation.judging import map_away_from_edges
    from tools.evaluation.map import evaluate

    truth = [ActionInstance("s", "enter", 2.0, 4.0)]
    steps = []
    for i in range(32):  # 8 s at 4 steps/s; the model is late: it says 'enter' from 2.5 s to 4.25 s
        t = i * 0.25
        late = 2.5 <= t <= 4.25
        steps.append(StepScores("s", t, {"background": 0.1 if late else 0.9, "enter": 0.9 if late else 0.1}))
    everywhere = evaluate(steps, truth, classes=("background", "enter"))["mAP"]
    assert everywhere < 0.9  # the late steps cost AP ...
    assert map_away_from_edges(steps, truth) == 1.0  # ... and only they did
