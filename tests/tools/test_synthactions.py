"""SynthActions v1 renderer: the data it makes follows docs/synthactions.md."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

import cv2
import numpy as np
import pytest

from tools.evaluation.annotations import BACKGROUND, SYNTH_ACTIONS_CLASSES, label_at, read_annotations
from tools.synthactions.dataset import MIXED_SIZES, plan_dataset_stream, resolve_sizes, write_dataset
from tools.synthactions.planning import plan_stream
from tools.synthactions.rendering import render_stream
from tools.synthactions.scene import StreamPlan
from tools.synthactions.validation import validate_plan

ROOT = Path(__file__).resolve().parents[2]
ACTIONS = SYNTH_ACTIONS_CLASSES[1:]
LIGHTS = ("lights_on", "lights_off")
MS = 1e-6  # float slack on millisecond times


# --------------------------------------------------------------- helpers


def status(box: tuple[float, float, float, float], w: int, h: int) -> str:
    x0, y0, x1, y1 = box
    if x1 <= 0 or y1 <= 0 or x0 >= w or y0 >= h:
        return "outside"
    if x0 >= 0 and y0 >= 0 and x1 <= w and y1 <= h:
        return "inside"
    return "partial"


def plan_status(plan: StreamPlan, frame: int) -> tuple[str, float, float]:
    """(status, area when fully visible, brightness) of a plan's scene at a frame."""
    s = plan.state_at(frame)
    if s.actor < 0:
        return "none", 0.0, s.brightness
    return status(plan.actor_box(s.actor, s.cx, s.cy, s.area), plan.width, plan.height), s.area, s.brightness


def overlap(a: list[float], b: list[float], bins: np.ndarray) -> float:
    """Histogram intersection of two samples (1 = same distribution)."""
    ha, _ = np.histogram(a, bins)
    hb, _ = np.histogram(b, bins)
    return float(np.minimum(ha / ha.sum(), hb / hb.sum()).sum())


@pytest.fixture(scope="module")
def plans() -> list[StreamPlan]:
    return [plan_dataset_stream(11, i, sizes=None, fps=None) for i in range(300)]


@pytest.fixture(scope="module")
def rendered() -> list[tuple[StreamPlan, list, list[float]]]:
    """A few short rendered streams that together hold every action class."""
    out, seen = [], set()
    for i in range(40):
        plan = plan_dataset_stream(3, i, sizes=(320, 240), fps=10, duration_range=(18.0, 22.0))
        labels = {inst.action for inst in plan.instances()}
        if labels <= seen:
            continue
        truths, means = [], []
        for frame, truth in render_stream(plan):
            assert frame.shape == (240, 320, 3) and frame.dtype == np.uint8
            truths.append(truth)
            means.append(float(frame.mean()))
        out.append((plan, truths, means))
        seen |= labels
        if seen == set(ACTIONS):
            break
    assert seen == set(ACTIONS), f"no rendered stream holds {set(ACTIONS) - seen}"
    return out


# ------------------------------------------------------- timeline (plans)


def test_timeline_rules(plans: list[StreamPlan]) -> None:
    for plan in plans:
        inst = plan.instances()
        assert inst, plan.video_id
        duration = plan.n_frames / plan.fps
        assert 1.0 - MS <= inst[0].start <= 5.0 + MS
        assert 1.0 - MS <= duration - inst[-1].end <= 5.0 + MS, (plan.video_id, duration, inst[-1])
        for a, b in zip(inst, inst[1:]):
            assert 1.0 - MS <= b.start - a.end <= 5.0 + MS, (a, b)
        for i in inst:
            lo, hi = (0.5, 2.0) if i.action in LIGHTS else (1.0, 3.0)
            assert lo - MS <= i.end - i.start <= hi + MS, i
            assert i.action in ACTIONS
            assert f"{i.start:.3f}" == i.format().split()[2]  # millisecond precision


def test_frame_labels_match_annotations(plans: list[StreamPlan]) -> None:
    for plan in plans[:100]:
        inst = plan.instances()
        for seg in plan.segments:
            for frame in (seg.start, seg.end - 1):
                assert label_at(inst, frame / plan.fps) == seg.label, (plan.video_id, frame)


