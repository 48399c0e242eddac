"""The supervisor reads every stage's metrics file, including one a stage is creating at that moment."""

from __future__ import annotations

from prometheus_client.mmap_dict import MmapedDict, mmap_key

from pipeline.metrics import build_registry, read_stream_counters


def _counter_file(folder, pid: int, stream: str, value: float) -> None:
    values = MmapedDict(str(folder / f"counter_{pid}.db"))
    key = mmap_key("actionpipe_frames_captured", "actionpipe_frames_captured_total", ("stream",), (stream,),
                   "Frames read from the source.")
    values.write_value(key, value, 0.0)
    values.close()


def test_a_metrics_file_still_being_created_is_left_out_and_the_others_are_read(tmp_path):
    _counter_file(tmp_path, 101, "dock", 7.0)
    _counter_file(tmp_path, 102, "dock", 5.0)
    (tmp_path / "counter_103.db").write_bytes(b"")  # created by a starting stage, not sized yet
    counters = read_stream_counters(build_registry(tmp_path))
    assert counters["dock"].captured == 12
