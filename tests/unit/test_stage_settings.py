"""Stage settings cross from the supervisor to each stage process as typed objects: a key one side
misspells, forgets or does not know fails loudly at the start, never silently."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from pipeline.config import EngineConfig, EventsConfig, OutputsConfig, TemporalConfig
from pipeline.stages.settings import (
    CaptureSettings,
    EmbedSettings,
    OverlaySettings,
    StageKind,
    StageSettingsError,
    TemporalSettings,
    decode_settings,
    encode_settings,
)
from pipeline.supervision.launch import stage_settings, temporal_after_restart
from pipeline.supervision.run_folder import RunFolder
from tests.conftest import REPO_ROOT
from tests.support.runs import MODEL, config

PROCESS = {"control_endpoint": "ipc:///run/control", "parent_pid": 1234, "run_dir": "/run"}

EXAMPLES = [
    CaptureSettings(stage="capture:0", **PROCESS, embed_endpoints=("ipc:///run/embed-0", "ipc:///run/embed-1"),
                    width=224, height=224, step_rate=4.0, decoder_threads=0, preview_endpoint="ipc:///run/overlay",
                    preview_width=480),
    EmbedSettings(stage="embed:1", **PROCESS, worker=1, engine=EngineConfig(backend="torch", max_batch_size=4),
                  onnx_path=None, in_endpoint="ipc:///run/embed-1", out_endpoint="ipc:///run/temporal"),
    TemporalSettings(stage="temporal", **PROCESS, model_path=str(MODEL), temporal=TemporalConfig(capacity=8),
                     events=EventsConfig(on_threshold=0.8, off_threshold=0.15), in_endpoint="ipc:///run/temporal",
                     outputs=OutputsConfig(stdout=False, events_jsonl="/out/events.jsonl"), restarted=True,
                     known_generations={"cam": 3}, orphaned_actions={"cam": {"t": 1.5, "actions": {"enter": 0.9}}}),
    OverlaySettings(stage="overlay", **PROCESS, classes=("background", "enter"), step_rate=4.0, on_threshold=0.8,
                    width=480, in_endpoint="ipc:///run/overlay", live_dir="/run/live"),
]


@pytest.mark.parametrize("settings", EXAMPLES, ids=lambda s: s.kind.value)
def test_settings_travel_as_json_and_come_back_equal_and_typed(settings):
    text = encode_settings(settings)

    back = decode_settings(settings.kind, text)

    assert back == settings
    assert type(back) is type(settings)
    for name, value in vars(settings).items():
        assert type(getattr(back, name)) is type(value), name  # tuples stay tuples, sections stay sections


@pytest.mark.parametrize("settings", EXAMPLES, ids=lambda s: s.kind.value)
def test_a_misspelt_key_is_refused_naming_it(settings):
    data = json.loads(encode_settings(settings))
    data["hight_water_mark"] = data.pop("high_water_mark")

    with pytest.raises(StageSettingsError, match="unknown key.*hight_water_mark"):
        decode_settings(settings.kind, json.dumps(data))


def test_a_missing_key_is_refused_naming_it():
    data = json.loads(encode_settings(EXAMPLES[0]))
    del data["embed_endpoints"]

    with pytest.raises(StageSettingsError, match="missing key.*embed_endpoints"):
        decode_settings(StageKind.CAPTURE, json.dumps(data))


def test_a_config_section_is_validated_on_the_way_in():
    data = json.loads(encode_settings(EXAMPLES[2]))
    data["temporal"]["capacity"] = -1

    with pytest.raises(StageSettingsError, match="capacity"):
        decode_settings(StageKind.TEMPORAL, json.dumps(data))


def test_settings_that_are_not_a_json_object_are_refused():
    with pytest.raises(StageSettingsError, match="not JSON"):
        decode_settings(StageKind.EMBED, "{")
    with pytest.raises(StageSettingsError, match="JSON object"):
        decode_settings(StageKind.EMBED, "[1, 2]")


def test_a_stage_process_started_with_a_misspelt_key_exits_2_with_one_line():
    data = json.loads(encode_settings(EXAMPLES[0]))
    data["embed_endpoint"] = data.pop("embed_endpoints")

    done = subprocess.run([sys.executable, "-m", "pipeline.stages", "capture"], input=json.dumps(data), text=True,
                          capture_output=True, cwd=REPO_ROOT, timeout=60)

    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "embed_endpoint" in lines[0] and lines[0].startswith("error: "), done.stderr


def test_the_supervisor_plans_every_stage_of_a_run_and_each_plan_travels(tmp_path):
    cfg = config(sources=[{"uri": "a.mp4"}], engine={"workers": 2}, capture={"workers": 2},
                 overlay={"out_dir": str(tmp_path / "overlay")}, live_page={"enabled": True, "port": 0})
    from engines.head_config import read_head_config

    head = read_head_config(cfg.model)
    with RunFolder(tmp_path) as folder:
        planned = stage_settings(cfg, head, cfg.events, "/models/backbone.onnx", folder, "ipc://x/control", 99, 2)

        assert [s.stage for s in planned] == ["temporal", "overlay", "embed:0", "embed:1", "capture:0", "capture:1"]
        for settings in planned:
            assert decode_settings(settings.kind, encode_settings(settings)) == settings
        capture = planned[-1]
        assert capture.embed_endpoints == (folder.endpoint("embed-0"), folder.endpoint("embed-1"))
        assert capture.preview_endpoint == planned[0].overlay_endpoint == planned[1].in_endpoint
        assert planned[1].live_dir == str(folder.live)


def test_a_replacement_temporal_worker_is_told_its_predecessors_state():
    replaced = temporal_after_restart(EXAMPLES[2], {"yard": 2}, {"yard": {"t": 3.0, "actions": {"exit": 0.7}}})

    assert replaced.restarted
    assert replaced.known_generations == {"yard": 2}
    assert replaced.orphaned_actions == {"yard": {"t": 3.0, "actions": {"exit": 0.7}}}
    assert replaced.stage == EXAMPLES[2].stage and replaced.temporal == EXAMPLES[2].temporal
