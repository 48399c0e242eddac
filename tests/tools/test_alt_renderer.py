"""The independent SynthActions v1 renderer (tools/synthactions/alt_renderer.py) against the spec's limits."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from tools.alt_renderer import main
from tools.evaluation.annotations import SYNTH_ACTIONS_CLASSES, group_by_video, read_annotations
from tools.synthactions.alt_renderer import ACTIONS, plan_stream, write_alt_dataset

SMALL = dict(sizes=((320, 240),), fps_choices=(10,), duration_range=(12.0, 12.0))


def _decode(path: Path) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    assert cap.isOpened(), path
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    return frames


@pytest.fixture(scope="module")
def small_set(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("alt")
    write_alt_dataset(out, 2, seed=3, **SMALL)
    return out


def test_videos_decode_to_expected_frames(small_set: Path) -> None:
    videos = sorted((small_set / "videos").glob("*.mp4"))
    assert [v.name for v in videos] == ["alt3_0000.mp4", "alt3_0001.mp4"]
    for video in videos:
        frames = _decode(video)
        assert len(frames) == 120  # 12 s at 10 fps
        assert frames[0].shape == (240, 320, 3)
        assert float(np.ptp([f.mean() for f in frames])) > 1.0  # the scene changes over time


def test_annotations_follow_the_timeline(small_set: Path) -> None:
    by_video = group_by_video(read_annotations(small_set / "annotations.txt"))
    assert set(by_video) == {"alt3_0000", "alt3_0001"}
    for items in by_video.values():
        assert items
        assert 1.0 <= items[0].start <= 5.0  # starts with background
        assert 1.0 <= 12.0 - items[-1].end <= 5.0  # ends with background
        for inst in items:
            assert inst.action in SYNTH_ACTIONS_CLASSES[1:]
            lo, hi = (0.5, 2.0) if inst.action.startswith("lights") else (1.0, 3.0)
            assert lo <= inst.end - inst.start <= hi, inst
        for prev, nxt in zip(items, items[1:]):
            assert 1.0 <= nxt.start - prev.end <= 5.0  # a background gap, never an overlap


def test_deterministic_per_seed(small_set: Path, tmp_path: Path) -> None:
    write_alt_dataset(tmp_path / "again", 2, seed=3, **SMALL)
    write_alt_dataset(tmp_path / "other", 2, seed=4, **SMALL)
    text = (small_set / "annotations.txt").read_text()
    assert (tmp_path / "again" / "annotations.txt").read_text() == text
    assert (tmp_path / "other" / "annotations.txt").read_text().replace("alt4_", "alt3_") != text
    a = _decode(small_set / "videos" / "alt3_0001.mp4")
    b = _decode(tmp_path / "again" / "videos" / "alt3_0001.mp4")
    assert all(np.array_equal(x, y) for x, y in zip(a, b))


def _visible(plan, i: int) -> bool:
    h = plan.side[i] / 2
    return (h <= plan.cx[i] <= plan.width - h) and (h <= plan.cy[i] <= plan.height - h)


def _outside(plan, i: int) -> bool:
    h = plan.side[i] / 2
    x, y = plan.cx[i], plan.cy[i]
    return x + h < 0 or x - h > plan.width or y + h < 0 or y - h > plan.height


def test_plans_respect_the_spec() -> None:
    from tools.synthactions.alt_renderer import SHAPES

    counts = {c: 0 for c in ACTIONS}
    for i in range(120):
        rng = np.random.default_rng([11, i])
        w, h = [(320, 240), (640, 480), (1280, 720), (1920, 1080)][i % 4]
        fps = (10, 15, 24, 30)[i // 4 % 4]
        plan = plan_stream(rng, w, h, fps, int(fps * rng.uniform(20, 40)), counts)
        area = SHAPES[plan.shape] * plan.side**2 / (w * h)
        assert np.all((plan.bright >= 0.25 - 1e-9) & (plan.bright <= 1.0 + 1e-9))
        label = np.zeros(len(plan.bright), int)
        for cls, f0, f1 in plan.actions:
            label[f0:f1] = 1
            seg = slice(f0, f1)
            if cls in ("approach", "recede"):
                assert all(_visible(plan, j) for j in range(f0, f1))
                ratio = area[f1 - 1] / area[f0] if cls == "approach" else area[f0] / area[f1 - 1]
                assert ratio >= 2.5 and np.all(np.diff(area[seg]) * (1 if cls == "approach" else -1) > 0)
                assert 0.02 <= area[seg].min() and area[seg].max() <= 0.40
            elif cls in ("enter", "exit"):
                first, last = (f0, f1 - 1) if cls == "enter" else (f1 - 1, f0)
                assert _outside(plan, first) and _visible(plan, last)
                assert 0.02 <= area[f0] <= 0.40
            else:
                d = np.diff(plan.bright[seg]) * (1 if cls == "lights_on" else -1)
                assert np.all(d > 0) and abs(plan.bright[f1 - 1] - plan.bright[f0]) >= 0.4
        # background frames: still actor (jitter <= 2% width/s, no size change), slow brightness
        bg = np.flatnonzero(label == 0)
        steps = bg[:-1][np.diff(bg) == 1]
        speed = np.hypot(plan.cx[steps + 1] - plan.cx[steps], plan.cy[steps + 1] - plan.cy[steps]) * fps
        moving = plan.present[steps] & plan.present[steps + 1]
        assert np.all(speed[moving] <= 0.02 * w)
        assert np.all(np.abs(plan.side[steps + 1] - plan.side[steps])[moving] < 1e-9)
        assert np.all(np.abs(np.diff(plan.bright)[steps]) * fps <= 0.05 + 1e-9)
    total = sum(counts.values())
    assert all(0.12 <= n / total <= 0.22 for n in counts.values()), counts


def test_cli_rejects_bad_input(tmp_path: Path, capsys) -> None:
    assert main(["--out", str(tmp_path), "--count", "0"]) == 2
    assert capsys.readouterr().err.startswith("error: count")
    assert main(["--out", str(tmp_path), "--count", "1", "--fps", "60"]) == 2
    assert "error: fps" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["--out", str(tmp_path), "--count", "1", "--size", "big"])
    assert exc.value.code == 2
