"""The Grafana dashboard and the alert rules against a real Prometheus (Debian's ``prometheus``,
installed by ``make system-deps``) scraping a real pipeline run on loopback: every query of every
panel, and the dashboard's stream variable, must parse and return data; the rules must load.

Grafana itself is not run (Debian has no package for it): what Grafana would send Prometheus is
run here with its variables filled in as Grafana fills them.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request

import pytest

from pipeline.supervision.supervisor import Supervisor
from tests.conftest import REPO_ROOT
from tests.support.runs import config, run_until, synth_videos
from tests.support.web import Receiver
from tools.testbed.ports import free_port

DASHBOARD = REPO_ROOT / "configs" / "grafana" / "dashboards" / "actionpipe.json"
RULES = REPO_ROOT / "configs" / "prometheus" / "actionpipe-alerts.yml"
SCRAPE_S = 1
# What Grafana puts in place of its variables: all streams, and a rate window of four scrapes.
VARIABLES = {"$stream": ".*", "$__rate_interval": f"{4 * SCRAPE_S}s"}


def _panels(dashboard: dict) -> list[dict]:
    return [p for p in dashboard["panels"] if p["type"] != "row"]


def _queries(dashboard: dict) -> list[tuple[str, str]]:
    out = []
    for panel in _panels(dashboard):
        for target in panel["targets"]:
            expr = target["expr"]
            for name, value in VARIABLES.items():
                expr = expr.replace(name, value)
            out.append((f"{panel['title']} / {target['refId']}", expr))
    return out


def test_dashboard_is_well_formed_for_grafana():
    dashboard = json.loads(DASHBOARD.read_text())
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    assert {v["name"] for v in dashboard["templating"]["list"]} == {"datasource", "stream"}
    cells: set[tuple[int, int]] = set()
    for panel in dashboard["panels"]:
        g = panel["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24, f"{panel['title']} leaves the 24-column grid"
        mine = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not cells & mine, f"{panel['title']} overlaps another panel"
        cells |= mine
    for panel in _panels(dashboard):
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["targets"], f"{panel['title']} has no query"
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs))
        assert all(t["expr"].strip() for t in panel["targets"])


@pytest.fixture
def prometheus(tmp_path):
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("prometheus is not installed: run make system-deps (Debian's prometheus package)")
    metrics_port, web_port = free_port(), free_port()
    shutil.copy(RULES, tmp_path / RULES.name)
    (tmp_path / "prometheus.yml").write_text(
        f"global:\n  scrape_interval: {SCRAPE_S}s\n  evaluation_interval: {SCRAPE_S}s\n"
        f"rule_files: [{RULES.name}]\n"
        f"scrape_configs:\n  - job_name: actionpipe\n    static_configs:\n      - targets: ['127.0.0.1:{metrics_port}']\n"
    )
    log = (tmp_path / "prometheus.log").open("w")
    proc = subprocess.Popen([binary, f"--config.file={tmp_path / 'prometheus.yml'}",
                             f"--storage.tsdb.path={tmp_path / 'data'}", f"--web.listen-address=127.0.0.1:{web_port}"],
                            stdout=log, stderr=subprocess.STDOUT)
    api = f"http://127.0.0.1:{web_port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(f"{api}/-/ready", timeout=1) as response:
                if response.status == 200:
                    break
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"prometheus did not start: {(tmp_path / 'prometheus.log').read_text()[-2000:]}")
        time.sleep(0.2)
    yield api, metrics_port
    proc.terminate()
    proc.wait(timeout=30)


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def _query(api: str, expr: str) -> dict:
    return _get(f"{api}/api/v1/query?" + urllib.parse.urlencode({"query": expr}))


def test_every_panel_query_returns_data_from_a_real_scrape(prometheus, tmp_path):
    api, metrics_port = prometheus
    videos = synth_videos(tmp_path / "synth", count=2, seed=5151, duration_range=(12.0, 12.0))
    receiver = Receiver()  # a webhook output, so the network-output series exist too
    cfg = config(
        sources=[{"uri": str(v), "name": v.stem, "mode": "live"} for v in videos],
        replay={"loop": True},
        metrics={"port": metrics_port},
        outputs={"events_jsonl": str(tmp_path / "events.jsonl"), "webhook": {"url": receiver.url}},
    )
    dashboard = json.loads(DASHBOARD.read_text())
    queries = _queries(dashboard)
    results: dict[str, dict] = {}

    def scraped_enough(supervisor) -> bool:
        # Enough history for every rate window, and at least one action started somewhere.
        up = _query(api, 'count_over_time(up{job="actionpipe"}[1m])')["data"]["result"]
        started = _query(api, 'sum(actionpipe_events_total{kind="start"})')["data"]["result"]
        return bool(up) and float(up[0]["value"][1]) >= 8 and bool(started) and float(started[0]["value"][1]) > 0

    def query_all(supervisor) -> bool:
        if not scraped_enough(supervisor):
            return False
        for name, expr in queries:
            results[name] = _query(api, expr)
        streams = _get(f"{api}/api/v1/label/stream/values?" + urllib.parse.urlencode(
            {"match[]": "actionpipe_steps_processed_total"}))
        results["stream variable"] = {"status": streams["status"], "data": {"result": streams["data"]}}
        return True

    try:
        run_until(Supervisor(cfg), query_all, timeout_s=90)
    finally:
        receiver.stop()
    assert results, "Prometheus never gathered enough of the run to query"
    empty = [name for name, r in results.items() if r["status"] != "success" or not r["data"]["result"]]
    assert not empty, f"panel queries without data: {empty}"
    assert sorted(results["stream variable"]["data"]["result"]) == sorted(v.stem for v in videos)
    rules = _get(f"{api}/api/v1/rules")["data"]["groups"]
    assert sum(len(g["rules"]) for g in rules) == RULES.read_text().count("- alert:")  # every rule was loaded
    assert all(r["health"] == "ok" for g in rules for r in g["rules"]), rules
