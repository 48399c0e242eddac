import pytest

from pipeline.config import SourceConfig, load_config, stream_name, validate_config
from pipeline.errors import ConfigError


def test_defaults_fill_every_section():
    cfg = validate_config({"sources": [{"uri": "a.mp4"}]})
    assert cfg.engine.backend == "onnxruntime" and cfg.engine.workers is None  # resolved per machine (limits.py)
    assert cfg.replay.realtime is True and cfg.metrics.port == 9108
    assert 0 < cfg.events.off_threshold < cfg.events.on_threshold <= 1


@pytest.mark.parametrize(
    "data, fragments",
    [
        ({"sources": [{"uri": "a.mp4"}], "engine": {"max_batch_size": 0}}, ["engine.max_batch_size", "greater than or equal to 1", "0"]),
        ({"sources": [{"uri": "a.mp4"}], "engin": {}}, ["engin: unknown key", "engine, events"]),
        ({"sources": [{"uri": "a.mp4", "url": "b"}]}, ["sources.0.url: unknown key", "mode, name, open_timeout_s"]),
        ({"sources": [], "control": {"enabled": False}}, ["no sources and the control API is off: nothing to run"]),
        ({"sources": [{"uri": "a.mp4"}, {"uri": "x/a.mp4"}]},
         ["stream names must be unique", "'a.mp4' and 'x/a.mp4' would all be 'a'", "--source NAME=URI"]),
        ({"sources": [{"uri": "rtsp://h/cam 1"}, {"uri": "rtsp://h/cam_1"}]}, ["would all be 'cam_1'"]),
        ({"sources": [{"uri": "ftp://user:secret@h/x"}]}, ["sources.0.uri", "ftp:// is not supported", "ftp://***@h/x"]),
        ({"sources": [{"uri": "a.mp4", "reconnect": {"initial_s": 9, "max_s": 2}}]},
         ["sources.0.reconnect: initial_s (9.0) must not exceed max_s (2.0)"]),
        ({"live": {"stale_after_s": 0}}, ["live.stale_after_s", "greater than 0"]),
        ({"control": {"host": "0.0.0.0"}}, ["control", "reachable from other machines: set a token"]),
        ({"control": {"token": "short-secret"}}, ["control.token", "at least 16 characters, got ***"]),
        ({"control": {"require_token": True}}, ["control", "require_token is set but there is no token",
                                                "control.token"]),
        ({"sources": [{"uri": "a.mp4"}], "engine": {"workers": 0}}, ["engine.workers", "greater than or equal to 1"]),
        ({"sources": [{"uri": "a.mp4"}, {"uri": "b.mp4"}], "temporal": {"capacity": 1}},
         ["2 sources but temporal.capacity holds 1 streams"]),
        ({"sources": [{"uri": "a.mp4"}], "events": {"on_threshold": 0.2}}, ["off_threshold (0.3) must be below on_threshold (0.2)"]),
        ({"sources": [{"uri": "a.mp4"}], "events": {"onset_threshold": 0.6}},
         ["onset_threshold (0.6) must not be above on_threshold (0.5)"]),
        ({"sources": [{"uri": "a.mp4", "name": "bad name!"}]}, ["sources.0.name", "'bad name!'"]),
        ({"sources": [{"uri": "a.mp4"}], "engine": {"backend": "tensorflow"}}, ["engine.backend", "'onnxruntime'", "'tensorflow'"]),
        ({"sources": [{"uri": "a.mp4"}], "overlay": {"width": 10}}, ["overlay.width", "greater than or equal to 64", "10"]),
        ({"sources": [{"uri": "a.mp4"}], "overlay": {"dir": "x"}}, ["overlay.dir: unknown key", "jpeg_quality, out_dir, width"]),
        ({"sources": [{"uri": "a.mp4"}], "live_page": {"port": 70000}}, ["live_page.port", "less than or equal to 65535"]),
    ],
)
def test_bad_values_name_the_key_the_value_and_what_is_allowed(data, fragments):
    with pytest.raises(ConfigError) as info:
        validate_config(data)
    for fragment in fragments:
        assert fragment in str(info.value)
    # A rejected value never shows a credential.
    assert "secret" not in str(info.value)


def test_yaml_errors_name_the_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("sources: [\n")
    with pytest.raises(ConfigError, match="c.yaml: not valid YAML"):
        load_config(path)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")


