"""The shipped Prometheus alerting rules: valid (``promtool check rules``), and each alert fires
when it should and stays quiet when it should not (``promtool test rules`` on synthetic series).
promtool is Debian's ``prometheus`` package, installed by ``make system-deps``."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

RULES_DIR = REPO_ROOT / "configs" / "prometheus"


def _promtool(*args: str, cwd: Path = RULES_DIR) -> subprocess.CompletedProcess:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is not installed: run make system-deps (Debian's prometheus package)")
    return subprocess.run([promtool, *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_rules_and_the_example_prometheus_config_are_valid():
    rules = _promtool("check", "rules", "actionpipe-alerts.yml")
    assert rules.returncode == 0, rules.stdout + rules.stderr
    written = (RULES_DIR / "actionpipe-alerts.yml").read_text().count("- alert:")
    assert written >= 11 and f"SUCCESS: {written} rules found" in rules.stdout  # every rule in the file was read
    config = _promtool("check", "config", "prometheus.yml")
    assert config.returncode == 0, config.stdout + config.stderr


def test_every_alert_fires_and_stays_quiet_as_its_unit_tests_say():
    result = _promtool("test", "rules", "actionpipe-alerts.test.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    tested = set()
    for line in (RULES_DIR / "actionpipe-alerts.test.yml").read_text().splitlines():
        if "alertname:" in line:
            tested.add(line.split("alertname:")[1].strip())
    defined = {line.split("alert:")[1].strip() for line in (RULES_DIR / "actionpipe-alerts.yml").read_text().splitlines()
               if line.strip().startswith("- alert:")}
    assert defined == tested, f"alerts without a unit test: {sorted(defined - tested)}"


def test_the_unit_tests_catch_a_changed_bound(tmp_path):
    # The same tests against rules whose latency bound was loosened must fail: they test something.
    rules = (RULES_DIR / "actionpipe-alerts.yml").read_text()
    assert "[5m]))) > 0.5" in rules
    (tmp_path / "actionpipe-alerts.yml").write_text(rules.replace("[5m]))) > 0.5", "[5m]))) > 2"))
    shutil.copy(RULES_DIR / "actionpipe-alerts.test.yml", tmp_path)
    result = _promtool("test", "rules", "actionpipe-alerts.test.yml", cwd=tmp_path)
    assert result.returncode != 0
    assert "ActionpipeLatencyHigh" in result.stdout + result.stderr
