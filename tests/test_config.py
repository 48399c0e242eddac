import pytest

from pipeline.config import ConfigError, SourceConfig, load_config, stream_name, validate_config


def test_defaults_fill_every_section():
    cfg = validate_config({"sources": [{"uri": "a.mp4"}]})
    assert cfg.engine.backend == "onnxruntime" and cfg.engine.workers == 1
    assert cfg.replay.realtime is True and cfg.metrics.port == 9108
    assert 0 < cfg.events.off_threshold < cfg.events.on_threshold <= 1


@pytest.mark.parametrize(
    "data, fragments",
    [
        ({"sources": [{"uri": "a.mp4"}], "engine": {"max_batch_size": 0}}, ["engine.max_batch_size", "greater than or equal to 1", "0"]),
        ({"sources": [{"uri": "a.mp4"}], "engin": {}}, ["engin: unknown key", "engine, events"]),
        ({"sources": [{"uri": "a.mp4", "url": "b"}]}, ["sources.0.url: unknown key", "mode, name, uri"]),
        ({"sources": []}, ["sources", "at least 1"]),
        ({}, ["sources: required key is missing"]),
        ({"sources": [{"uri": "a.mp4"}, {"uri": "x/a.mp4"}]}, ["stream names must be unique", "'a'"]),
        ({"sources": [{"uri": "a.mp4"}], "events": {"on_threshold": 0.2}}, ["off_threshold (0.3) must be below on_threshold (0.2)"]),
        ({"sources": [{"uri": "a.mp4", "name": "bad name!"}]}, ["sources.0.name", "'bad name!'"]),
        ({"sources": [{"uri": "a.mp4"}], "engine": {"backend": "tensorflow"}}, ["engine.backend", "'onnxruntime'", "'tensorflow'"]),
    ],
)
def test_bad_values_name_the_key_the_value_and_what_is_allowed(data, fragments):
    with pytest.raises(ConfigError) as info:
        validate_config(data)
    for fragment in fragments:
        assert fragment in str(info.value)


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
    ],
)
def test_stream_names_come_from_the_source_never_with_credentials(uri, name):
    got = stream_name(SourceConfig(uri=uri))
    assert got == name
    assert "secret" not in got and "admin" not in got


def test_shipped_configs_are_valid():
    from tests.conftest import REPO_ROOT

    for path in (REPO_ROOT / "configs").glob("*.yaml"):
        load_config(path)
