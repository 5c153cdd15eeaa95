"""A plain paho-mqtt client for tests: records what appears on topics, publishes raw bytes.

It is deliberately not chargebus code, so tests see the bus as any other client would.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion


@dataclass(frozen=True)
class Seen:
    topic: str
    payload: bytes
    retain: bool
    at: float

    def json(self) -> Any:
        return json.loads(self.payload)


class MqttObserver:
    def __init__(self, host: str, port: int, subscriptions: list[str]) -> None:
        self._client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=f"observer-{uuid.uuid4().hex[:8]}",
        )
        self._host = host
        self._port = port
        self._subscriptions = subscriptions
        self._lock = threading.Condition()
        self.messages: list[Seen] = []
        self._subscribed = threading.Event()
        self._client.on_connect = self._on_connect
        self._client.on_message = self._on_message
        self._client.on_subscribe = self._on_subscribe

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any, props: Any = None
    ) -> None:
        client.subscribe([(t, 1) for t in self._subscriptions])

    def _on_subscribe(self, *args: Any) -> None:
        self._subscribed.set()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append(
                Seen(msg.topic, bytes(msg.payload), bool(msg.retain), time.monotonic())
            )
            self._lock.notify_all()

    def __enter__(self) -> Self:
        self._client.connect(self._host, self._port, keepalive=30)
        self._client.loop_start()
        if not self._subscribed.wait(10):
            raise TimeoutError("observer did not get its subscription acknowledged")
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def publish(self, topic: str, payload: bytes | str, *, retain: bool = False) -> None:
        info = self._client.publish(topic, payload, qos=1, retain=retain)
        info.wait_for_publish(10)

    def on(self, topic: str) -> list[Seen]:
        with self._lock:
            return [m for m in self.messages if m.topic == topic]

    def latest(self, topic: str) -> Seen | None:
        seen = self.on(topic)
        return seen[-1] if seen else None

    def wait_for(
        self, topic: str, predicate: Callable[[Seen], bool] = lambda _: True, timeout: float = 10.0
    ) -> Seen:
        """The first message on `topic` (already seen or arriving) that satisfies predicate."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                for message in self.messages:
                    if message.topic == topic and predicate(message):
                        return message
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    seen = [m.payload[:200] for m in self.messages if m.topic == topic]
                    raise TimeoutError(f"nothing matching on {topic} within {timeout}s; saw {seen}")
                self._lock.wait(remaining)

    async def wait(
        self, topic: str, predicate: Callable[[Seen], bool] = lambda _: True, timeout: float = 10.0
    ) -> Seen:
        """wait_for without blocking the event loop (the service may share it)."""
        return await asyncio.to_thread(self.wait_for, topic, predicate, timeout)

    async def roundtrip(self, timeout: float = 10.0) -> None:
        """Publishes a probe under the first subscription and waits for it to come back, so
        that whatever reached the broker before it has been seen."""
        probe = self._subscriptions[0].rstrip("#").rstrip("/") + f"/probe/{uuid.uuid4().hex}"
        self.publish(probe, b"probe")
        await self.wait(probe, timeout=timeout)

    def clear(self) -> None:
        with self._lock:
            self.messages.clear()
