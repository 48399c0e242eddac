"""The outputs a run writes to, built from its ``outputs:`` config inside the temporal process.

Events go to every configured event output; per-step scores to the scores
file. Each output is a sink (``emit``/``close``); the network ones (webhook,
MQTT) run on a thread of their own behind a bounded buffer
(:class:`~pipeline.outputs.delivery.BackgroundSink`) so they never hold up
scoring. Adding an output: its config section (``pipeline.config``), its
sink module in this folder, and one line here.
"""

from __future__ import annotations

import sys

import zmq

from pipeline.backoff import Backoff
from pipeline.config import OutputsConfig
from pipeline.events import ActionEvent
from pipeline.outputs.delivery import DROP_REASONS, BackgroundSink, DropReport, Transport
from pipeline.outputs.sinks import JsonlEventSink, JsonlScoreSink, PubEventSink, Sink, StdoutEventSink
from pipeline.outputs.spool import FileSpool


def event_sinks(outputs: OutputsConfig, context: zmq.Context, metrics) -> list[Sink]:
    sinks: list[Sink] = []
    if outputs.stdout:
        sinks.append(StdoutEventSink(sys.stdout))
    if outputs.events_jsonl:
        sinks.append(JsonlEventSink(outputs.events_jsonl))
    if outputs.events_pub:
        sinks.append(PubEventSink(outputs.events_pub, context))
    if outputs.webhook:
        from pipeline.outputs.webhook import WebhookTransport

        cfg = outputs.webhook
        sinks.append(_in_background(WebhookTransport(cfg.url, cfg.timeout_s), cfg, metrics))
    if outputs.mqtt:
        from pipeline.outputs.mqtt import MqttTransport

        cfg = outputs.mqtt
        transport = MqttTransport(cfg.host, cfg.port, cfg.topic_prefix, cfg.client_id, cfg.username, cfg.password)
        sinks.append(_in_background(transport, cfg, metrics))
    return sinks


def score_sinks(outputs: OutputsConfig) -> list[Sink]:
    return [JsonlScoreSink(outputs.scores_jsonl)] if outputs.scores_jsonl else []


def _in_background(transport: Transport, cfg, metrics) -> BackgroundSink:
    """A webhook or MQTT output on its own thread, so it never holds up scoring."""

    def count(report: DropReport) -> None:
        metrics.sink_dropped.labels(report.sink, report.reason).inc(report.count)

    for reason in DROP_REASONS:  # each exists from the start (0), for dashboards and alerts
        metrics.sink_dropped.labels(transport.name, reason)
    delivered = metrics.sink_delivered.labels(transport.name)
    spooled = metrics.sink_spooled.labels(transport.name)
    spool = None
    if cfg.spool_dir is not None:
        spool = FileSpool(cfg.spool_dir, transport.name, ActionEvent.to_json, ActionEvent.from_json)
    return BackgroundSink(transport, capacity=cfg.buffer,
                          backoff=Backoff(initial_s=min(0.5, cfg.retry_max_s), max_s=cfg.retry_max_s),
                          on_drop=count, on_delivered=lambda sink: delivered.inc(),
                          flush_timeout_s=cfg.flush_timeout_s, spool=spool, on_spooled=spooled.inc)
