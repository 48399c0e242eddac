"""Per-step class scores, stored as JSON lines, one object per model step:

    {"stream": "<video id>", "t": <seconds>, "scores": {"<class name>": <probability>, ...}}

Every line of a file carries the same set of class names; the order of the
first line is the file's class order, and steps read back use that order.
"""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType, TracebackType
from typing import Any

from pipeline.errors import ActionPipeError


class ScoresError(ActionPipeError, ValueError):
    """A scores file that cannot be read or written."""


class ScoresFormatError(ScoresError):
    """A scores line or record that does not follow the format."""


def _as_score_number(value: Any, what: str) -> float:
    # bool is an int subclass, but true/false in a scores file is a bug, not a number.
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ScoresFormatError(f"{what} must be a number, got {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise ScoresFormatError(f"{what} must be finite, got {value!r}")
    return number


@dataclass(frozen=True)
class StepScores:
    stream: str
    t: float
    scores: Mapping[str, float]
    # Written by the pipeline, absent offline: when the step was scored (unix time), and how long after
    # its frame was captured (the end-to-end latency of that step).
    wall_time: float | None = None
    latency_s: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.stream, str) or not self.stream:
            raise ScoresFormatError(f"stream must be a non-empty string, got {self.stream!r}")
        t = _as_score_number(self.t, "t")
        if t < 0.0:
            raise ScoresFormatError(f"t must be >= 0 seconds, got {t}")
        if not isinstance(self.scores, Mapping) or not self.scores:
            raise ScoresFormatError(f"scores must be a non-empty object of class -> number, got {self.scores!r}")
        clean: dict[str, float] = {}
        for name, value in self.scores.items():
            if not isinstance(name, str) or not name:
                raise ScoresFormatError(f"class names must be non-empty strings, got {name!r}")
            clean[name] = _as_score_number(value, f"score of {name!r}")
        # A read-only copy, so a frozen record cannot change through the caller's dict.
        object.__setattr__(self, "t", t)
        object.__setattr__(self, "scores", MappingProxyType(clean))

    def to_json(self) -> str:
        body: dict[str, Any] = {"stream": self.stream, "t": self.t, "scores": dict(self.scores)}
        if self.wall_time is not None:
            body["wall_time"] = round(self.wall_time, 6)
        if self.latency_s is not None:
            body["latency_s"] = round(self.latency_s, 6)
        return json.dumps(body, allow_nan=False)


def _class_set_mismatch(expected: Iterable[str], got: Iterable[str]) -> str:
    expected_set, got_set = set(expected), set(got)
    parts = []
    if missing := sorted(expected_set - got_set):
        parts.append(f"missing {missing}")
    if extra := sorted(got_set - expected_set):
        parts.append(f"extra {extra}")
    return ", ".join(parts)


class ScoresWriter:
    """Writes one line per step; usable as a context manager. Closing flushes."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.count = 0
        self._classes: tuple[str, ...] | None = None
        try:
            self._file = self.path.open("w", encoding="utf-8")
        except OSError as exc:
            raise ScoresError(f"cannot write scores file {self.path}: {exc.strerror}") from exc

    def write(self, step: StepScores) -> None:
        if self._file.closed:
            raise ScoresError(f"scores file {self.path} is already closed")
        if self._classes is None:
            self._classes = tuple(step.scores)
        elif set(step.scores) != set(self._classes):
            # Refuse here so the writer never produces a file that read_scores rejects.
            raise ScoresFormatError(
                f"{self.path}: step {self.count + 1} ({step.stream} t={step.t}) has a different "
                f"class set than step 1: {_class_set_mismatch(self._classes, step.scores)}"
            )
        self._file.write(step.to_json() + "\n")
        self.count += 1

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> ScoresWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def write_scores(path: str | Path, steps: Iterable[StepScores]) -> int:
    """Write all steps to ``path``; returns the number of lines written."""
    with ScoresWriter(path) as writer:
        for step in steps:
            writer.write(step)
    return writer.count


def parse_step(line: str) -> StepScores:
    """One JSON line -> StepScores; errors carry no location (the caller adds it)."""
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ScoresFormatError(f"invalid JSON ({exc.msg} at column {exc.colno})") from exc
    if not isinstance(obj, dict):
        raise ScoresFormatError(f"expected a JSON object, got {type(obj).__name__}")
    missing = [key for key in ("stream", "t", "scores") if key not in obj]
    if missing:
        raise ScoresFormatError(f"missing key(s): {', '.join(missing)}")
    return StepScores(obj["stream"], obj["t"], obj["scores"], obj.get("wall_time"), obj.get("latency_s"))


def read_scores(path: str | Path) -> list[StepScores]:
    path = Path(path)
    if not path.is_file():
        raise ScoresError(f"scores file not found: {path}")
    steps: list[StepScores] = []
    classes: tuple[str, ...] = ()
    first_lineno = 0
    lineno = 0
    with path.open(encoding="utf-8") as handle:
        try:
            for lineno, raw in enumerate(handle, start=1):
                line = raw.strip()
                if not line:
                    continue
                try:
                    step = parse_step(line)
                except ScoresFormatError as exc:
                    raise ScoresFormatError(f"{path}:{lineno}: {exc}") from exc
                if not steps:
                    classes, first_lineno = tuple(step.scores), lineno
                elif set(step.scores) != set(classes):
                    raise ScoresFormatError(
                        f"{path}:{lineno}: class set differs from line {first_lineno}: "
                        f"{_class_set_mismatch(classes, step.scores)}"
                    )
                elif tuple(step.scores) != classes:
                    step = StepScores(step.stream, step.t, {name: step.scores[name] for name in classes}, step.wall_time,
                                      step.latency_s)
                steps.append(step)
        except UnicodeDecodeError as exc:
            raise ScoresFormatError(f"{path}:{lineno + 1}: not UTF-8 text") from exc
    return steps
