"""The speed benchmark: every stage alone, a hand-written loop, and the whole pipeline, in one run.

    python -m tools.benchmark                      # everything (about an hour on 2 cores)
    python -m tools.benchmark --parts stages,naive,pipeline   # without the real-time capacity search
    python -m tools.benchmark --quick              # short videos and trials: for trying a change

Test video is real H.264 (libx264, camera-like bitrates, sensor noise) made
from SynthActions streams with ffmpeg and cached in ``build/bench``:

    720p25     1280x720 at 25 fps, 2 Mbit/s
    1080p30    1920x1080 at 30 fps, 4 Mbit/s
    360p5      640x360 at 5 fps, 512 kbit/s (the substream Frigate users give detection)

Measured, on the demo model at its 4 steps/s:

* decode alone: decode every frame, convert and resize the sampled ones
  (what capture does), one decoder thread, one stream at a time;
* the engine alone at batch 1, 2, 4, 8, 16 (its best batch is used below);
* one batched GRU step for 1 to 256 streams;
* ``ideal`` = cores / (decode CPU-s per step + engine CPU-s per step);
* the naive loop: read, sample, resize, embed at batch 1, GRU step, four
  streams round-robin in one Python loop (what people write by hand);
* the pipeline replaying N = 1, 2, 4, 8 streams as fast as possible
  (``run_pipeline.py --fast``): steps/s between its first and last step,
  ``pipeline/ideal``, ``pipeline/naive``, start-up (launch to first step)
  and shutdown (last step to exit);
* real-time capacity: the most live-paced streams of each kind held for
  ``--capacity-seconds`` with p99 end-to-end latency <= 250 ms and no frame
  dropped or late (only sampling), with p50/p99 per stage;
* memory: private memory (USS) of all pipeline processes with 1 and with 32
  live 720p streams, per added stream.

Throughput figures are the median of ``--repeats`` rounds (3; each round
measures decode, the naive loop and every pipeline size once, so drift hits
them alike); every run's figure is recorded beside the median.

Prints a table, writes ``build/bench/benchmark.json``, and appends the run to
``docs/benchmarks.md`` with the machine and the command. Ratios compare
figures measured in the same run on the same machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import yaml

from engines.factory import DEFAULT_ONNX_PATH, REPO_ROOT
from tools.cli import run

BENCH_DIR = REPO_ROOT / "build" / "bench"
DOC = REPO_ROOT / "docs" / "benchmarks.md"
MODEL = REPO_ROOT / "models" / "synthactions_gru.safetensors"
PARTS = ("stages", "naive", "pipeline", "profile", "capacity", "memory", "gpu")
LATENCY_BOUND_S = 0.25


@dataclass(frozen=True)
class Kind:
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


# -- media ---------------------------------------------------------------------------------------
def make_videos(kind: Kind, count: int, seconds: float, out: Path = BENCH_DIR) -> list[Path]:
    """``count`` H.264 videos of ``kind`` (cached): SynthActions content, scaled, with temporal noise."""
    from tools.synthactions.dataset import write_dataset

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


# -- the stages alone ------------------------------------------------------------------------------
def decode_alone(videos: list[Path], step_rate: float, size: int = 224) -> dict:
    """Capture's work without the sending: decode all, convert and resize the sampled frames."""
    import cv2

    from pipeline.sources.sampling import StepSampler
    from pipeline.sources.decoding import prepare_frame

    frames = steps = 0
    wall0, cpu0 = time.perf_counter(), time.process_time()
    for video in videos:
        capture = cv2.VideoCapture(str(video), cv2.CAP_FFMPEG, [cv2.CAP_PROP_N_THREADS, 1])
        sampler = StepSampler(step_rate)
        while capture.grab():
            frames += 1
            t = capture.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
            if sampler.accept(t):
                ok, image = capture.retrieve()
                if ok:
                    prepare_frame(image, size, size)
                    steps += 1
        capture.release()
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    return {"frames": frames, "steps": steps, "frames_per_s": frames / wall, "steps_per_s": steps / wall,
            "cpu_s_per_step": cpu / steps}