def test_state_consistency(plans: list[StreamPlan]) -> None:
    for plan in plans:
        for seg in plan.segments:
            if seg.label == BACKGROUND:
                continue
            st0, a0, b0 = plan_status(plan, seg.start)
            st1, a1, b1 = plan_status(plan, seg.end - 1)
            before = plan_status(plan, seg.start - 1)[0]
            where = (plan.video_id, seg.label, seg.start)
            if seg.label in ("approach", "recede"):
                assert before == st0 == st1 == "inside", where
                assert (a1 / a0 if seg.label == "approach" else a0 / a1) >= 2.5, where
                assert 0.02 <= min(a0, a1) and max(a0, a1) <= 0.40, where
            elif seg.label == "enter":
                assert before in ("none", "outside") and st0 == "outside" and st1 == "inside", where
            elif seg.label == "exit":
                assert before == st0 == "inside" and st1 == "outside", where
                assert plan_status(plan, seg.end)[0] in ("none", "outside"), where
            elif seg.label == "lights_on":
                assert b1 - b0 >= 0.4 and 0.25 <= b0 and b1 <= 1.0, where
            else:
                assert b0 - b1 >= 0.4 and b1 >= 0.25 and b0 <= 1.0, where


def test_background_limits_in_plans(plans: list[StreamPlan]) -> None:
    for plan in plans[:60]:
        w, h, fps = plan.width, plan.height, plan.fps
        prev = None
        for k in range(plan.n_frames):
            s = plan.state_at(k)
            if prev is not None and s.label == prev.label == BACKGROUND:
                assert abs(s.brightness - prev.brightness) <= 0.05 / fps + 1e-9
                if s.actor >= 0 and prev.actor >= 0:
                    assert math.hypot(s.cx - prev.cx, s.cy - prev.cy) <= 0.02 * w / fps + 1e-6
                    assert abs(math.log(s.area / prev.area)) <= math.log(1.05) / fps + 1e-9
                    assert status(plan.actor_box(s.actor, s.cx, s.cy, s.area), w, h) != "outside"
                elif s.actor != prev.actor:
                    pytest.fail(f"{plan.video_id}: actor appears/disappears in background at {k}")
            prev = s


def test_background_covers_action_states(plans: list[StreamPlan]) -> None:
    seen: Counter[str] = Counter()
    areas, bright = [], []
    for plan in plans[:150]:
        for k in range(0, plan.n_frames, 3):
            if plan.state_at(k).label != BACKGROUND:
                continue
            st, area, b = plan_status(plan, k)
            seen[st] += 1
            bright.append(b)
            if st == "inside":
                areas.append(area)
    assert seen["none"] > 0 and seen["partial"] > 0 and seen["inside"] > 0
    assert min(areas) < 0.03 and max(areas) > 0.30
    assert min(bright) < 0.3 and max(bright) > 0.95


def test_class_balance() -> None:
    counts = Counter(i.action for k in range(200) for i in plan_dataset_stream(2, k, sizes=None).instances())
    total = sum(counts.values())
    assert total > 1000
    for c in ACTIONS:
        assert 0.13 <= counts[c] / total <= 0.20, (c, counts)


def test_mirror_pairs_look_alike(plans: list[StreamPlan]) -> None:
    areas, bright, visible = defaultdict(list), defaultdict(list), defaultdict(list)
    for plan in plans:
        for seg in plan.segments:
            if seg.label == BACKGROUND:
                continue
            for k in range(seg.start, seg.end):
                s = plan.state_at(k)
                bright[s.label].append(s.brightness)
                if s.actor >= 0:
                    x0, y0, x1, y1 = plan.actor_box(s.actor, s.cx, s.cy, s.area)
                    ox = max(0.0, min(x1, plan.width) - max(x0, 0.0))
                    oy = max(0.0, min(y1, plan.height) - max(y0, 0.0))
                    visible[s.label].append(ox * oy / ((x1 - x0) * (y1 - y0)))
                    areas[s.label].append(math.log(s.area))
    assert overlap(areas["approach"], areas["recede"], np.linspace(math.log(0.02), math.log(0.4), 13)) > 0.75
    assert overlap(bright["lights_on"], bright["lights_off"], np.linspace(0.25, 1.0, 13)) > 0.75
    assert overlap(visible["enter"], visible["exit"], np.linspace(0.0, 1.0, 11)) > 0.75


