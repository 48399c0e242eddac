"""SynthActions data sets: many streams into ``videos/*.mp4``, a THUMOS-style ``annotations.txt`` and a
``manifest.json``.

Determinism. Everything random comes from numpy Generators seeded from the
plan's ``seed`` and fixed sub-stream keys; video ``k`` of dataset seed ``S``
uses ``SeedSequence([S, k])`` alone, so it does not depend on ``count``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np

from tools.evaluation.annotations import SYNTH_ACTIONS_CLASSES, ActionInstance, write_annotations
from tools.synthactions.limits import check_fps, check_size
from tools.synthactions.looks import LOOKS
from tools.synthactions.planning import plan_stream
from tools.synthactions.rendering import write_video
from tools.synthactions.scene import StreamPlan

MIXED_SIZES: tuple[tuple[int, int], ...] = (
    (320, 240),
    (480, 360),
    (640, 360),
    (640, 480),
    (960, 540),
    (1280, 720),
    (480, 320),
    (400, 400),
    (720, 304),
)
COMMON_FPS: tuple[float, ...] = (15.0, 25.0, 29.97, 30.0)


def parse_size(text: str) -> tuple[int, int] | None:
    """``"WxH"`` -> (W, H); ``"mixed"`` -> None. Raises ValueError on bad input."""
    if text.strip().lower() == "mixed":
        return None
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise ValueError(f"size {text!r} is not WxH or 'mixed'")
    w, h = int(parts[0]), int(parts[1])
    check_size(w, h)
    return w, h


def resolve_sizes(sizes: object) -> tuple[tuple[int, int], ...]:
    """Sizes to draw from: None/"mixed" -> MIXED_SIZES; "WxH" or (W, H) -> that size;
    a sequence of those -> all of them. Raises ValueError on a bad size."""
    if sizes is None:
        return MIXED_SIZES
    if isinstance(sizes, str):
        wh = parse_size(sizes)
        return MIXED_SIZES if wh is None else (wh,)
    items = list(sizes)  # type: ignore[call-overload]
    if len(items) == 2 and all(isinstance(v, (int, np.integer)) for v in items):
        w, h = int(items[0]), int(items[1])
        check_size(w, h)
        return ((w, h),)
    out: list[tuple[int, int]] = []
    for item in items:
        out.extend(resolve_sizes(item) if item is not None else MIXED_SIZES)
    if not out:
        raise ValueError("no frame size given")
    return tuple(out)


def fps_choices(lo: float, hi: float) -> list[float]:
    """Frame rates drawn for a range: the integers in it and the common rates in it."""
    ints = [float(v) for v in range(int(math.ceil(lo)), int(math.floor(hi)) + 1)]
    common = [f for f in COMMON_FPS if lo <= f <= hi and f not in ints]
    return ints + common or [float(lo)]


def stream_seed(seed: int, index: int) -> int:
    """The seed of video ``index`` of data set ``seed``."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0] & 0x7FFFFFFF)


def plan_dataset_stream(seed: int, index: int, sizes: object = (320, 240), fps: float | None = None,
                        fps_range: tuple[float, float] = (10.0, 30.0),
                        duration_range: tuple[float, float] = (30.0, 60.0), looks: str = "all") -> StreamPlan:
    """Plan video ``index`` of dataset ``seed``; independent of the other videos.
    ``sizes`` as in :func:`resolve_sizes` (one is drawn per video when several)."""
    sseed = stream_seed(seed, index)
    cfg = np.random.default_rng([sseed, 2])
    choices = resolve_sizes(sizes)
    size = choices[int(cfg.integers(len(choices)))] if len(choices) > 1 else choices[0]
    if fps is None:
        choices = fps_choices(*fps_range)
        common = [f for f in choices if f in COMMON_FPS]
        if common and cfg.random() < 0.3:
            fps = common[int(cfg.integers(len(common)))]
        else:
            fps = choices[int(cfg.integers(len(choices)))]
    lo, hi = duration_range
    duration = float(cfg.uniform(lo, hi)) if hi > lo else float(lo)
    return plan_stream(
        np.random.default_rng([sseed, 0]), f"sa{seed}_{index:05d}", size[0], size[1], fps,
        duration=duration, seed=sseed, looks=LOOKS[looks],
    )  # fmt: skip


