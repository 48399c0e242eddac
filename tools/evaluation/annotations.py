"""THUMOS'14-style action annotations: one line per action instance.

    <video_id> <class_name> <start_seconds> <end_seconds>

A step at time ``t`` belongs to an instance when ``start <= t < end``; steps
covered by no instance are background.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import ActionPipeError

BACKGROUND = "background"

# SynthActions v1 (docs/synthactions.md): index order is the contract.
SYNTH_ACTIONS_CLASSES: tuple[str, ...] = (
    BACKGROUND,
    "approach",
    "recede",
    "enter",
    "exit",
    "lights_on",
    "lights_off",
)
SYNTH_ACTIONS_MIRROR_PAIRS: tuple[tuple[str, str], ...] = (
    ("approach", "recede"),
    ("enter", "exit"),
    ("lights_on", "lights_off"),
)


class AnnotationError(ActionPipeError, ValueError):
    """An annotation file or instance that does not follow the format."""


@dataclass(frozen=True)
class ActionInstance:
    video_id: str
    action: str
    start: float
    end: float

    def __post_init__(self) -> None:
        if not self.video_id or any(c.isspace() for c in self.video_id):
            raise AnnotationError(f"video id {self.video_id!r} must be non-empty without whitespace")
        if not self.end > self.start >= 0.0:
            raise AnnotationError(
                f"{self.video_id} {self.action}: need 0 <= start < end, got {self.start}..{self.end}"
            )

    def contains(self, t: float) -> bool:
        return self.start <= t < self.end

    def format(self) -> str:
        return f"{self.video_id} {self.action} {self.start:.3f} {self.end:.3f}"


def parse_annotations(text: str, source: str = "<string>") -> list[ActionInstance]:
    instances: list[ActionInstance] = []
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 4:
            raise AnnotationError(
                f"{source}:{lineno}: expected '<video_id> <class> <start> <end>', got {line!r}"
            )
        video_id, action, start_s, end_s = parts
        try:
            start, end = float(start_s), float(end_s)
        except ValueError as exc:
            raise AnnotationError(f"{source}:{lineno}: start/end must be seconds, got {line!r}") from exc
        try:
            instances.append(ActionInstance(video_id, action, start, end))
        except AnnotationError as exc:
            raise AnnotationError(f"{source}:{lineno}: {exc}") from exc
    return instances


def read_annotations(path: str | Path) -> list[ActionInstance]:
    path = Path(path)
    if not path.is_file():
        raise AnnotationError(f"annotation file not found: {path}")
    return parse_annotations(path.read_text(encoding="utf-8"), source=str(path))


def write_annotations(path: str | Path, instances: Iterable[ActionInstance]) -> None:
    lines = [inst.format() for inst in instances]
    Path(path).write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def group_by_video(instances: Iterable[ActionInstance]) -> dict[str, list[ActionInstance]]:
    grouped: dict[str, list[ActionInstance]] = {}
    for inst in instances:
        grouped.setdefault(inst.video_id, []).append(inst)
    for items in grouped.values():
        items.sort(key=lambda i: i.start)
    return grouped


def label_at(instances: Sequence[ActionInstance], t: float) -> str:
    """The class of time ``t`` in one video (instances of that video only)."""
    for inst in instances:
        if inst.contains(t):
            return inst.action
    return BACKGROUND


def label_steps(
    instances_by_video: Mapping[str, Sequence[ActionInstance]], video_id: str, times: Iterable[float]
) -> list[str]:
    own = instances_by_video.get(video_id, ())
    return [label_at(own, t) for t in times]
