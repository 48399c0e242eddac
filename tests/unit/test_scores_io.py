import json
from pathlib import Path

import numpy as np
import pytest

from pipeline.scores import ScoresError, ScoresFormatError, ScoresWriter, StepScores, read_scores, write_scores


def _write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def _line(stream: str = "v1", t: float = 0.0, scores: dict | None = None) -> str:
    return json.dumps({"stream": stream, "t": t, "scores": scores or {"background": 0.9, "enter": 0.1}})


def test_round_trip_keeps_values_and_class_order(tmp_path):
    steps = [
        StepScores("v1", 0.0, {"recede": 0.2, "background": 0.7, "approach": 0.1}),
        StepScores("v1", 0.5, {"recede": 0.1, "background": 0.1, "approach": 0.8}),
        StepScores("v2", 0.0, {"recede": 0.0, "background": 1.0, "approach": 0.0}),
    ]
    path = tmp_path / "s.jsonl"
    assert write_scores(path, steps) == 3
    back = read_scores(path)
    assert back == steps
    assert list(back[0].scores) == ["recede", "background", "approach"]
    assert len(path.read_text().splitlines()) == 3


def test_later_lines_are_reordered_to_first_seen_class_order(tmp_path):
    path = _write_lines(
        tmp_path / "s.jsonl",
        [_line(scores={"b": 0.5, "a": 0.5}), "", _line(t=1.0, scores={"a": 0.25, "b": 0.75})],
    )
    steps = read_scores(path)
    assert [list(s.scores) for s in steps] == [["b", "a"], ["b", "a"]]
    assert steps[1].scores["a"] == 0.25


def test_streaming_writer_accepts_numpy_numbers_and_flushes_on_close(tmp_path):
    path = tmp_path / "s.jsonl"
    with ScoresWriter(path) as writer:
        writer.write(StepScores("v1", np.float64(0.25), {"a": np.float32(0.5), "b": 1}))
    assert json.loads(path.read_text()) == {"stream": "v1", "t": 0.25, "scores": {"a": 0.5, "b": 1.0}}


def test_writer_rejects_a_changing_class_set(tmp_path):
    with ScoresWriter(tmp_path / "s.jsonl") as writer:
        writer.write(StepScores("v1", 0.0, {"a": 0.5, "b": 0.5}))
        with pytest.raises(ScoresFormatError, match=r"missing \['b'\]"):
            writer.write(StepScores("v1", 1.0, {"a": 1.0}))


def test_step_scores_is_read_only():
    source = {"a": 0.5}
    step = StepScores("v1", 0.0, source)
    source["a"] = 0.0
    assert step.scores["a"] == 0.5
    with pytest.raises(TypeError):
        step.scores["a"] = 1.0  # type: ignore[index]


@pytest.mark.parametrize(
    ("bad_line", "message"),
    [
        ('{"stream": "v1", "t": 1.0, "scores": {"a": 0.5, "b": 0.5}', "invalid JSON"),
        ('{"stream": "v1", "scores": {"a": 0.5, "b": 0.5}}', "missing key.*t"),
        ('{"stream": "v1", "t": 1.0, "scores": {"a": "high", "b": 0.5}}', "score of 'a' must be a number"),
        ('{"stream": "v1", "t": 1.0, "scores": {"a": true, "b": 0.5}}', "score of 'a' must be a number"),
        ('{"stream": "v1", "t": 1.0, "scores": {"a": NaN, "b": 0.5}}', "must be finite"),
        ('{"stream": "v1", "t": -1.0, "scores": {"a": 0.5, "b": 0.5}}', "t must be >= 0"),
        ('{"stream": "", "t": 1.0, "scores": {"a": 0.5, "b": 0.5}}', "stream must be"),
        ('["v1", 1.0]', "expected a JSON object"),
        (
            '{"stream": "v1", "t": 1.0, "scores": {"a": 0.5, "c": 0.5}}',
            r"differs from line 1: missing \['b'\], extra \['c'\]",
        ),
    ],
)
def test_malformed_line_names_file_and_line(tmp_path, bad_line, message):
    path = _write_lines(
        tmp_path / "bad.jsonl",
        [_line(scores={"a": 0.5, "b": 0.5}), _line(t=0.5, scores={"a": 0.5, "b": 0.5}), bad_line],
    )
    with pytest.raises(ScoresFormatError, match=message) as info:
        read_scores(path)
    assert str(info.value).startswith(f"{path}:3: ")


def test_missing_file(tmp_path):
    with pytest.raises(ScoresError, match="not found"):
        read_scores(tmp_path / "nope.jsonl")


def test_binary_file_is_a_format_error(tmp_path):
    path = tmp_path / "bin.jsonl"
    path.write_bytes(b"\xff\xfe\x00garbage\n")
    with pytest.raises(ScoresFormatError, match=r"bin.jsonl:1: not UTF-8"):
        read_scores(path)
