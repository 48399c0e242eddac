"""The benchmark's report: the machine it ran on, the results as Markdown, and their place in
``docs/benchmarks.md`` (each run appends a section; newest last)."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

from engines.factory import REPO_ROOT
from tools.bench.capacity import LATENCY_BOUND_S
from tools.bench.paths import DOC


def machine() -> dict:
    """The CPU, cores, memory, GPU, library versions and commit the figures were measured with."""
    cpu = "unknown"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass  # no /proc/cpuinfo, or no model name in it: the CPU stays "unknown"
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
    """A run's results (what :func:`tools.bench.suite.run_benchmark` returns) as a Markdown section."""
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
            if "engine_rounds" in r:
                e = r["engine_rounds"]
                runs = ", ".join(f"{v:.2f}" for v in e["runs"])
                lines += [f"| engine alone, the same setting timed in each round (median; CPU ms {runs}) | "
                          f"{e['frames_per_s']:.1f} | {1000 * e['cpu_s_per_frame']:.2f} |",
                          f"| ideal with that median | {r['ideal_rounds_steps_per_s']:.1f} | |"]
            if "naive" in r:
                runs = ", ".join(f"{v:.1f}" for v in r["naive"].get("runs", []))
                lines.append(f"| naive loop (read, sample, resize, embed at batch 1, GRU step; runs {runs}) | "
                             f"{r['naive']['steps_per_s']:.1f} | |")
            lines.append("")
        if "pipeline" in r:
            lines += ["| pipeline, streams replayed `--fast` | steps/s (median) | every run | pipeline/ideal "
                      "| pipeline/ideal, engine's median | pipeline/naive | start-up s | shutdown s |",
                      "|---|---|---|---|---|---|---|---|"]
            for p in r["pipeline"]:
                naive = f"{p['vs_naive']:.2f}" if p.get("vs_naive") else "-"
                rounds = f"{p['vs_ideal_rounds']:.2f}" if p.get("vs_ideal_rounds") else "-"
                every = ", ".join(f"{v:.1f}" for v in p.get("runs", [p["steps_per_s"]]))
                lines.append(f"| {p['streams']} | {p['steps_per_s']:.1f} | {every} | {p['vs_ideal']:.2f} | {rounds} | "
                             f"{naive} | {p['startup_s']:.2f} | {p['shutdown_s']:.2f} |")
            lines.append("")
        if "profile" in r:
            prof = r["profile"]
            engine_ms = 1000 * r["engine_best"]["cpu_s_per_frame"] if "engine_best" in r else None
            decode_ms = 1000 * r["decode"]["cpu_s_per_step"] if "decode" in r else None
            lines += [f"Where the CPU goes, {prof['streams']} streams replayed `--fast` ({prof['steps_per_s']:.1f} steps/s, "
                      f"{prof['cores_busy']:.2f} cores busy; first to last step, start-up excluded):", "",
                      "| process | CPU ms per step | the same work alone |", "|---|---|---|"]
            per_process = prof["cpu_ms_per_step"]
            embed_workers = [name for name in per_process if name.startswith("embed:")]
            alone = {"capture:0": decode_ms, "embed:0": engine_ms if len(embed_workers) == 1 else None}
            for name, value in per_process.items():
                reference = alone.get(name)
                lines.append(f"| {name} | {value:.2f} | {f'{reference:.2f}' if reference else '-'} |")
            if len(embed_workers) > 1:
                lines.append(f"| embed, its {len(embed_workers)} workers | "
                             f"{sum(per_process[n] for n in embed_workers):.2f} | {engine_ms or 0:.2f} |")
            lines.append(f"| total | {sum(prof['cpu_ms_per_step'].values()):.2f} | "
                         f"{(decode_ms or 0) + (engine_ms or 0):.2f} (decode + engine) |")
            lines.append("")
        for key in ("capacity", "capacity_aligned"):
            if key in r:
                lines += _capacity_lines(r[key], r, result)
    if "gru" in result:
        lines += ["GRU step alone (CPU): " + "; ".join(f"{g['streams']} streams {g['ms_per_step']:.2f} ms "
                                                     f"({g['stream_steps_per_s']:.0f} stream-steps/s)" for g in result["gru"]), ""]
    if "temporal" in result:
        lines += [f"Temporal worker alone, {result['temporal'][0]['streams']} live streams with their own clocks "
                  "(`python -m tools.bench.temporal_cost`; CPU of the whole worker process against its GRU calls):", "",
                  "| rounds wait | streams per round | worker CPU ms per round | GRU CPU ms per round | worker/GRU | "
                  "worker CPU us per stream-step | latency p99 ms |", "|---|---|---|---|---|---|---|"]
        for row in result["temporal"]:
            lines.append(f"| {row['round_wait_ms']:g} ms | {row['streams_per_round']:.1f} | "
                         f"{row['worker_cpu_ms_per_round']:.2f} | {row['gru_cpu_ms_per_round']:.2f} | "
                         f"{row['worker_over_gru']:.2f} | {row['worker_cpu_us_per_stream_step']:.0f} | "
                         f"{row['latency_p99_ms']:.1f} |")
        lines.append("")
    if "memory" in result:
        mem = result["memory"]
        lines += ["Memory (USS of all pipeline processes, live 720p25): " + ", ".join(
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
        c, nvdec = gpu["capacity_1080p30"], gpu["nvdec"]
        decoded_by = "NVDEC" if c.get("decoder", "nvdec") == "nvdec" else "OpenCV decode on the CPU"
        lines += ["", "GRU step on the GPU: " + "; ".join(f"{g['streams']} streams {g['ms_per_step']:.2f} ms"
                                                          for g in gpu["gru"]),
                  f"NVDEC decode (1080p30): {nvdec['frames_per_s']:.0f} frames/s." if "frames_per_s" in nvdec
                  else f"NVDEC decode (1080p30): not measured ({nvdec['not_measured']}).",
                  f"1080p30 streams held with p99 <= 100 ms ({decoded_by}, FP16 engine, GRU on the GPU): "
                  f"**{c['streams']}**.", ""]
    return "\n".join(lines)


def _capacity_lines(c: dict, r: dict, result: dict) -> list[str]:
    best = c["best"]
    ideal_streams = r.get("ideal_steps_per_s", 0) / result["step_rate"] if r.get("ideal_steps_per_s") else None
    ratio = f" = {c['streams'] / ideal_streams:.2f} of the ideal {ideal_streams:.1f}" if ideal_streams else ""
    if ideal_streams and r.get("ideal_rounds_steps_per_s"):
        rounds_streams = r["ideal_rounds_steps_per_s"] / result["step_rate"]
        ratio += f" ({c['streams'] / rounds_streams:.2f} of {rounds_streams:.1f} with the engine's median)"
    clocks = {"independent": "cameras with their own clocks (random start, rate up to 0.5% off)",
              "aligned": "cameras aligned (started together, one rate)"}[c.get("clocks", "aligned")]
    lines = [f"Real-time capacity, {clocks}: **{c['streams']} streams**{ratio} held for "
             f"{result['capacity_seconds']:.0f} s (p99 <= {LATENCY_BOUND_S * 1000:.0f} ms, nothing dropped but sampling)."]
    if best:
        stages = ", ".join(f"{k} {v['p50_ms']}/{v['p99_ms']}" for k, v in best["stages"].items())
        lines += [f"At {best['streams']} streams: end-to-end p50 {best['e2e_p50_ms']} ms, p99 "
                  f"{best['e2e_p99_ms']} ms; per stage p50/p99 ms: {stages}."]
    lines += ["Trials: " + "; ".join(f"{t['streams']} {'held' if t['held'] else 'not held'} "
                                    f"(p99 {t['e2e_p99_ms']} ms{', dropped ' + str(t['dropped']) if t['dropped'] else ''})"
                                    for t in c["trials"]), ""]
    return lines


def append_to_doc(report: str, doc: Path = DOC) -> None:
    """Append a run's Markdown to the benchmarks document, starting the document when there is none."""
    doc.parent.mkdir(parents=True, exist_ok=True)
    if not doc.is_file():
        doc.write_text("# Benchmarks\n\nEach run of `python -m tools.benchmark` appends a section; newest last.\n"
                       "Ratios compare figures measured in the same run on the same machine.\n\n")
    with doc.open("a") as out:
        out.write(report + "\n")