def test_plan_is_deterministic() -> None:
    a = plan_stream(np.random.default_rng(5), "v", 640, 360, 25.0, duration=20.0)
    b = plan_stream(np.random.default_rng(5), "v", 640, 360, 25.0, duration=20.0)
    c = plan_stream(np.random.default_rng(6), "v", 640, 360, 25.0, duration=20.0)
    assert a == b and a != c


def test_train_and_heldout_looks_share_no_background_actor_or_noise_level() -> None:
    from tools.synthactions.looks import LOOKS

    seen: dict[str, dict[str, set]] = {}
    for looks in ("train", "heldout"):
        found = seen[looks] = {"backgrounds": set(), "actors": set(), "noise": set()}
        for index in range(30):
            plan = plan_dataset_stream(77, index, "mixed", duration_range=(8.0, 12.0), looks=looks)
            assert not validate_plan(plan)  # still a valid stream
            found["backgrounds"].add(plan.background.kind)
            found["actors"].update((a.shape, a.fill) for a in plan.actors)
            lo, hi = LOOKS[looks].noise_std
            assert lo <= plan.noise_std <= hi
            found["noise"].add(plan.noise_std)
        assert found["backgrounds"] <= set(LOOKS[looks].backgrounds)
        assert {s for s, _ in found["actors"]} <= set(LOOKS[looks].shapes)
        assert {f for _, f in found["actors"]} <= set(LOOKS[looks].fills)
        assert len(found["backgrounds"]) >= 2 and len(found["actors"]) >= 3  # still varied within its looks
    train, heldout = seen["train"], seen["heldout"]
    assert not train["backgrounds"] & heldout["backgrounds"]
    assert not {s for s, _ in train["actors"]} & {s for s, _ in heldout["actors"]}
    assert not {f for _, f in train["actors"]} & {f for _, f in heldout["actors"]}
    assert max(train["noise"]) < min(heldout["noise"])


def test_all_looks_plans_what_it_planned_before_looks_existed() -> None:
    # "all" draws exactly as the renderer always did: earlier data sets stay reproducible.
    from tools.synthactions.looks import LOOKS

    a = plan_stream(np.random.default_rng(5), "v", 640, 360, 25.0, duration=20.0)
    b = plan_stream(np.random.default_rng(5), "v", 640, 360, 25.0, duration=20.0, looks=LOOKS["all"])
    assert a == b


def test_plan_rejects_bad_input() -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="100x100"):
        plan_stream(rng, "v", 100, 100, 10.0)
    with pytest.raises(ValueError, match="fps 60"):
        plan_stream(rng, "v", 320, 240, 60.0)


def test_sizes() -> None:
    assert resolve_sizes("mixed") == resolve_sizes(None) == MIXED_SIZES
    assert resolve_sizes("640x360") == resolve_sizes((640, 360)) == ((640, 360),)
    assert resolve_sizes([(320, 240), "1280x720"]) == ((320, 240), (1280, 720))
    for bad in ("320x200", "abc", (4000, 3000)):
        with pytest.raises(ValueError):
            resolve_sizes(bad)
    seen = {(p.width, p.height) for p in (plan_dataset_stream(1, k, sizes="mixed") for k in range(60))}
    assert len(seen) >= 6 and seen <= set(MIXED_SIZES)
    rates = {plan_dataset_stream(1, k, sizes="mixed").fps for k in range(60)}
    assert len(rates) >= 10 and all(10 <= r <= 30 for r in rates)


# -------------------------------------------------------- rendered frames


def _instance_truths(plan: StreamPlan, truths: list) -> list[tuple[str, list]]:
    out = []
    for inst in plan.instances():
        frames = [t for t in truths if inst.contains(t.t)]
        assert frames and all(t.label == inst.action for t in frames)
        out.append((inst.action, frames))
    return out


def test_rendered_truth_labels(rendered) -> None:
    for plan, truths, _ in rendered:
        inst = plan.instances()
        assert len(truths) == plan.n_frames
        for i, t in enumerate(truths):
            assert t.t == pytest.approx(i / plan.fps)
            assert t.label == label_at(inst, t.t)
            assert (t.actor_area_fraction > 0) == t.actor_present
            assert 0.25 <= t.brightness <= 1.0
            if t.actor_fully_inside:
                assert 0.02 <= t.actor_area_fraction <= 0.40, (plan.video_id, i, t)


