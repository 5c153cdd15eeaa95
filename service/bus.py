"""The MQTT client's lifetime: connect with backoff, keep the retained topics, dispatch.

`MqttBus` owns one aiomqtt connection at a time. It remembers every retained topic it was
asked to hold and re-publishes them all after each (re)connect, so a broker restart (which
may lose retained messages) heals by itself. Incoming messages are handed to a callback;
a callback that raises is logged and counted as a rejection, never fatal.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import select
import socket
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Self

import aiomqtt
import paho.mqtt.client as paho
from paho.mqtt.enums import MQTTErrorCode
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    wait_exponential_jitter,
)

from service.settings import MqttTarget

log = logging.getLogger(__name__)

MessageHandler = Callable[[str, bytes, bool], None]
# A topic filter, subscribed at QoS 1, or (filter, QoS).
Subscription = str | tuple[str, int]
STOP_TIMEOUT_S = 3.0
# Packets read from the socket in one go when more are waiting (see read_greedily).
MAX_PACKETS_PER_READ = 2000


@dataclass
class BusStats:
    received: int = 0
    rejected: int = 0
    published: int = 0
    connects: int = 0
    last_rejection: str = ""
    rejected_by_reason: dict[str, int] = field(default_factory=dict)

    def reject(self, reason: str, detail: str) -> None:
        self.rejected += 1
        self.rejected_by_reason[reason] = self.rejected_by_reason.get(reason, 0) + 1
        self.last_rejection = detail


@dataclass(frozen=True)
class LastWill:
    topic: str
    payload: bytes


class MqttBus:
    def __init__(
        self,
        target: MqttTarget,
        *,
        client_id: str,
        subscriptions: Sequence[Subscription],
        on_message: MessageHandler,
        will: LastWill | None = None,
        tls_ca_file: str | None = None,
        tls_cert_file: str | None = None,
        tls_key_file: str | None = None,
        max_backoff: float = 5.0,
    ) -> None:
        self._target = target
        self._client_id = client_id
        self._subscriptions = subscriptions
        self._on_message = on_message
        self._will = will
        self._tls_ca_file = tls_ca_file
        self._tls_cert_file = tls_cert_file
        self._tls_key_file = tls_key_file
        self._max_backoff = max_backoff
        self._retained: dict[str, tuple[bytes, int]] = {}
        self._client: aiomqtt.Client | None = None
        self._task: asyncio.Task[None] | None = None
        self.connected = asyncio.Event()
        self.stats = BusStats()

    async def __aenter__(self) -> Self:
        self._task = asyncio.create_task(self._run(), name=f"mqtt-{self._client_id}")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        client = self._client
        if client is not None and self._will is not None:
            # A clean disconnect suppresses the will, so say goodbye ourselves.
            with contextlib.suppress(aiomqtt.MqttError, asyncio.TimeoutError):
                await client.publish(
                    self._will.topic, self._will.payload, qos=1, retain=True, timeout=2
                )
        if self._task is not None:
            self._task.cancel()
            # Bounded: a broker that never answers the disconnect must not hold up the stop.
            done, _ = await asyncio.wait({self._task}, timeout=STOP_TIMEOUT_S)
            if not done:
                log.warning("MQTT connection %s did not close in time", self._client_id)

    async def wait_connected(self, timeout: float) -> None:
        await asyncio.wait_for(self.connected.wait(), timeout)

    # -- publishing ------------------------------------------------------------------------

    def hold_retained(self, topic: str, payload: bytes | None, *, qos: int = 1) -> None:
        """Keep `topic` retained with `payload` (None/empty clears it) across reconnects."""
        if payload:
            self._retained[topic] = (payload, qos)
        else:
            self._retained.pop(topic, None)
        self.publish_nowait(topic, payload or b"", retain=True, qos=qos)

    def publish_nowait(
        self, topic: str, payload: bytes, *, retain: bool = False, qos: int = 1
    ) -> bool:
        """Hands the message to the connection without waiting for the broker's ack, so a
        burst goes out back to back. False when there is no connection (a retained topic is
        sent on the next connect anyway)."""
        client = self._client
        if client is None or not self.connected.is_set():
            return False
        # paho queues the bytes synchronously; aiomqtt's publish() would only add awaiting.
        info = client._client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc != 0:
            return False
        self.stats.published += 1
        return True

    async def publish(
        self, topic: str, payload: bytes, *, retain: bool = False, qos: int = 1, timeout: float = 10
    ) -> None:
        """Publishes and waits for the broker's acknowledgement; raises if not connected."""
        client = self._client
        if client is None:
            raise aiomqtt.MqttError("not connected")
        await client.publish(topic, payload, qos=qos, retain=retain, timeout=timeout)
        self.stats.published += 1

    # -- the connection ----------------------------------------------------------------------

    def _make_client(self) -> aiomqtt.Client:
        target = self._target
        tls_params = None
        if target.tls:
            # No CA file means the system's trusted CAs; the broker's certificate is always
            # verified, hostname included. A client certificate is optional.
            tls_params = aiomqtt.TLSParameters(
                ca_certs=self._tls_ca_file,
                certfile=self._tls_cert_file,
                keyfile=self._tls_key_file,
                cert_reqs=ssl.CERT_REQUIRED,
            )
        will = (
            aiomqtt.Will(self._will.topic, self._will.payload, qos=1, retain=True)
            if self._will
            else None
        )
        return aiomqtt.Client(
            target.host,
            target.port,
            username=target.username,
            password=target.password,
            identifier=self._client_id,
            will=will,
            keepalive=15,
            timeout=10,
            tls_params=tls_params,
            # A run may change a thousand commands: paho's default window of 20 unacknowledged
            # QoS 1 messages would make them queue for round trips (0 = no window).
            max_inflight_messages=0,
            # Small publishes in a burst must not wait for the peer's delayed ACKs (Nagle).
            socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
        )

    async def _run(self) -> None:
        def log_retry(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            log.warning(
                "MQTT broker %s not reachable (%s); retrying in %.1f s",
                self._target.redacted(),
                exc,
                state.next_action.sleep if state.next_action else 0,
            )

        while True:
            # A fresh retry state per connection episode, so backoff restarts small after
            # a connection that worked.
            async for attempt in AsyncRetrying(
                wait=wait_exponential_jitter(multiplier=0.1, max=self._max_backoff, jitter=0.2),
                retry=retry_if_exception_type((aiomqtt.MqttError, OSError)),
                before_sleep=log_retry,
            ):
                with attempt:
                    await self._session()

    async def _session(self) -> None:
        """One connection. Raises if connecting fails; returns when an established
        connection is lost."""
        client = self._make_client()
        read_greedily(client._client)
        async with client:
            try:
                self._client = client
                self.stats.connects += 1
                if self._subscriptions:
                    await client.subscribe(
                        [(t, 1) if isinstance(t, str) else t for t in self._subscriptions]
                    )
                for topic, (payload, qos) in list(self._retained.items()):
                    client._client.publish(topic, payload, qos=qos, retain=True)
                self.connected.set()
                log.info("MQTT connected to %s", self._target.redacted())
                queue = client._queue
                async for message in client.messages:
                    self._dispatch(message)
                    # aiomqtt's iterator makes a task and a wait for every message, so other
                    # tasks (a control-loop run) would get in between any two of a burst:
                    # what is queued already is dispatched at once.
                    while not queue.empty():
                        self._dispatch(queue.get_nowait())
            except aiomqtt.MqttError as exc:
                log.warning("MQTT connection to %s lost: %s", self._target.redacted(), exc)
            finally:
                self.connected.clear()
                self._client = None

    def _dispatch(self, message: aiomqtt.Message) -> None:
        self.stats.received += 1
        payload = message.payload
        data = payload if isinstance(payload, bytes) else str(payload or "").encode()
        try:
            self._on_message(str(message.topic), data, bool(message.retain))
        except Exception as exc:
            self.stats.reject("handler_error", f"{message.topic}: {exc}")
            log.exception("handling %s failed", message.topic)


def read_greedily(client: paho.Client) -> None:
    """Makes the asyncio reader of `client` take every packet that is waiting, not one.

    aiomqtt calls paho's loop_read() once per readiness of the socket, and paho reads one
    packet per call. A burst of a thousand EVSE reports then takes a thousand turns of the
    event loop, and a control-loop run can start between any two of them: hundreds of runs
    that each see a report or two more, with the meter reading that follows the burst
    waiting behind all of them. Read greedily, the burst (and the meter reading) reach the
    handlers in one go, and one run answers them all.
    """
    original = client.loop_read

    def loop_read(max_packets: int = 1) -> MQTTErrorCode:
        rc = original(max_packets)
        for _ in range(MAX_PACKETS_PER_READ):
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or not _more_waiting(client):
                break
            rc = original(max_packets)
        return rc

    client.loop_read = loop_read  # type: ignore[method-assign]


def _more_waiting(client: paho.Client) -> bool:
    sock = client.socket()
    if sock is None:
        return False
    # TLS: bytes already decrypted wait in the SSL object, not in the socket.
    pending = getattr(sock, "pending", None)
    if pending is not None and pending() > 0:
        return True
    readable, _, _ = select.select([sock], [], [], 0)
    return bool(readable)
