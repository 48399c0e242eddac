"""Where the benchmark reads and writes: the head it measures, its cached videos and runs, its report."""

from __future__ import annotations

from engines.factory import REPO_ROOT

BENCH_DIR = REPO_ROOT / "build" / "bench"
DOC = REPO_ROOT / "docs" / "benchmarks.md"
MODEL = REPO_ROOT / "models" / "synthactions_gru.safetensors"