def test_rendered_actions(rendered) -> None:
    for plan, truths, means in rendered:
        index = {id(t): i for i, t in enumerate(truths)}
        for action, fr in _instance_truths(plan, truths):
            area = [t.actor_area_fraction for t in fr]
            b = [t.brightness for t in fr]
            where = (plan.video_id, action, fr[0].t)
            if action in ("approach", "recede"):
                assert all(t.actor_fully_inside for t in fr), where
                seq = area if action == "approach" else area[::-1]
                assert all(y >= x * 0.99 for x, y in zip(seq, seq[1:])), where
                assert seq[-1] / seq[0] >= 2.5, where
                assert all(0.02 <= a <= 0.40 for a in area), where
            elif action == "enter":
                assert not fr[0].actor_present and fr[-1].actor_fully_inside, where
            elif action == "exit":
                assert fr[0].actor_fully_inside and not fr[-1].actor_present, where
            else:
                seq = b if action == "lights_on" else b[::-1]
                assert all(y >= x - 1e-12 for x, y in zip(seq, seq[1:])), where
                assert seq[-1] - seq[0] >= 0.4, where
                # the pixels follow the brightness
                m0, m1 = means[index[id(fr[0])]], means[index[id(fr[-1])]]
                assert (m1 > m0) == (action == "lights_on"), where


def test_rendered_background_jitter(rendered) -> None:
    for plan, truths, _ in rendered:
        fps, w = plan.fps, plan.width
        step = int(round(fps))  # one second
        for i in range(len(truths) - 1):
            a, b = truths[i], truths[i + 1]
            if a.label != BACKGROUND or b.label != BACKGROUND:
                continue
            assert abs(b.brightness - a.brightness) <= 0.05 / fps + 1e-9
            if a.actor_box is not None and b.actor_box is not None:
                ca = ((a.actor_box[0] + a.actor_box[2]) / 2, (a.actor_box[1] + a.actor_box[3]) / 2)
                cb = ((b.actor_box[0] + b.actor_box[2]) / 2, (b.actor_box[1] + b.actor_box[3]) / 2)
                assert math.dist(ca, cb) <= 0.02 * w / fps + 1e-6
            else:
                assert a.actor_box is None and b.actor_box is None
            if i + step < len(truths):
                c = truths[i + step]
                run = truths[i : i + step + 1]
                if all(t.label == BACKGROUND and t.actor_fully_inside for t in run):
                    ratio = c.actor_area_fraction / a.actor_area_fraction
                    assert 1 / 1.07 <= ratio <= 1.07, (plan.video_id, i, ratio)


def test_rendered_mirror_areas_overlap(rendered) -> None:
    areas = defaultdict(list)
    for plan, truths, _ in rendered:
        for action, fr in _instance_truths(plan, truths):
            areas[action].extend(t.actor_area_fraction for t in fr)
    lo = max(min(areas["approach"]), min(areas["recede"]))
    hi = min(max(areas["approach"]), max(areas["recede"]))
    assert hi > lo  # the two classes pass through common sizes


def test_render_is_deterministic() -> None:
    plan = plan_dataset_stream(4, 0, sizes=(320, 240), fps=10, duration_range=(6.0, 6.0))
    again = plan_dataset_stream(4, 0, sizes=(320, 240), fps=10, duration_range=(6.0, 6.0))
    other = plan_dataset_stream(5, 0, sizes=(320, 240), fps=10, duration_range=(6.0, 6.0))
    first = [f for f, _ in render_stream(plan)][:10]
    second = [f for f, _ in render_stream(again)][:10]
    third = [f for f, _ in render_stream(other)][:10]
    assert all(np.array_equal(a, b) for a, b in zip(first, second))
    assert not np.array_equal(first[0], third[0])


# --------------------------------------------------------------- data set


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    base = tmp_path_factory.mktemp("synth")
    opts = dict(sizes=(320, 240), fps=10.0, duration_range=(6.0, 8.0), progress=False)
    write_dataset(base / "a", 2, 21, **opts)
    write_dataset(base / "b", 2, 21, **opts)
    write_dataset(base / "c", 2, 22, **opts)
    write_dataset(base / "d", 3, 21, **opts)
    write_dataset(base / "e", 1, 23, sizes="480x360", fps=29.97, duration_range=(5.0, 5.0), progress=False)
    return base


