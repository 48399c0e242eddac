"""The Grafana dashboard and the alert rules against a real Prometheus (Debian's ``prometheus``,
installed by ``make system-deps``) scraping a real pipeline run on loopback: every query of every
panel, and the dashboard's stream variable, must parse and return data; the rules must load.

Grafana itself is not run (Debian has no package for it): what Grafana would send Prometheus is
run here with its variables filled in as Grafana fills them.

Prometheus scrapes the run twice: as a single-host pipeline (job ``actionpipe``, no ``node`` label) and
as a cluster's cell, through a file_sd file written by the coordinator's own code with the shipped
``prometheus.yml``'s cluster job, beside a coordinator's metrics (``ClusterMetrics`` over a real table).
So the cluster panels have data, and the node picker's ``All`` (``.*``) is shown to match the series
that have no ``node`` label at all.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request

import pytest
import yaml
from prometheus_client import start_http_server

from pipeline.cluster.file_sd import file_sd_targets, write_file_sd
from pipeline.cluster.metrics import ClusterMetrics
from pipeline.cluster.placement import ClusterTable, NodeInfo, StreamSpec
from pipeline.supervision.supervisor import Supervisor
from tests.conftest import REPO_ROOT
from tests.support.runs import config, run_until, synth_videos
from tests.support.web import Receiver
from tools.testbed.ports import free_port

DASHBOARD = REPO_ROOT / "configs" / "grafana" / "dashboards" / "actionpipe.json"
RULES = REPO_ROOT / "configs" / "prometheus" / "actionpipe-alerts.yml"
EXAMPLE_CONFIG = REPO_ROOT / "configs" / "prometheus" / "prometheus.yml"
CLUSTER_JOB = "actionpipe-cluster"
CELL = "node-test"
SCRAPE_S = 1
# What Grafana puts in place of its variables: all nodes, all streams (the variables' allValue), and a rate
# window of four scrapes.
VARIABLES = {"$node": ".*", "$stream": ".*", "$__rate_interval": f"{4 * SCRAPE_S}s"}


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
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert set(variables) == {"datasource", "node", "stream"}
    for name in ("node", "stream"):  # All must be the regex .*: it also matches series without the label
        assert (variables[name]["multi"], variables[name]["includeAll"], variables[name]["allValue"]) == (True, True, ".*")
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
    metrics_port, web_port, coordinator_port = free_port(), free_port(), free_port()
    shutil.copy(RULES, tmp_path / RULES.name)
    coordinator = _coordinator_metrics(metrics_port)
    server, _ = start_http_server(coordinator_port, addr="127.0.0.1", registry=coordinator.registry)
    # The pipeline as a cluster's one cell, and the coordinator, as the coordinator lists them.
    write_file_sd(tmp_path / "file_sd.json", file_sd_targets(_table(metrics_port).nodes(),
                                                             coordinator=f"127.0.0.1:{coordinator_port}"))
    cluster_job = next(j for j in yaml.safe_load(EXAMPLE_CONFIG.read_text())["scrape_configs"]
                       if j["job_name"] == CLUSTER_JOB)
    cluster_job["file_sd_configs"] = [{"files": [str(tmp_path / "file_sd.json")]}]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump({
        "global": {"scrape_interval": f"{SCRAPE_S}s", "evaluation_interval": f"{SCRAPE_S}s"},
        "rule_files": [RULES.name],
        "scrape_configs": [{"job_name": "actionpipe", "static_configs": [{"targets": [f"127.0.0.1:{metrics_port}"]}]},
                           cluster_job]}))
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
            server.shutdown()
            pytest.fail(f"prometheus did not start: {(tmp_path / 'prometheus.log').read_text()[-2000:]}")
        time.sleep(0.2)
    yield api, metrics_port
    proc.terminate()
    proc.wait(timeout=30)
    server.shutdown()


def _table(metrics_port: int) -> ClusterTable:
    """A coordinator's table: one cell (this test's pipeline), a stream on it and one no node can take."""
    table = ClusterTable()
    table.join(NodeInfo(CELL, {"CPU": 2}, 4, f"127.0.0.1:{metrics_port}"))
    table.add_stream(StreamSpec("dock", {"uri": "/srv/dock.mp4"}))
    table.add_stream(StreamSpec("gate", {"uri": "rtsp://10.0.0.8/s"}, {"GPU": 1}))  # no node has one: unplaced
    return table


def _coordinator_metrics(metrics_port: int) -> ClusterMetrics:
    metrics = ClusterMetrics()
    metrics.update(_table(metrics_port), {}, {})
    for counter in (metrics.nodes_lost, metrics.failovers, metrics.moves):
        counter.inc()
    return metrics


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def _query(api: str, expr: str) -> dict:
    return _get(f"{api}/api/v1/query?" + urllib.parse.urlencode({"query": expr}))


def _variable_values(api: str, dashboard: dict) -> dict[str, list[str]]:
    """What each query variable of the dashboard offers, asked as Grafana asks: label_values(SELECTOR, LABEL)
    is the label's values over the series SELECTOR matches (other variables in it filled in)."""
    values = {}
    for variable in dashboard["templating"]["list"]:
        if variable["type"] != "query":
            continue
        selector, label = variable["query"]["query"].removeprefix("label_values(").removesuffix(")").rsplit(", ", 1)
        for name, value in VARIABLES.items():
            selector = selector.replace(name, value)
        answer = _get(f"{api}/api/v1/label/{label}/values?" + urllib.parse.urlencode({"match[]": selector}))
        assert answer["status"] == "success", answer
        values[variable["name"]] = sorted(answer["data"])
    return values


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
    picked: dict = {}

    def scraped_enough(supervisor) -> bool:
        # Enough history for every rate window, and at least one action started somewhere, its series
        # scraped often enough for an increase over the rate window (two samples inside it).
        up = _query(api, 'min(count_over_time(up[1m]))')["data"]["result"]
        started = _query(api, 'max(count_over_time(actionpipe_events_total{kind="start"}[1m]))')["data"]["result"]
        return bool(up) and float(up[0]["value"][1]) >= 8 and bool(started) and float(started[0]["value"][1]) >= 6

    def query_all(supervisor) -> bool:
        if not scraped_enough(supervisor):
            return False
        for name, expr in queries:
            results[name] = _query(api, expr)
        for name, values in _variable_values(api, dashboard).items():
            results[f"{name} variable"] = {"status": "success", "data": {"result": values}}
        # The node picker's All: series without a node label match node=~".*"; a node picked, only its own.
        results["single-host series under All"] = _query(api, 'actionpipe_steps_processed_total{job="actionpipe", node=~".*"}')
        results["the cell's series"] = _query(api, f'actionpipe_steps_processed_total{{node=~"{CELL}"}}')
        picked.update(_query(api, f'actionpipe_steps_processed_total{{job="actionpipe", node=~"{CELL}"}}'))
        return True

    try:
        run_until(Supervisor(cfg), query_all, timeout_s=90)
    finally:
        receiver.stop()
    assert results, "Prometheus never gathered enough of the run to query"
    empty = [name for name, r in results.items() if r["status"] != "success" or not r["data"]["result"]]
    assert not empty, f"panel queries without data: {empty}"
    assert sorted(results["stream variable"]["data"]["result"]) == sorted(v.stem for v in videos)
    assert results["node variable"]["data"]["result"] == [CELL]  # the cells, not the coordinator
    assert picked["status"] == "success" and picked["data"]["result"] == [], "a node picked: only its own series"
    by_node = {r["metric"]["node"]: float(r["value"][1]) for r in results["Streams per node / A"]["data"]["result"]}
    assert by_node == {CELL: 1.0}, "the coordinator's per-node series keep their node label (honor_labels)"
    rules = _get(f"{api}/api/v1/rules")["data"]["groups"]
    assert sum(len(g["rules"]) for g in rules) == RULES.read_text().count("- alert:")  # every rule was loaded
    assert all(r["health"] == "ok" for g in rules for r in g["rules"]), rules