def sample_frames(video: Path, count: int = 64, size: int = 224) -> np.ndarray:
    import cv2

    from pipeline.sources.decoding import prepare_frame

    capture = cv2.VideoCapture(str(video))
    frames = []
    while len(frames) < count:
        ok, image = capture.read()
        if not ok:
            break
        frames.append(prepare_frame(image, size, size))
    capture.release()
    return np.stack(frames)


def engine_alone(frames: np.ndarray, seconds: float) -> list[dict]:
    """Frames/s and CPU-s per frame at each batch size, for the ONNX Runtime settings worth comparing."""
    from engines.onnxruntime_engine import OnnxRuntimeEngine

    rows = []
    for threads, spinning in ((0, True), (0, False), (1, False)):
        engine = OnnxRuntimeEngine(DEFAULT_ONNX_PATH, intra_op_threads=threads, allow_spinning=spinning)
        for batch in (1, 2, 4, 8, 16):
            engine.embed(frames[:batch])  # warm-up: the arena grows to this batch once
            done = 0
            wall0, cpu0 = time.perf_counter(), time.process_time()
            while time.perf_counter() - wall0 < seconds:
                start = done % (len(frames) - batch + 1)
                engine.embed(frames[start:start + batch])
                done += batch
            wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
            rows.append({"threads": threads or "default", "spinning": spinning, "batch": batch,
                         "frames_per_s": done / wall, "cpu_s_per_frame": cpu / done})
        engine.close()
    return rows


def gru_alone(seconds: float, device: str = "cpu", counts: tuple[int, ...] = (1, 4, 16, 64, 256)) -> list[dict]:
    """One batched GRU step (state table gather, step, scatter, scores back on the host) for N streams."""
    from engines.temporal_head import load_head
    from pipeline.stages.temporal.state_table import StepInput, StreamStateTable

    head, _ = load_head(MODEL, device=device)
    rng = np.random.default_rng(0)
    rows = []
    for streams in counts:
        table = StreamStateTable(head, streams, 3600.0, device=device)
        inputs = [StepInput(f"s{i}", 0, 0.0, rng.normal(size=1280).astype(np.float32),
                            rng.uniform(size=head.config.backbone.stats_dim).astype(np.float32)) for i in range(streams)]
        table.step(inputs, 0.0)
        steps = 0
        start = time.perf_counter()
        while time.perf_counter() - start < seconds:
            table.step(inputs, 0.0)
            steps += 1
        elapsed = time.perf_counter() - start
        rows.append({"streams": streams, "ms_per_step": 1000 * elapsed / steps, "stream_steps_per_s": streams * steps / elapsed})
    return rows


def naive_loop(videos: list[Path], step_rate: float) -> dict:
    """What a hand-written OpenCV loop does: every stream in turn, one frame at a time, batch 1."""
    import cv2
    import torch

    from engines.onnxruntime_engine import OnnxRuntimeEngine
    from engines.temporal_head import load_head
    from pipeline.sources.sampling import StepSampler
    from pipeline.sources.decoding import prepare_frame

    engine = OnnxRuntimeEngine(DEFAULT_ONNX_PATH)
    head, _ = load_head(MODEL)
    captures = [cv2.VideoCapture(str(v)) for v in videos]
    samplers = [StepSampler(step_rate) for _ in videos]
    states = [head.initial_state(1) for _ in videos]
    steps = 0
    start = time.perf_counter()
    live = list(range(len(videos)))
    with torch.inference_mode():
        while live:
            for i in list(live):
                ok, image = captures[i].read()
                if not ok:
                    live.remove(i)
                    continue
                if not samplers[i].accept(captures[i].get(cv2.CAP_PROP_POS_MSEC) / 1000.0):
                    continue
                out = engine.embed(prepare_frame(image, 224, 224)[None])
                _, states[i] = head.step(torch.from_numpy(out.embedding), torch.from_numpy(out.stats), states[i])
                steps += 1
    elapsed = time.perf_counter() - start
    return {"steps": steps, "steps_per_s": steps / elapsed}