def _first_frame(path: Path) -> np.ndarray:
    cap = cv2.VideoCapture(str(path))
    ok, frame = cap.read()
    cap.release()
    assert ok
    return frame


def test_dataset_files_decode(datasets: Path) -> None:
    for name in ("a", "e"):
        out = datasets / name
        manifest = json.loads((out / "manifest.json").read_text())
        inst = read_annotations(out / "annotations.txt")
        ids = {v["video_id"] for v in manifest["videos"]}
        assert {i.video_id for i in inst} <= ids
        for v in manifest["videos"]:
            path = out / v["file"]
            assert path.name == f"{v['video_id']}.mp4"
            cap = cv2.VideoCapture(str(path))
            assert cap.isOpened()
            assert cap.get(cv2.CAP_PROP_FPS) == pytest.approx(v["fps"], abs=0.01)
            n = 0
            while True:
                ok, frame = cap.read()
                if not ok:
                    break
                assert frame.shape == (v["height"], v["width"], 3)
                n += 1
            cap.release()
            assert n == v["frames"]
            assert v["duration"] == pytest.approx(n / v["fps"], abs=1e-3)
            mine = [i for i in inst if i.video_id == v["video_id"]]
            assert all(i.end <= v["duration"] for i in mine)


def test_dataset_is_deterministic(datasets: Path) -> None:
    a, b, c, d = (datasets / n for n in "abcd")
    assert (a / "annotations.txt").read_bytes() == (b / "annotations.txt").read_bytes()
    assert (a / "manifest.json").read_bytes() == (b / "manifest.json").read_bytes()
    assert (a / "annotations.txt").read_bytes() != (c / "annotations.txt").read_bytes()
    va, vb, vc = (sorted((x / "videos").glob("*.mp4")) for x in (a, b, c))
    assert [p.name for p in va] == ["sa21_00000.mp4", "sa21_00001.mp4"]
    for pa, pb in zip(va, vb):
        assert np.array_equal(_first_frame(pa), _first_frame(pb))
    assert not np.array_equal(_first_frame(va[0]), _first_frame(vc[0]))
    # video k of a seed does not depend on how many videos the data set has
    lines_a = (a / "annotations.txt").read_text().splitlines()
    lines_d = [x for x in (d / "annotations.txt").read_text().splitlines() if not x.startswith("sa21_00002")]
    assert lines_a == lines_d
    assert np.array_equal(_first_frame(va[1]), _first_frame(d / "videos" / "sa21_00001.mp4"))


def test_write_dataset_refuses_non_empty_dir(tmp_path: Path) -> None:
    (tmp_path / "x.txt").write_text("x")
    with pytest.raises(FileExistsError):
        write_dataset(tmp_path, 1, 0, progress=False, duration_range=(5.0, 5.0))


# -------------------------------------------------------------------- CLI


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tools.make_synthactions", *args], cwd=ROOT, capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--size", "100x100"], "100x100"),
        (["--size", "2000x1200"], "2000x1200"),
        (["--fps", "5"], "--fps 5"),
        (["--fps-range", "8", "20"], "8"),
        (["--count", "0"], "--count 0"),
        (["--duration-range", "9", "3"], "--duration-range 9 3"),
    ],
)
def test_cli_bad_input(tmp_path: Path, args: list[str], needle: str) -> None:
    base = ["--out", str(tmp_path / "o"), "--count", "1"]
    res = _cli(*(base + args))
    assert res.returncode == 2
    assert res.stderr.startswith("error: ") and needle in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr


def test_cli_non_empty_out_dir(tmp_path: Path) -> None:
    (tmp_path / "old.txt").write_text("x")
    res = _cli("--out", str(tmp_path), "--count", "1")
    assert res.returncode == 2 and res.stderr.startswith("error: ") and str(tmp_path) in res.stderr


def test_cli_runs(tmp_path: Path) -> None:
    assert _cli("--help").returncode == 0
    out = tmp_path / "ds"
    res = _cli("--out", str(out), "--count", "1", "--seed", "3", "--duration-range", "5", "5", "--quiet")
    assert res.returncode == 0, res.stderr
    assert "wrote 1 videos" in res.stdout and "approach=" in res.stdout
    assert (out / "videos" / "sa3_00000.mp4").is_file() and (out / "annotations.txt").is_file()
