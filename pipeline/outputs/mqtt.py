"""Events to an MQTT broker (``outputs.mqtt``), in the layout Frigate and Home Assistant users know.

Topics, under ``topic_prefix`` (``actionpipe``):

    actionpipe/available               online / offline (retained; offline is also the last will)
    actionpipe/events                  every event, JSON
    actionpipe/<stream>/events         that stream's events, JSON
    actionpipe/<stream>/<action>       ON / OFF (retained): is the action happening now
    actionpipe/<stream>/state          JSON (retained): the stream's active actions and its last event

Everything is published with QoS 1. :class:`~pipeline.outputs.delivery.BackgroundSink`
buffers events while the broker is away and retries; this transport never
publishes an event twice: once its messages are handed to the client, a retry
waits for their acknowledgements (the client sends them again itself after a
reconnect, in order) instead of publishing again. An event counts as delivered
when the broker has acknowledged each of its messages (PUBACK, seen through
``on_publish``: a message handed over while the connection was dropping keeps
an error code in paho's own bookkeeping even after it went out). A reconnect
wakes the sender at once (``on_ready``). A subscriber that must not miss
events across a broker restart uses a persistent session (clean session off,
QoS 1) on a broker with persistence on, as usual with MQTT.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass

from pipeline.events import ActionEvent
from pipeline.outputs.delivery import DeliveryError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Message:
    topic: str
    payload: str
    retain: bool


class TopicLayout:
    """Which messages an event becomes, given what is active per stream. Owns that state; no I/O."""

    def __init__(self, prefix: str = "actionpipe") -> None:
        if not prefix or any(c in prefix for c in "+#") or prefix.startswith("/") or prefix.endswith("/"):
            raise ValueError(f"MQTT topic prefix {prefix!r}: no wildcards (+ #), no leading or trailing /")
        self.prefix = prefix
        self._active: dict[str, set[str]] = {}

    @property
    def availability(self) -> str:
        return f"{self.prefix}/available"

    def messages(self, event: ActionEvent) -> list[Message]:
        active = self._active.setdefault(event.stream, set())
        if event.kind == "start":
            active.add(event.action)
        else:
            active.discard(event.action)
        body = json.dumps(event.to_json(), separators=(",", ":"))
        state = json.dumps({"stream": event.stream, "active": sorted(active), "t": event.t,
                            "last_event": event.to_json()}, separators=(",", ":"))
        base = f"{self.prefix}/{event.stream}"
        return [
            Message(f"{self.prefix}/events", body, False),
            Message(f"{base}/events", body, False),
            Message(f"{base}/{event.action}", "ON" if event.kind == "start" else "OFF", True),
            Message(f"{base}/state", state, True),
        ]


class MqttTransport:
    name = "mqtt"

    def __init__(self, host: str, port: int = 1883, topic_prefix: str = "actionpipe", client_id: str | None = None,
                 username: str | None = None, password: str | None = None, keepalive_s: int = 30,
                 ack_timeout_s: float = 5.0) -> None:
        import paho.mqtt.client as mqtt

        self._where = f"{host}:{port}"
        self._layout = TopicLayout(topic_prefix)
        self._ack_timeout_s = ack_timeout_s
        self._in_flight: tuple[ActionEvent, list[int]] | None = None
        self._connected = threading.Event()
        self._ever_connected = False
        self._ready: Callable[[], None] = lambda: None
        # Acknowledged message ids, filled on the client's thread; the availability messages are not events.
        self._acks = threading.Condition()
        self._acked: set[int] = set()
        self._not_events: set[int] = set()
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id or f"actionpipe-{os.getpid()}",
                             protocol=mqtt.MQTTv311, clean_session=True)
        if username is not None:
            client.username_pw_set(username, password)
        client.will_set(self._layout.availability, "offline", qos=1, retain=True)
        client.reconnect_delay_set(min_delay=1, max_delay=10)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.connect_async(host, port, keepalive_s)
        client.loop_start()
        self._client = client

    def on_ready(self, callback: Callable[[], None]) -> None:
        """``callback`` runs (on the client's thread) each time the broker is reached again."""
        self._ready = callback

    # -- callbacks on the client's network thread ------------------------------------------------------
    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            logger.error("MQTT broker %s refused the connection: %s", self._where, reason_code)
            return
        logger.info("MQTT: connected to %s%s", self._where, " again" if self._ever_connected else "")
        self._ever_connected = True
        self._connected.set()
        info = client.publish(self._layout.availability, "online", qos=1, retain=True)
        with self._acks:  # its PUBACK comes later on this same thread: no race with _on_publish
            self._not_events.add(info.mid)
        self._ready()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        if self._connected.is_set():
            logger.warning("MQTT: lost the broker %s (%s); reconnecting, events are buffered", self._where, reason_code)
        self._connected.clear()

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        with self._acks:
            if mid in self._not_events:
                self._not_events.discard(mid)
                return
            self._acked.add(mid)
            self._acks.notify_all()

    # -- delivery --------------------------------------------------------------------------------------
    def deliver(self, event: ActionEvent) -> None:
        if self._in_flight is not None and self._in_flight[0] is event:
            mids = self._in_flight[1]  # already handed to the client: wait for it, never publish twice
        else:
            if not self._connected.is_set():
                raise DeliveryError(f"not connected to the MQTT broker at {self._where}")
            # If the connection drops while these are handed over, the client keeps them and sends them
            # after it reconnects; their acknowledgements arrive through _on_publish either way.
            mids = [self._client.publish(m.topic, m.payload, qos=1, retain=m.retain).mid
                    for m in self._layout.messages(event)]
            self._in_flight = (event, mids)
        with self._acks:
            acknowledged = self._acks.wait_for(lambda: self._acked.issuperset(mids), timeout=self._ack_timeout_s)
            if not acknowledged:
                raise DeliveryError(f"the MQTT broker at {self._where} has not acknowledged the event yet")
            self._acked.difference_update(mids)
        self._in_flight = None

    def close(self) -> None:
        if self._connected.is_set():
            info = self._client.publish(self._layout.availability, "offline", qos=1, retain=True)
            with self._acks:
                self._not_events.add(info.mid)
            try:
                info.wait_for_publish(timeout=2.0)
            except (RuntimeError, ValueError) as exc:  # the broker went away meanwhile: the will says offline
                logger.debug("MQTT: offline notice not acknowledged (%s)", exc)
        self._client.disconnect()
        self._client.loop_stop()
