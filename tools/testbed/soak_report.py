"""The soak's report as Markdown (``soak.md``): what was forced, memory and latency over time, the frame
accounting of every stream, and the checks."""

from __future__ import annotations


def markdown(report: dict) -> str:
    """The report of a finished soak (the dict Soak.run returns) as Markdown."""
    lines = [f"# Soak: {report['streams']} live streams for {report['minutes']:g} minutes", ""]
    lines += ["Forced along the way:", ""] + [f"- {a['t_s']:.0f} s: {a['action']}" for a in report["actions"]] + [""]
    samples = report["samples"]
    picks = sorted({0, len(samples) // 4, len(samples) // 2, 3 * len(samples) // 4, len(samples) - 1})
    processes = sorted({p for s in samples for p in s["pss_mb"]})
    lines += ["Memory per process (PSS MB) over time:", "",
              "| t (s) | " + " | ".join(processes) + " | e2e p50 ms | e2e p99 ms |",
              "|---" * (len(processes) + 3) + "|"]
    for i in picks:
        s = samples[i]
        p50 = f"{s['latency_p50_s'] * 1000:.0f}" if s["latency_p50_s"] is not None else "-"
        p99 = f"{s['latency_p99_s'] * 1000:.0f}" if s["latency_p99_s"] is not None else "-"
        lines.append(f"| {s['t_s']:.0f} | " + " | ".join(f"{s['pss_mb'].get(p, '-')}" for p in processes)
                     + f" | {p50} | {p99} |")
    lines += ["", "PSS growth from 25% of the run to its end (MB): "
              + ", ".join(f"{k} {v:+.1f}" for k, v in sorted(report["pss_growth_after_warmup_mb"].items())), ""]
    lines += ["Frame accounting at the end (captured = processed + dropped):", "",
              "| stream | captured | processed | dropped | reconnects | sequences |", "|---|---|---|---|---|---|"]
    for name, a in report["accounting"].items():
        dropped = ", ".join(f"{k}={v}" for k, v in sorted(a["dropped"].items()))
        sequences = ", ".join(f"{k}={v}" for k, v in sorted(a["sequences"].items()))
        lines.append(f"| {name} | {a['captured']} | {a['processed']} | {dropped} | {a['reconnects']} | {sequences} |")
    lines += ["", f"Stopped with SIGTERM: exit code {report['exit_code']} after {report['stop_s']:.1f} s.", "",
              "Checks: " + "; ".join(f"{k}: {'yes' if v else 'NO'}" for k, v in report["checks"].items()), ""]
    return "\n".join(lines)
