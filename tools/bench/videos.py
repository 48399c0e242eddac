"""The benchmark's test video: real H.264 (libx264, camera-like bitrates, sensor noise) made from
SynthActions streams with ffmpeg and cached in ``build/bench``.

    720p25     1280x720 at 25 fps, 2 Mbit/s
    1080p30    1920x1080 at 30 fps, 4 Mbit/s
    360p5      640x360 at 5 fps, 512 kbit/s (the substream Frigate users give detection)
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from tools.bench.paths import BENCH_DIR
from tools.synthactions.dataset import write_dataset


@dataclass(frozen=True)
class Kind:
    """A kind of camera stream: its frame size, frame rate and bitrate."""

    name: str
    width: int
    height: int
    fps: int
    bitrate: str


KINDS = {
    "720p25": Kind("720p25", 1280, 720, 25, "2M"),
    "1080p30": Kind("1080p30", 1920, 1080, 30, "4M"),
    "360p5": Kind("360p5", 640, 360, 5, "512k"),
}


def make_videos(kind: Kind, count: int, seconds: float, out: Path = BENCH_DIR) -> list[Path]:
    """``count`` H.264 videos of ``kind`` (cached): SynthActions content, scaled, with temporal noise."""
    folder = out / f"{kind.name}_{int(seconds)}s"
    videos = [folder / f"{kind.name}_{i}.mp4" for i in range(count)]
    if all(v.is_file() for v in videos):
        return videos
    folder.mkdir(parents=True, exist_ok=True)
    render_fps = max(10, kind.fps)  # the renderer makes 10 to 30 fps; ffmpeg thins a 5 fps substream
    source = out / f"source_{render_fps}fps_{int(seconds)}s"
    if not (source / "videos").is_dir() or len(list((source / "videos").glob("*.mp4"))) < count:
        write_dataset(source, count=count, seed=9100, sizes=(640, 360), fps=float(render_fps),
                      duration_range=(seconds, seconds), progress=False, overwrite=True)
    sources = sorted((source / "videos").glob("*.mp4"))
    for src, dst in zip(sources, videos):
        if dst.is_file():
            continue
        subprocess.run(
            ["ffmpeg", "-loglevel", "error", "-y", "-i", str(src), "-vf",
             f"fps={kind.fps},scale={kind.width}:{kind.height},noise=alls=6:allf=t", "-c:v", "libx264",
             "-preset", "veryfast",
             "-g", str(2 * kind.fps), "-b:v", kind.bitrate, "-maxrate", kind.bitrate, "-bufsize", kind.bitrate,
             "-pix_fmt", "yuv420p", str(dst)], check=True,
        )
    return videos