@pytest.mark.parametrize(
    "uri, name",
    [
        ("/data/recordings/dock.mp4", "dock"),
        ("0", "camera0"),
        ("/data/frames/gate/", "gate"),
        ("rtsp://admin:secret@10.0.0.7:554/live/yard", "yard"),
        ("http://10.0.0.8:8080", "10.0.0.8"),
        ("rtsp://admin:se/cret@10.0.0.7/live/yard", "yard"),
        ("rtsp://admin:p@ss@10.0.0.7/yard?token=secret", "yard"),
        ("https://cam.example/stream.mjpg?access_token=secret", "stream.mjpg"),
    ],
)
def test_stream_names_come_from_the_source_never_with_credentials(uri, name):
    got = stream_name(SourceConfig(uri=uri))
    assert got == name
    assert "secret" not in got and "admin" not in got and "cret" not in got


def test_shipped_configs_are_valid():
    from pipeline.cluster.config import load_cluster_config
    from tests.conftest import REPO_ROOT

    for path in (REPO_ROOT / "configs").glob("*.yaml"):
        if path.name.startswith("cluster."):
            load_cluster_config(path)  # a cluster's config (docs/cluster.md), its pipeline inside it
        else:
            load_config(path)


def test_overlay_and_live_page_options_of_the_command_line(tmp_path):
    from pipeline.cli import _parser, build_config

    args = _parser().parse_args(["--source", "a.mp4", "--overlay-out", str(tmp_path / "ov"), "--live-port", "0"])
    cfg = build_config(args)
    assert cfg.overlay.out_dir == tmp_path / "ov"
    assert cfg.live_page.enabled and cfg.live_page.port == 0 and cfg.live_page.host == "127.0.0.1"
    plain = build_config(_parser().parse_args(["--source", "a.mp4"]))
    assert plain.overlay.out_dir is None and not plain.live_page.enabled


def test_an_overlay_folder_that_cannot_be_made_is_named_before_anything_starts(tmp_path):
    from pipeline.supervision.preflight import preflight
    from tests.support.runs import config

    blocker = tmp_path / "a-file"
    blocker.write_text("")
    configured = config(sources=[{"uri": str(tmp_path / "x.mp4")}], overlay={"out_dir": str(blocker / "overlay")})
    with pytest.raises(ConfigError, match="overlay.out_dir: cannot create .*a-file/overlay"):
        preflight(configured)


def test_an_rtsp_transport_is_chosen_per_rtsp_source_and_refused_on_others():
    from pipeline.config import SourceConfig

    assert SourceConfig(uri="rtsp://cam/1").rtsp_transport == "auto"
    assert SourceConfig(uri="rtsp://cam/1", rtsp_transport="udp").rtsp_transport == "udp"
    with pytest.raises(ValueError, match="rtsp_transport 'tcp' is for rtsp:// sources"):
        SourceConfig(uri="http://cam/1.mjpg", rtsp_transport="tcp")
    with pytest.raises(ConfigError, match=r"sources\.0\.rtsp_transport: Input should be 'auto', 'tcp', 'udp' or 'http'"):
        validate_config({"sources": [{"uri": "rtsp://cam/1", "rtsp_transport": "sctp"}]})


def test_auto_on_a_cpu_with_integer_dot_products_runs_the_int8_graph_and_a_missing_one_is_named(tmp_path):
    from engines.factory import DEFAULT_INT8_ONNX_PATH
    from pipeline.supervision.limits import MachineFacts
    from pipeline.supervision.preflight import onnx_path_for, preflight
    from tests.support.runs import config

    assert DEFAULT_INT8_ONNX_PATH.is_file(), "make models builds the INT8 graph"
    vnni = MachineFacts(2, 24 * 1024**3, int8_dot=True)
    auto = preflight(config(sources=[{"uri": str(tmp_path / "x.mp4")}], engine={"backend": "auto"}), vnni).engine
    assert auto.precision == "int8"
    assert onnx_path_for(auto) == str(DEFAULT_INT8_ONNX_PATH.resolve())
    named = preflight(config(sources=[{"uri": str(tmp_path / "x.mp4")}]), vnni).engine
    assert named.precision == "fp32"

    # Asked for on a CPU without them: refused before anything starts, saying why and what to run.
    plain = MachineFacts(2, 24 * 1024**3, int8_dot=False)
    assert preflight(config(sources=[{"uri": str(tmp_path / "x.mp4")}], engine={"backend": "auto"}), plain
                     ).engine.precision == "fp32"
    with pytest.raises(ConfigError, match=r"engine.precision int8: onnxruntime int8 needs a CPU with integer dot "
                                          r"products .* run engine.precision fp32"):
        preflight(config(sources=[{"uri": str(tmp_path / "x.mp4")}], engine={"precision": "int8"}), plain)

    missing = auto.model_copy(update={"precision": "int8", "onnx_path": tmp_path / "none.int8.onnx"})
    with pytest.raises(ConfigError, match=r"engine.precision int8: no INT8 graph at .*none.int8.onnx .*quantize_backbone"):
        onnx_path_for(missing)
