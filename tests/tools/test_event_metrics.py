from tools.evaluation.annotations import ActionInstance
from tools.evaluation.events import StartEvent, match_starts


def test_starts_match_by_class_stream_and_offset_once_each():
    truth = [ActionInstance("a", "enter", 2.0, 4.0), ActionInstance("a", "exit", 8.0, 9.0), ActionInstance("b", "enter", 1.0, 2.0)]
    events = [
        StartEvent("a", "enter", 2.5),   # hit
        StartEvent("a", "enter", 2.8),   # duplicate: the true start is taken
        StartEvent("a", "exit", 9.5),    # 1.5 s late: miss at 1 s
        StartEvent("b", "exit", 1.0),    # wrong class
    ]
    result = match_starts(events, truth, offset_s=1.0)
    assert result == {"true_starts": 3, "start_events": 4, "matched": 1, "recall": 1 / 3, "precision": 1 / 4}
    assert match_starts(events, truth, offset_s=2.0)["matched"] == 2
