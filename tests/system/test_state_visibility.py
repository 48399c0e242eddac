"""What an operator sees of a stream's durable state, over the real control API and live page: where its
state came from (fresh, then restored after a temporal crash) and how old its last snapshot is."""

from __future__ import annotations


def test_control_api_and_live_page_show_where_a_streams_state_came_from_and_its_age(temporal_killed_live_run):
    # A live MJPEG stream's temporal worker SIGKILLed once its state has an age; the API read before the
    # kill and after the successor scored 8 steps from the restored state (the run is shared with
    # test_durable_state.py: tests/system/conftest.py).
    seen = temporal_killed_live_run
    summary = seen["summary"]
    assert "live" in seen, f"never saw the stream restored after the crash: {seen}"
    before, after = seen["before"], seen["after"]
    assert before["state_origin"] == "fresh" and 0.0 <= before["state_age_s"] < 60.0, before
    assert after["state_origin"] == "restored after crash" and 0.0 <= after["state_age_s"] < 60.0, after
    assert after["restored"] == {"crash": 1}, after
    assert seen["live"]["state_origin"] == "restored after crash" and seen["live"]["state_age_s"] is not None
    assert summary.streams["cam"]["state_origin"] == "restored after crash"