def _render_entry(args: tuple) -> tuple[dict, list[ActionInstance]]:
    """Render one video of a data set (in a worker process, or here): its manifest entry and its actions."""
    out_dir, seed, index, sizes, fps, fps_range, duration_range, single_thread, looks = args
    if single_thread:
        cv2.setNumThreads(1)
    plan = plan_dataset_stream(seed, index, sizes, fps, fps_range, duration_range, looks)
    path = Path(out_dir) / "videos" / f"{plan.video_id}.mp4"
    n = write_video(plan, path)
    cap = cv2.VideoCapture(str(path))
    written = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    cap.release()
    if written != n:
        raise RuntimeError(f"{path}: wrote {n} frames but the file reports {written}")
    entry = {
        "video_id": plan.video_id,
        "file": f"videos/{plan.video_id}.mp4",
        "index": index,
        "width": plan.width,
        "height": plan.height,
        "size": f"{plan.width}x{plan.height}",
        "fps": plan.fps,
        "frames": plan.n_frames,
        "duration": round(plan.duration, 6),
        "seed": plan.seed,
        "background": plan.background.kind,
        "noise_std": plan.noise_std,
        "actors": [f"{a.shape}/{a.fill}" for a in plan.actors],
        "actions": len(plan.instances()),
    }
    return entry, plan.instances()


def write_dataset(
    out_dir: str | Path,
    count: int,
    seed: int,
    sizes: object = (320, 240),
    fps: float | None = None,
    fps_range: tuple[float, float] = (10.0, 30.0),
    duration_range: tuple[float, float] = (30.0, 60.0),
    progress: bool = True,
    overwrite: bool = False,
    workers: int = 1,
    looks: str = "all",
) -> list[ActionInstance]:
    """Render ``count`` streams into ``out_dir``: ``videos/<id>.mp4``,
    ``annotations.txt`` and ``manifest.json``. ``sizes`` is (W, H), ``"WxH"``,
    ``"mixed"``/None for a random common size per video, or a list of sizes to
    draw from; ``fps`` fixes the frame
    rate, else it is drawn per video from ``fps_range``."""
    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}")
    if looks not in LOOKS:
        raise ValueError(f"looks must be one of {sorted(LOOKS)}, got {looks!r}")
    choices = resolve_sizes(sizes)
    if fps is not None:
        check_fps(fps)
    else:
        lo, hi = fps_range
        if lo > hi:
            raise ValueError(f"fps range {lo:g}..{hi:g} is empty")
        check_fps(lo)
        check_fps(hi)
    lo, hi = duration_range
    if not 4.0 <= lo <= hi:
        raise ValueError(f"duration range {lo:g}..{hi:g} s must satisfy 4 <= low <= high")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"{out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise FileExistsError(f"output directory {out} is not empty (use overwrite)")
        for old in (out / "videos").glob("*.mp4") if (out / "videos").is_dir() else ():
            old.unlink()
        for name in ("annotations.txt", "manifest.json"):
            if (out / name).exists():
                (out / name).unlink()
    (out / "videos").mkdir(parents=True, exist_ok=True)

    jobs = [(str(out), seed, i, choices, fps, tuple(fps_range), tuple(duration_range), workers > 1, looks)
            for i in range(count)]
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=count, unit="video", desc="SynthActions")
    entries: list[dict] = []
    instances: list[ActionInstance] = []
    try:
        if workers > 1:
            from concurrent.futures import ProcessPoolExecutor

            with ProcessPoolExecutor(max_workers=workers) as pool:
                for entry, inst in pool.map(_render_entry, jobs):
                    entries.append(entry)
                    instances.extend(inst)
                    if bar is not None:
                        bar.update(1)
        else:
            for job in jobs:
                entry, inst = _render_entry(job)
                entries.append(entry)
                instances.extend(inst)
                if bar is not None:
                    bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    write_annotations(out / "annotations.txt", instances)
    manifest = {
        "format": "SynthActions v1",
        "generator": "tools.synthactions",
        "seed": seed,
        "count": count,
        "sizes": "mixed" if choices == MIXED_SIZES else [f"{w}x{h}" for w, h in choices],
        "fps": fps,
        "fps_range": None if fps is not None else list(fps_range),
        "duration_range": list(duration_range),
        "looks": looks,
        "classes": list(SYNTH_ACTIONS_CLASSES),
        "videos": entries,
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    return instances
