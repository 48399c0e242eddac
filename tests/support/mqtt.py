"""A real MQTT broker (Debian's Mosquitto) and a subscriber that records what it was sent."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

from tools.testbed.ports import free_port


class MosquittoBroker:
    """A real Mosquitto broker (Debian's ``mosquitto``, installed by ``make system-deps``) on a loopback
    port, with persistence on, that can be stopped (SIGTERM: it saves its sessions) and started again."""

    def __init__(self, folder, port: int | None = None) -> None:
        import getpass
        import shutil

        if shutil.which("mosquitto") is None and not Path("/usr/sbin/mosquitto").exists():
            raise RuntimeError("mosquitto is not installed: make system-deps installs it")
        self.binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.config = self.folder / "mosquitto.conf"
        self.config.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence true\n"
            f"persistence_location {self.folder}/\nuser {getpass.getuser()}\n"
        )
        self.log = self.folder / "mosquitto.log"
        self.process = None
        self.start()

    def start(self) -> None:
        import subprocess

        self.process = subprocess.Popen([self.binary, "-c", str(self.config)], stdout=subprocess.DEVNULL,
                                        stderr=self.log.open("a"))
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"mosquitto did not start: {self.log.read_text()[-2000:]}")
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        self.process = None


class MqttRecorder:
    """A subscriber with a persistent session (clean session off, QoS 1): what a consumer that must not
    miss events across a broker restart runs. Records (topic, payload, retained) in arrival order.

    A broker that stops before the recorder acknowledged a message sends it again after its restart,
    flagged DUP (MQTT's at-least-once on that leg); those redeliveries of a message already
    recorded are counted in ``redelivered``, not recorded again. A publisher that published twice
    would show here as two messages without the flag."""

    def __init__(self, port: int, topics: str = "#", client_id: str = "test-recorder", clean: bool = False) -> None:
        import paho.mqtt.client as mqtt

        self.messages: list[tuple[str, str, bool]] = []
        self.redelivered = 0
        self._subscribed = threading.Event()
        self._client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311,
                                   clean_session=clean)
        self._client.reconnect_delay_set(min_delay=1, max_delay=2)

        def on_connect(client, userdata, flags, reason_code, properties):
            client.subscribe(topics, qos=1)

        def on_subscribe(client, userdata, mid, reason_codes, properties):
            self._subscribed.set()

        def on_message(client, userdata, message):
            record = (message.topic, message.payload.decode(), bool(message.retain))
            if message.dup and record in self.messages:
                self.redelivered += 1
                return
            self.messages.append(record)

        self._client.on_connect = on_connect
        self._client.on_subscribe = on_subscribe
        self._client.on_message = on_message
        self._client.connect("127.0.0.1", port, keepalive=5)
        self._client.loop_start()
        if not self._subscribed.wait(10):
            raise RuntimeError("the test subscriber could not subscribe")

    def payloads(self, topic: str) -> list[str]:
        return [payload for t, payload, _ in self.messages if t == topic]

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()