# -- the pipeline ----------------------------------------------------------------------------------
def median_of(runs: list[dict], key: str = "steps_per_s") -> dict:
    """The run with the median ``key`` (a real run, not an average), with every run's value beside it:
    2 shared cores vary by up to 10% between identical runs."""
    ordered = sorted(runs, key=lambda r: r[key])
    return {**ordered[(len(ordered) - 1) // 2], "runs": [round(r[key], 2) for r in runs]}


def _write_config(path: Path, sources: list[dict], **sections) -> Path:
    config = {"model": str(MODEL), "sources": sources, "outputs": {"stdout": False},
              "metrics": {"enabled": False}, "control": {"enabled": False}, "logging": {"level": "warning"}}
    config.update(sections)
    path.write_text(yaml.safe_dump(config))
    return path


def pipeline_replay(videos: list[Path], streams: int, workdir: Path) -> dict:
    """``run_pipeline.py --fast`` on ``streams`` streams, timed from launch to exit."""
    sources = [{"uri": str(videos[i % len(videos)]), "name": f"s{i}"} for i in range(streams)]
    config = _write_config(workdir / f"replay_{streams}.yaml", sources, replay={"realtime": False})
    summary_path = workdir / f"replay_{streams}.json"
    launched = time.time()
    proc = subprocess.run([sys.executable, "run_pipeline.py", "--config", str(config), "--summary-json",
                           str(summary_path)], cwd=REPO_ROOT, capture_output=True, text=True)
    exited = time.time()
    if proc.returncode != 0:
        raise RuntimeError(f"pipeline failed ({proc.returncode}): {proc.stderr[-2000:]}")
    rows = json.loads(summary_path.read_text())["streams"].values()
    first = min(r["first_step_wall"] for r in rows)
    last = max(r["last_step_wall"] for r in rows)
    steps = sum(r["processed"] for r in rows)
    return {"streams": streams, "steps": steps, "steps_per_s": steps / (last - first),
            "startup_s": first - launched, "shutdown_s": exited - last, "wall_s": exited - launched}


def profile_pipeline(videos: list[Path], streams: int, workdir: Path) -> dict:
    """Where the CPU goes: each process's CPU seconds per step between the first and the last step
    of a ``--fast`` replay of ``streams`` streams (start-up excluded)."""
    from tools.soak import free_port

    port = free_port()
    sources = [{"uri": str(videos[i % len(videos)]), "name": f"s{i}"} for i in range(streams)]
    config = _write_config(workdir / f"profile_{streams}.yaml", sources, replay={"realtime": False},
                           control={"port": port})
    summary_path = workdir / f"profile_{streams}.json"
    proc = subprocess.Popen([sys.executable, "run_pipeline.py", "--config", str(config), "--summary-json",
                             str(summary_path)], cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    tick = os.sysconf("SC_CLK_TCK")
    pids: dict[str, int] = {}
    cpu: dict[str, float] = {}
    at_first: tuple[dict[str, float], int] | None = None
    while proc.poll() is None:
        try:
            api = f"http://127.0.0.1:{port}"
            for stage in json.loads(urllib.request.urlopen(f"{api}/stages", timeout=2).read())["stages"]:
                if stage["pid"]:
                    pids[stage["name"]] = stage["pid"]
            if at_first is None:
                rows = json.loads(urllib.request.urlopen(f"{api}/streams", timeout=2).read())["streams"]
                if any(r["processed"] for r in rows):
                    at_first = (dict(cpu), sum(r["processed"] for r in rows))
        except OSError:
            pass
        for name, pid in [*pids.items(), ("supervisor", proc.pid)]:
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                cpu[name] = (int(fields[11]) + int(fields[12])) / tick
            except OSError:
                pass
        time.sleep(0.1)
    rows = json.loads(summary_path.read_text())["streams"].values()
    steps = sum(r["processed"] for r in rows)
    base, base_steps = at_first or ({}, 0)
    counted = max(1, steps - base_steps)
    first = min(r["first_step_wall"] for r in rows)
    last = max(r["last_step_wall"] for r in rows)
    per_step = {name: 1000 * (value - base.get(name, 0.0)) / counted for name, value in sorted(cpu.items())}
    return {"streams": streams, "steps_per_s": steps / (last - first), "cpu_ms_per_step": per_step,
            "cores_busy": sum(value - base.get(name, 0.0) for name, value in cpu.items()) / (last - first)}


def _scrape(url: str) -> dict:
    from prometheus_client.parser import text_string_to_metric_families

    text = urllib.request.urlopen(url, timeout=10).read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def _quantile(samples: dict, metric: str, label: str, value: str, q: float) -> float | None:
    buckets = sorted((float(dict(labels)["le"]), v) for (name, labels), v in samples.items()
                     if name == f"{metric}_bucket" and dict(labels).get(label) == value)
    if not buckets or buckets[-1][1] == 0:
        return None
    rank = q * buckets[-1][1]
    previous_bound, previous_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if bound == float("inf"):
                return previous_bound
            return previous_bound + (bound - previous_bound) * ((rank - previous_count) / max(count - previous_count, 1e-9))
        previous_bound, previous_count = bound, count
    return None


def live_trial(videos: list[Path], streams: int, seconds: float, workdir: Path,
               bound_s: float = LATENCY_BOUND_S, sections: dict | None = None) -> dict:
    """``streams`` live-paced streams for ``seconds``: held when nothing but sampling dropped and p99 <= ``bound_s``.
    ``sections``: more configuration (engine, capture, temporal) for the run."""
    from tools.soak import free_port

    port = free_port()
    sources = [{"uri": str(videos[i % len(videos)]), "name": f"s{i}", "mode": "live"} for i in range(streams)]
    config = _write_config(workdir / f"live_{streams}.yaml", sources, replay={"loop": True},
                           metrics={"port": port}, **(sections or {}))
    summary_path = workdir / f"live_{streams}.json"
    proc = subprocess.Popen([sys.executable, "run_pipeline.py", "--config", str(config), "--summary-json",
                             str(summary_path)], cwd=REPO_ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        time.sleep(seconds)
        samples = _scrape(f"http://127.0.0.1:{port}/metrics")
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    rows = json.loads(summary_path.read_text())["streams"]
    dropped = {}
    for row in rows.values():
        for reason, count in row["dropped"].items():
            if reason != "sampling":
                dropped[reason] = dropped.get(reason, 0) + count
    p99 = max((r["latency_p99_s"] or 0.0) for r in rows.values())
    stages = {stage: {"p50_ms": _ms(_quantile(samples, "actionpipe_stage_latency_seconds", "stage", stage, 0.5)),
                      "p99_ms": _ms(_quantile(samples, "actionpipe_stage_latency_seconds", "stage", stage, 0.99))}
              for stage in ("capture", "embed_queue", "embed", "temporal")}
    return {"streams": streams, "held": not dropped and p99 <= bound_s, "dropped": dropped,
            "e2e_p50_ms": round(1000 * float(np.median([r["latency_p50_s"] or 0 for r in rows.values()])), 1),
            "e2e_p99_ms": round(1000 * p99, 1), "stages": stages}


def _ms(value: float | None) -> float | None:
    return None if value is None else round(1000 * value, 1)


def capacity(videos: list[Path], seconds: float, workdir: Path, start: int, limit: int = 64,
             bound_s: float = LATENCY_BOUND_S, sections: dict | None = None) -> dict:
    """The largest N that holds: double from ``start`` until a trial fails, then bisect."""
    trials: dict[int, dict] = {}

    def held(n: int) -> bool:
        if n not in trials:
            trials[n] = live_trial(videos, n, seconds, workdir, bound_s, sections)
            print(f"    {n} streams: {'held' if trials[n]['held'] else 'not held'} "
                  f"(p99 {trials[n]['e2e_p99_ms']} ms, dropped {trials[n]['dropped'] or 'nothing'})", flush=True)
        return trials[n]["held"]

    low, high = 0, None
    n = max(1, start)
    while high is None and n <= limit:
        if held(n):
            low, n = n, n * 2
        else:
            high = n
    high = high or limit + 1
    while high - low > 1:
        middle = (low + high) // 2
        if held(middle):
            low = middle
        else:
            high = middle
    return {"streams": low, "trials": [trials[k] for k in sorted(trials)], "best": trials.get(low)}


def gpu_rows(videos_1080: list[Path], workdir: Path, capacity_seconds: float, peak_tflops: float | None,
             step_rate: float) -> dict:
    """The GPU figures: engine frames/s at batch 1, 8, 32, 128 (FP16; against the peak when given), one GRU
    step for 1..1024 streams, NVDEC decode, and the 1080p30 streams held with p99 under 100 ms."""
    import torch

    if not torch.cuda.is_available():
        return {"not_measured": "no CUDA device on this machine"}
    from engines.factory import choose_engine
    from tools.benchmark_engines import flops_per_frame

    out: dict = {"gpu": torch.cuda.get_device_name(0), "gflop_per_frame": flops_per_frame() / 1e9}
    choice = choose_engine(precision="fp16", max_batch_size=128)
    engine = choice.engine
    frames = sample_frames(videos_1080[0])
    frames = np.concatenate([frames] * -(-128 // len(frames)))[:128]
    out["engine"] = {"backend": engine.name, "rows": []}
    try:
        for batch in (1, 8, 32, 128):
            engine.embed(frames[:batch])
            done, start = 0, time.perf_counter()
            while time.perf_counter() - start < 5.0:
                engine.embed(frames[:batch])
                done += batch
            fps = done / (time.perf_counter() - start)
            tflops = fps * out["gflop_per_frame"] / 1e3
            out["engine"]["rows"].append({"batch": batch, "frames_per_s": fps, "tflops": tflops,
                                          "of_peak": tflops / peak_tflops if peak_tflops else None})
    finally:
        engine.close()
    out["gru"] = gru_alone(3.0, "cuda", (1, 4, 16, 64, 256, 1024))
    out["nvdec"] = nvdec_decode_alone(videos_1080, step_rate)
    sections = {"engine": {"backend": "auto", "precision": "fp16"}, "capture": {"decoder": "nvdec"},
                "temporal": {"device": "cuda"}}
    out["capacity_1080p30"] = capacity(videos_1080, capacity_seconds, workdir, start=8, limit=256, bound_s=0.1,
                                       sections=sections)
    return out


def nvdec_decode_alone(videos: list[Path], step_rate: float) -> dict:
    from pipeline.sources.nvdec import NvdecReader
    from pipeline.sources.sampling import StepSampler

    frames = steps = 0
    start = time.perf_counter()
    for video in videos:
        reader, sampler = NvdecReader(str(video), False, 224, 224), StepSampler(step_rate)
        try:
            while (frame := reader.read(sampler.accept)) is not None:
                frames += 1
                steps += frame.image is not None
        finally:
            reader.close()
    elapsed = time.perf_counter() - start
    return {"frames_per_s": frames / elapsed, "steps_per_s": steps / elapsed}


def memory_per_stream(videos: list[Path], workdir: Path, counts: tuple[int, int] = (1, 32),
                      seconds: float = 25.0) -> dict:
    from tools.soak import free_port

    totals = {}
    for streams in counts:
        control = free_port()
        sources = [{"uri": str(videos[i % len(videos)]), "name": f"s{i}", "mode": "live"} for i in range(streams)]
        config = _write_config(workdir / f"memory_{streams}.yaml", sources, replay={"loop": True},
                               control={"port": control})
        proc = subprocess.Popen([sys.executable, "run_pipeline.py", "--config", str(config)], cwd=REPO_ROOT,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            time.sleep(seconds)
            stages = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{control}/stages", timeout=10).read())
            pids = [proc.pid] + [s["pid"] for s in stages["stages"] if s["pid"]]
            totals[streams] = sum(_uss_mb(pid) for pid in pids)
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
    low, high = counts
    return {"uss_mb": totals, "per_added_stream_mb": (totals[high] - totals[low]) / (high - low)}


def _uss_mb(pid: int) -> float:
    text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    private = sum(int(m) for m in re.findall(r"^Private_(?:Clean|Dirty):\s+(\d+) kB", text, re.M))
    return private / 1024


# -- report ----------------------------------------------------------------------------------------
def machine() -> dict:
    cpu = "unknown"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    memory_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3
    import cv2
    import onnxruntime
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    commit = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=REPO_ROOT, capture_output=True,
                            text=True).stdout.strip() or "unknown"
    return {"cpu": cpu, "cores": len(os.sched_getaffinity(0)), "memory_gb": round(memory_gb, 1),
            "python": platform.python_version(), "opencv": cv2.__version__, "onnxruntime": onnxruntime.__version__,
            "gpu": gpu, "commit": commit}


def markdown(result: dict) -> str:
    m = result["machine"]
    lines = [f"## {result['date']}: `{result['command']}`", "",
             f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gb']} GB, GPU: {m['gpu']}; Python {m['python']}, "
             f"OpenCV {m['opencv']}, ONNX Runtime {m['onnxruntime']}; commit {m.get('commit', 'unknown')}.", ""]
    for kind, r in result["kinds"].items():
        lines += [f"### {kind}", ""]
        if "decode" in r:
            d, best = r["decode"], r["engine_best"]
            lines += [
                "| what | steps/s | CPU ms per step |", "|---|---|---|",
                f"| decode alone (one decoder thread; {d['frames_per_s']:.0f} frames/s) | {d['steps_per_s']:.1f} | "
                f"{1000 * d['cpu_s_per_step']:.2f} |",
                f"| engine alone, best (batch {best['batch']}, threads {best['threads']}, spinning "
                f"{'on' if best['spinning'] else 'off'}) | {best['frames_per_s']:.1f} | {1000 * best['cpu_s_per_frame']:.2f} |",
                f"| ideal: {m['cores']} cores / (decode + engine CPU per step) | {r['ideal_steps_per_s']:.1f} | |",
            ]
            if "naive" in r:
                runs = ", ".join(f"{v:.1f}" for v in r["naive"].get("runs", []))
                lines.append(f"| naive loop (read, sample, resize, embed at batch 1, GRU step; runs {runs}) | "
                             f"{r['naive']['steps_per_s']:.1f} | |")
            lines.append("")
        if "pipeline" in r:
            lines += ["| pipeline, streams replayed `--fast` | steps/s (median) | every run | pipeline/ideal | pipeline/naive "
                      "| start-up s | shutdown s |",
                      "|---|---|---|---|---|---|---|"]
            for p in r["pipeline"]:
                naive = f"{p['vs_naive']:.2f}" if p.get("vs_naive") else "-"
                every = ", ".join(f"{v:.1f}" for v in p.get("runs", [p["steps_per_s"]]))
                lines.append(f"| {p['streams']} | {p['steps_per_s']:.1f} | {every} | {p['vs_ideal']:.2f} | {naive} | "
                             f"{p['startup_s']:.2f} | {p['shutdown_s']:.2f} |")
            lines.append("")
        if "profile" in r:
            prof = r["profile"]
            engine_ms = 1000 * r["engine_best"]["cpu_s_per_frame"] if "engine_best" in r else None
            decode_ms = 1000 * r["decode"]["cpu_s_per_step"] if "decode" in r else None
            lines += [f"Where the CPU goes, {prof['streams']} streams replayed `--fast` ({prof['steps_per_s']:.1f} steps/s, "
                      f"{prof['cores_busy']:.2f} cores busy; first to last step, start-up excluded):", "",
                      "| process | CPU ms per step | the same work alone |", "|---|---|---|"]
            alone = {"capture:0": decode_ms, "embed:0": engine_ms}
            for name, value in prof["cpu_ms_per_step"].items():
                reference = alone.get(name)
                lines.append(f"| {name} | {value:.2f} | {f'{reference:.2f}' if reference else '-'} |")
            lines.append(f"| total | {sum(prof['cpu_ms_per_step'].values()):.2f} | "
                         f"{(decode_ms or 0) + (engine_ms or 0):.2f} (decode + engine) |")
            lines.append("")
        if "capacity" in r:
            c = r["capacity"]
            best = c["best"]
            ideal_streams = r.get("ideal_steps_per_s", 0) / result["step_rate"] if r.get("ideal_steps_per_s") else None
            ratio = f" = {c['streams'] / ideal_streams:.2f} of the ideal {ideal_streams:.1f}" if ideal_streams else ""
            lines += [f"Real-time capacity: **{c['streams']} streams**{ratio} held for {result['capacity_seconds']:.0f} s "
                      f"(p99 <= {LATENCY_BOUND_S * 1000:.0f} ms, nothing dropped but sampling)."]
            if best:
                stages = ", ".join(f"{k} {v['p50_ms']}/{v['p99_ms']}" for k, v in best["stages"].items())
                lines += [f"At {best['streams']} streams: end-to-end p50 {best['e2e_p50_ms']} ms, p99 "
                          f"{best['e2e_p99_ms']} ms; per stage p50/p99 ms: {stages}."]
            lines += ["Trials: " + "; ".join(f"{t['streams']} {'held' if t['held'] else 'not held'} "
                                            f"(p99 {t['e2e_p99_ms']} ms{', dropped ' + str(t['dropped']) if t['dropped'] else ''})"
                                            for t in c["trials"]), ""]
    if "gru" in result:
        lines += ["GRU step alone (CPU): " + "; ".join(f"{g['streams']} streams {g['ms_per_step']:.2f} ms "
                                                     f"({g['stream_steps_per_s']:.0f} stream-steps/s)" for g in result["gru"]), ""]
    if "memory" in result:
        mem = result["memory"]
        lines += [f"Memory (USS of all pipeline processes, live 720p25): " + ", ".join(
            f"{k} streams {v:.0f} MB" for k, v in mem["uss_mb"].items())
            + f"; **{mem['per_added_stream_mb']:.1f} MB per added stream**.", ""]
    gpu = result.get("gpu") or {"not_measured": "the gpu part was not run"}
    if "not_measured" in gpu:
        lines += ["GPU rows (engine at batch 1/8/32/128 against FP16 peak, GRU for 1..1024 streams, NVDEC, 1080p30 "
                  f"streams at p99 < 100 ms): not measured ({gpu['not_measured']}).", ""]
    else:
        lines += [f"### GPU: {gpu['gpu']}", "",
                  f"Engine `{gpu['engine']['backend']}`, {gpu['gflop_per_frame']:.2f} GFLOP per frame:", "",
                  "| batch | frames/s | TFLOP/s | of FP16 peak |", "|---|---|---|---|"]
        for row in gpu["engine"]["rows"]:
            peak = f"{row['of_peak']:.3f}" if row["of_peak"] else "peak not given (--gpu-peak-tflops)"
            lines.append(f"| {row['batch']} | {row['frames_per_s']:.0f} | {row['tflops']:.2f} | {peak} |")
        c = gpu["capacity_1080p30"]
        lines += ["", "GRU step on the GPU: " + "; ".join(f"{g['streams']} streams {g['ms_per_step']:.2f} ms"
                                                          for g in gpu["gru"]),
                  f"NVDEC decode (1080p30): {gpu['nvdec']['frames_per_s']:.0f} frames/s.",
                  f"1080p30 streams held with p99 <= 100 ms (NVDEC, FP16 engine, GRU on the GPU): **{c['streams']}**.", ""]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.benchmark", description=__doc__.split("\n\n")[0])
    p.add_argument("--kinds", default="720p25,1080p30,360p5", help="comma-separated: " + ", ".join(KINDS))
    p.add_argument("--parts", default=",".join(PARTS), help="comma-separated: " + ", ".join(PARTS))
    p.add_argument("--videos", type=int, default=4, help="videos per kind")
    p.add_argument("--seconds", type=float, default=60.0, help="length of each test video")
    p.add_argument("--capacity-seconds", type=float, default=120.0, help="how long each real-time trial runs")
    p.add_argument("--repeats", type=int, default=3, help="runs of each throughput measurement; the median is reported")
    p.add_argument("--quick", action="store_true", help="20 s videos, 30 s trials, one run of each")
    p.add_argument("--gpu-peak-tflops", type=float, help="the GPU's dense FP16 peak, for the engine's share of it")
    p.add_argument("--no-doc", action="store_true", help="do not append to docs/benchmarks.md")
    args = p.parse_args(argv)
    if args.quick:
        args.seconds, args.capacity_seconds, args.repeats = 20.0, 30.0, 1
    kinds = [KINDS[k] for k in args.kinds.split(",")]
    parts = set(args.parts.split(","))
    from engines.head_config import read_head_config

    step_rate = read_head_config(MODEL).step_rate_hz
    workdir = BENCH_DIR / "runs"
    workdir.mkdir(parents=True, exist_ok=True)
    command = "python -m tools.benchmark" + ("" if argv is None else " " + " ".join(argv))
    result: dict = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "command": command,
                    "machine": machine(), "step_rate": step_rate, "capacity_seconds": args.capacity_seconds, "kinds": {}}
    engine_seconds = 2.0 if args.quick else 5.0
    for kind in kinds:
        print(f"== {kind.name}", flush=True)
        videos = make_videos(kind, args.videos, args.seconds)
        r: dict = result["kinds"].setdefault(kind.name, {})
        if parts & {"stages", "pipeline", "capacity"}:
            if "engine" not in result:
                result["engine"] = engine_alone(sample_frames(videos[0]), engine_seconds)
            r["engine_best"] = min(result["engine"], key=lambda e: e["cpu_s_per_frame"])
        # Each round measures everything once, so slow drift in the machine's speed hits all alike.
        rounds: dict[str, list[dict]] = {}
        for round_index in range(args.repeats):
            if parts & {"stages", "pipeline", "capacity"}:
                rounds.setdefault("decode", []).append(decode_alone(videos, step_rate))
            if "naive" in parts:
                rounds.setdefault("naive", []).append(naive_loop(videos, step_rate))
            if "pipeline" in parts:
                for n in (1, 2, 4, 8):
                    rounds.setdefault(f"pipeline{n}", []).append(pipeline_replay(videos, n, workdir))
            print(f"  round {round_index + 1}/{args.repeats}: " + ", ".join(
                f"{name} {runs[-1]['steps_per_s']:.1f}" for name, runs in rounds.items()), flush=True)
        if "decode" in rounds:
            r["decode"] = median_of(rounds["decode"])
            cores = result["machine"]["cores"]
            r["ideal_steps_per_s"] = cores / (r["decode"]["cpu_s_per_step"] + r["engine_best"]["cpu_s_per_frame"])
            print(f"  decode alone {r['decode']['steps_per_s']:.1f} steps/s; ideal {r['ideal_steps_per_s']:.1f} steps/s",
                  flush=True)
        if "naive" in rounds:
            r["naive"] = median_of(rounds["naive"])
            print(f"  naive loop: {r['naive']['steps_per_s']:.1f} steps/s", flush=True)
        if "pipeline" in parts:
            r["pipeline"] = []
            for n in (1, 2, 4, 8):
                row = median_of(rounds[f"pipeline{n}"])
                row["vs_ideal"] = row["steps_per_s"] / r["ideal_steps_per_s"]
                if "naive" in r:
                    row["vs_naive"] = row["steps_per_s"] / r["naive"]["steps_per_s"]
                r["pipeline"].append(row)
                print(f"  pipeline x{n}: {row['steps_per_s']:.1f} steps/s ({row['vs_ideal']:.2f} of ideal; runs "
                      f"{row['runs']}), start-up {row['startup_s']:.2f} s, shutdown {row['shutdown_s']:.2f} s", flush=True)
        if "profile" in parts:
            r["profile"] = profile_pipeline(videos, 4, workdir)
            print("  profile (CPU ms per step): " + ", ".join(f"{k} {v:.1f}" for k, v in r["profile"]["cpu_ms_per_step"].items()),
                  flush=True)
        if "capacity" in parts:
            print("  real-time capacity:", flush=True)
            ideal_streams = r["ideal_steps_per_s"] / step_rate
            r["capacity"] = capacity(videos, args.capacity_seconds, workdir, start=max(1, int(ideal_streams * 0.5)))
    if "stages" in parts:
        result["gru"] = gru_alone(1.0 if args.quick else 3.0)
    if "gpu" in parts:
        result["gpu"] = gpu_rows(make_videos(KINDS["1080p30"], args.videos, args.seconds), workdir,
                                 args.capacity_seconds, args.gpu_peak_tflops, step_rate)
    if "memory" in parts:
        result["memory"] = memory_per_stream(make_videos(KINDS["720p25"], args.videos, args.seconds), workdir)
        print(f"  memory per added stream: {result['memory']['per_added_stream_mb']:.1f} MB", flush=True)
    (BENCH_DIR / "benchmark.json").write_text(json.dumps(result, indent=1))
    report = markdown(result)
    print("\n" + report)
    if not args.no_doc:
        DOC.parent.mkdir(parents=True, exist_ok=True)
        if not DOC.is_file():
            DOC.write_text("# Benchmarks\n\nEach run of `python -m tools.benchmark` appends a section; newest last.\n"
                           "Ratios compare figures measured in the same run on the same machine.\n\n")
        with DOC.open("a") as doc:
            doc.write(report + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
