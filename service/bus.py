"""The MQTT client's lifetime: connect with backoff, keep the retained topics, dispatch.

`MqttBus` owns one paho connection at a time and drives it from the asyncio event loop
through paho's external-loop hooks (as paho's own asyncio example does): the socket's reader
and writer are registered with the loop, and a timer keeps the connection alive.

Why not a wrapper library: a load manager must answer a meter reading in the loop turn its
bytes arrive. Here each message is handed to the callback from the socket's read callback
itself (no queue, no task per message); reads come in slices of MAX_PACKETS_PER_READ packets,
so that several connections of one process take turns (service.control_lane gives meter
readings a connection of their own); and a burst of commands is written at once
(`flush`, in as few TCP segments as fit) instead of one packet per loop turn. paho remains the
MQTT implementation; this module is only the glue.

It remembers every retained topic it was asked to hold and re-publishes them all after each
(re)connect, so a broker restart (which may lose retained messages) heals by itself. A
callback that raises is logged and counted as a rejection, never fatal.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import select
import socket
import ssl
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
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
CONNECT_TIMEOUT_S = 10.0
KEEPALIVE_S = 15
# Packets read (and dispatched) in one turn of the event loop when more are waiting: a burst
# of a thousand EVSE reports takes a few turns, not a thousand, and the other connections of
# the process (the control lane's meter reading) get theirs in between.
MAX_PACKETS_PER_READ = 64


class BusError(Exception):
    """No connection, or the broker refused or did not acknowledge in time."""


@dataclass
class BusStats:
    received: int = 0
    rejected: int = 0
    published: int = 0
    connects: int = 0
    last_rejection: str = ""
    rejected_by_reason: dict[str, int] = field(default_factory=dict)

    def plus(self, other: BusStats) -> BusStats:
        """The counts of two connections together (the core's main one and its lane)."""
        reasons = dict(self.rejected_by_reason)
        for reason, count in other.rejected_by_reason.items():
            reasons[reason] = reasons.get(reason, 0) + count
        return BusStats(
            self.received + other.received,
            self.rejected + other.rejected,
            self.published + other.published,
            self.connects + other.connects,
            other.last_rejection or self.last_rejection,
            reasons,
        )

    def reject(self, reason: str, detail: str) -> None:
        self.rejected += 1
        self.rejected_by_reason[reason] = self.rejected_by_reason.get(reason, 0) + 1
        self.last_rejection = detail


@dataclass(frozen=True)
class LastWill:
    topic: str
    payload: bytes


def _as_filter(subscription: Subscription) -> tuple[str, int]:
    return (subscription, 1) if isinstance(subscription, str) else subscription


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
        self._subscriptions = [_as_filter(s) for s in subscriptions]
        self._on_message = on_message
        self._will = will
        self._tls_ca_file = tls_ca_file
        self._tls_cert_file = tls_cert_file
        self._tls_key_file = tls_key_file
        self._max_backoff = max_backoff
        self._retained: dict[str, tuple[bytes, int]] = {}
        self._link: _Link | None = None
        self._task: asyncio.Task[None] | None = None
        self._resubscribe: asyncio.Task[None] | None = None
        self.connected = asyncio.Event()
        # Topic filters the broker acknowledged on the current connection.
        self.active: set[str] = set()
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
        if self._link is not None and self._will is not None:
            # A clean disconnect suppresses the will, so say goodbye ourselves.
            with contextlib.suppress(BusError, TimeoutError):
                await self.publish(self._will.topic, self._will.payload, retain=True, timeout=2)
        if self._resubscribe is not None:
            self._resubscribe.cancel()
        if self._task is not None:
            self._task.cancel()
            # Bounded: a broker that never answers the disconnect must not hold up the stop.
            done, _ = await asyncio.wait({self._task}, timeout=STOP_TIMEOUT_S)
            if not done:
                log.warning("MQTT connection %s did not close in time", self._client_id)

    @property
    def subscriptions(self) -> list[str]:
        """The topic filters wanted (acknowledged or not)."""
        return [f for f, _ in self._subscriptions]

    async def wait_connected(self, timeout: float) -> None:
        await asyncio.wait_for(self.connected.wait(), timeout)

    # -- subscriptions -----------------------------------------------------------------------

    def replace_subscriptions(self, subscriptions: Sequence[Subscription]) -> None:
        """From now on (and after every reconnect) these topic filters; on a live connection
        the difference is subscribed and unsubscribed at once. `active` shows what the broker
        has acknowledged."""
        wanted = [_as_filter(s) for s in subscriptions]
        if wanted == self._subscriptions:
            return
        self._subscriptions = wanted
        self._schedule_subscriptions()

    def _schedule_subscriptions(self) -> None:
        link = self._link
        if not self.connected.is_set() or link is None:
            return  # the connection being made subscribes to what is wanted then
        if self._resubscribe is None or self._resubscribe.done():
            self._resubscribe = asyncio.get_running_loop().create_task(
                self._apply_subscriptions(link), name=f"mqtt-subscribe-{self._client_id}"
            )

    async def _apply_subscriptions(self, link: _Link) -> None:
        # Repeats until what the broker has matches the wish, which may move meanwhile.
        try:
            while self._link is link:
                wanted = dict(self._subscriptions)
                gone = [f for f in self.active if f not in wanted]
                new = [(f, q) for f, q in wanted.items() if f not in self.active]
                if not gone and not new:
                    return
                log.debug(
                    "%s: subscribing to %d, unsubscribing from %d topic filters",
                    self._client_id,
                    len(new),
                    len(gone),
                )
                if gone:
                    await link.unsubscribe(gone)
                    self.active.difference_update(gone)
                if new:
                    await link.subscribe(new)
                    self.active.update(f for f, _ in new)
        except (BusError, TimeoutError) as exc:
            # The connection is going; the next one subscribes to everything anyway.
            log.warning("MQTT subscription change on %s failed: %s", self._client_id, exc)

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
        """Queues the message without waiting for the broker's ack, so a burst goes out back
        to back (written on the loop's next turn, or at `flush`). False when there is no
        connection (a retained topic is sent on the next connect anyway)."""
        # Not `connected`: retained messages are handled (and may be answered) as they arrive
        # with the SUBACK, before the connection counts as set up.
        link = self._link
        if link is None or link.lost.done():
            return False
        if not link.publish(topic, payload, qos=qos, retain=retain):
            return False
        self.stats.published += 1
        return True

    async def publish(
        self, topic: str, payload: bytes, *, retain: bool = False, qos: int = 1, timeout: float = 10
    ) -> None:
        """Publishes and waits for the broker's acknowledgement (QoS ≥ 1); raises BusError if
        not connected, TimeoutError without an answer in `timeout` seconds."""
        link = self._link
        if link is None:
            raise BusError("not connected")
        await link.publish_acknowledged(topic, payload, qos=qos, retain=retain, timeout=timeout)
        self.stats.published += 1

    def flush(self) -> None:
        """Writes what is queued now, in this turn of the loop: a burst of commands goes out
        ahead of any other work, in as few TCP segments as the socket takes."""
        if self._link is not None:
            self._link.flush()

    # -- the connection ----------------------------------------------------------------------

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
                retry=retry_if_exception_type((BusError, OSError, TimeoutError)),
                before_sleep=log_retry,
            ):
                with attempt:
                    await self._session()

    async def _session(self) -> None:
        """One connection. Raises if connecting fails; returns when an established
        connection is lost."""
        link = _Link(self._make_client(), self._dispatch, asyncio.get_running_loop())
        try:
            await link.connect(self._target.host, self._target.port)
            self._link = link
            self.stats.connects += 1
            self.active = set()
            # What is wanted may change while the broker answers (retained configs are
            # handled as they arrive): `active` is what was asked for here.
            asked = list(self._subscriptions)
            if asked:
                await link.subscribe(asked)
                self.active = {f for f, _ in asked}
            for topic, (payload, qos) in list(self._retained.items()):
                link.publish(topic, payload, qos=qos, retain=True)
            self.connected.set()
            log.info("MQTT connected to %s", self._target.redacted())
            # What changed while subscribing.
            self._schedule_subscriptions()
            reason = await link.lost
            log.warning("MQTT connection to %s lost: %s", self._target.redacted(), reason)
        finally:
            self.connected.clear()
            self.active = set()
            self._link = None
            await link.close()

    def _make_client(self) -> paho.Client:
        target = self._target
        client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self._client_id,
            protocol=paho.MQTTv311,
            clean_session=True,
        )
        if target.username is not None:
            client.username_pw_set(target.username, target.password)
        if self._will is not None:
            client.will_set(self._will.topic, self._will.payload, qos=1, retain=True)
        if target.tls:
            # No CA file means the system's trusted CAs; the broker's certificate is always
            # verified, hostname included. A client certificate is optional.
            client.tls_set(
                ca_certs=self._tls_ca_file,
                certfile=self._tls_cert_file,
                keyfile=self._tls_key_file,
                cert_reqs=ssl.CERT_REQUIRED,
            )
        # A run may change a thousand commands: paho's default window of 20 unacknowledged
        # QoS 1 messages would make them queue for round trips (0 = no window).
        client.max_inflight_messages_set(0)
        client.connect_timeout = CONNECT_TIMEOUT_S
        return client

    def _dispatch(self, topic: str, payload: bytes, retained: bool) -> None:
        self.stats.received += 1
        try:
            self._on_message(topic, payload, retained)
        except Exception as exc:
            self.stats.reject("handler_error", f"{topic}: {exc}")
            log.exception("handling %s failed", topic)


class _Link:
    """One paho client on the event loop: its socket's reader and writer, the keep-alive
    timer, and futures for what the broker acknowledges (CONNACK, SUBACK, PUBACK)."""

    def __init__(
        self, client: paho.Client, dispatch: MessageHandler, loop: asyncio.AbstractEventLoop
    ) -> None:
        self.client = client
        self._dispatch = dispatch
        self._loop = loop
        self._loop_thread = threading.get_ident()
        self._sock: Any = None
        self._misc: asyncio.Task[None] | None = None
        self._connack: asyncio.Future[None] = loop.create_future()
        self.lost: asyncio.Future[str] = loop.create_future()
        self._acks: dict[int, asyncio.Future[list[ReasonCode]]] = {}
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_subscribe = self._on_ack_list
        client.on_unsubscribe = self._on_ack_list
        client.on_socket_open = self._on_socket_open
        client.on_socket_close = self._on_socket_close
        client.on_socket_register_write = self._on_register_write
        client.on_socket_unregister_write = self._on_unregister_write
        # on_publish is set only while a publish waits for its PUBACK: paho makes two objects
        # for every packet it writes when it is set, a thousand per burst of commands.

    # -- paho's callbacks (on the loop's thread, except while connect() runs) -----------------

    def _in_loop(self, call: Callable[[], object]) -> None:
        if threading.get_ident() == self._loop_thread:
            call()
        else:
            self._loop.call_soon_threadsafe(call)

    def _on_socket_open(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        def opened() -> None:
            self._sock = sock
            # Small publishes in a burst must not wait for the peer's delayed ACKs (Nagle).
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._loop.add_reader(sock.fileno(), self._readable)
            self._misc = self._loop.create_task(self._keep_alive())

        self._in_loop(opened)

    def _on_socket_close(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        def closed() -> None:
            fileno = sock.fileno()
            if fileno >= 0:
                self._loop.remove_reader(fileno)
                self._loop.remove_writer(fileno)
            if self._misc is not None:
                self._misc.cancel()
            self._sock = None
            self._set_lost("socket closed")

        self._in_loop(closed)

    def _on_register_write(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        self._in_loop(lambda: self._loop.add_writer(sock.fileno(), self._writable))

    def _on_unregister_write(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        self._in_loop(lambda: self._loop.remove_writer(sock.fileno()))

    def _on_connect(
        self,
        client: paho.Client,
        userdata: Any,
        flags: Any,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        def answered() -> None:
            if self._connack.done():
                return
            if reason.is_failure:
                _fail(self._connack, BusError(f"broker refused the connection: {reason}"))
            else:
                self._connack.set_result(None)

        self._in_loop(answered)

    def _on_disconnect(
        self,
        client: paho.Client,
        userdata: Any,
        flags: Any,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        self._in_loop(lambda: self._set_lost(str(reason)))

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        self._dispatch(message.topic, bytes(message.payload), message.retain)

    def _on_ack_list(
        self,
        client: paho.Client,
        userdata: Any,
        mid: int,
        reasons: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        future = self._acks.pop(mid, None)
        if future is not None and not future.done():
            future.set_result(reasons)

    def _on_publish(
        self,
        client: paho.Client,
        userdata: Any,
        mid: int,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        future = self._acks.pop(mid, None)
        if future is not None and not future.done():
            future.set_result([reason])
        if not self._acks:
            client.on_publish = None

    def _set_lost(self, reason: str) -> None:
        if not self._connack.done():
            _fail(self._connack, BusError(f"connection closed: {reason}"))
        if not self.lost.done():
            self.lost.set_result(reason)
        for future in self._acks.values():
            if not future.done():
                future.set_exception(BusError(f"connection lost: {reason}"))
        self._acks.clear()

    # -- socket events ----------------------------------------------------------------------

    def _readable(self) -> None:
        """Reads and dispatches up to MAX_PACKETS_PER_READ waiting packets."""
        try:
            for _ in range(MAX_PACKETS_PER_READ):
                if self.client.loop_read() != MQTTErrorCode.MQTT_ERR_SUCCESS:
                    return
                if not _more_waiting(self._sock):
                    return
            if _tls_pending(self._sock):
                # Decrypted bytes wait in the SSL object: the socket will not call again.
                self._loop.call_soon(self._readable)
        except Exception as exc:  # paho raises what the socket raises (BrokenPipe, SSL).
            self._set_lost(repr(exc))
            self.client.disconnect()

    def _writable(self) -> None:
        try:
            self.client.loop_write()
        except Exception as exc:
            self._set_lost(repr(exc))

    def flush(self) -> None:
        sock = self._sock
        if sock is None or not self.client.want_write():
            return
        # Corked, a burst leaves in full segments: the broker is woken a few times, not once
        # per command.
        cork = hasattr(socket, "TCP_CORK")
        try:
            if cork:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
            self.client.loop_write()
        except Exception as exc:
            self._set_lost(repr(exc))
        finally:
            if cork and self._sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 0)

    async def _keep_alive(self) -> None:
        # paho's own timer: pings when due, closes a connection whose pings go unanswered.
        while self.client.loop_misc() == MQTTErrorCode.MQTT_ERR_SUCCESS:  # noqa: ASYNC110
            await asyncio.sleep(1)

    # -- requests ---------------------------------------------------------------------------

    async def connect(self, host: str, port: int) -> None:
        # paho's connect() resolves the name and opens the socket (TLS handshake included):
        # blocking, so in a thread; its socket callbacks come back to the loop.
        await asyncio.wait_for(
            asyncio.to_thread(self.client.connect, host, port, KEEPALIVE_S),
            CONNECT_TIMEOUT_S,
        )
        await asyncio.wait_for(asyncio.shield(self._connack), CONNECT_TIMEOUT_S)

    def publish(self, topic: str, payload: bytes, *, qos: int, retain: bool) -> bool:
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        return info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS

    async def publish_acknowledged(
        self, topic: str, payload: bytes, *, qos: int, retain: bool, timeout: float
    ) -> None:
        if qos == 0:
            if not self.publish(topic, payload, qos=0, retain=retain):
                raise BusError("not connected")
            return
        self.client.on_publish = self._on_publish
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise BusError(f"publish failed: {paho.error_string(info.rc)}")
        await self._acknowledged(info.mid, timeout)

    async def subscribe(self, filters: list[tuple[str, int]]) -> None:
        rc, mid = self.client.subscribe(filters)
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or mid is None:
            raise BusError(f"subscribe failed: {paho.error_string(rc)}")
        reasons = await self._acknowledged(mid, CONNECT_TIMEOUT_S)
        refused = [f for (f, _), r in zip(filters, reasons, strict=False) if r.is_failure]
        if refused:
            raise BusError(f"the broker refused the subscription to {', '.join(refused)}")

    async def unsubscribe(self, filters: list[str]) -> None:
        rc, mid = self.client.unsubscribe(filters)
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or mid is None:
            raise BusError(f"unsubscribe failed: {paho.error_string(rc)}")
        await self._acknowledged(mid, CONNECT_TIMEOUT_S)

    async def _acknowledged(self, mid: int, timeout: float) -> list[ReasonCode]:
        if self.lost.done():
            raise BusError("connection lost")
        future = self._acks.get(mid)
        if future is None:
            future = self._loop.create_future()
            self._acks[mid] = future
        try:
            return await asyncio.wait_for(future, timeout)
        finally:
            self._acks.pop(mid, None)
            if not self._acks:
                self.client.on_publish = None

    async def close(self) -> None:
        """Disconnects (a clean DISCONNECT: the broker drops the will) and releases the
        socket."""
        if self._sock is not None:
            with contextlib.suppress(Exception):
                self.client.disconnect()
                self.flush()
        sock = self._sock
        if sock is not None:
            # paho closes the socket when it reads the broker's close; bounded wait for it.
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(self.lost), 1.0)
        if self._sock is not None:
            fileno = self._sock.fileno()
            if fileno >= 0:
                self._loop.remove_reader(fileno)
                self._loop.remove_writer(fileno)
            with contextlib.suppress(OSError):
                self._sock.close()
            self._sock = None
        if self._misc is not None:
            self._misc.cancel()
        self._set_lost("closed")


def _fail(future: asyncio.Future[None], exc: BaseException) -> None:
    """Fails `future` for whoever awaits it; nobody may (a connect that timed out), and then
    asyncio must not log it as an exception never retrieved."""
    future.set_exception(exc)
    future.exception()


def _tls_pending(sock: Any) -> bool:
    pending = getattr(sock, "pending", None)
    return pending is not None and pending() > 0


def _more_waiting(sock: Any) -> bool:
    if sock is None:
        return False
    # TLS: bytes already decrypted wait in the SSL object, not in the socket.
    if _tls_pending(sock):
        return True
    readable, _, _ = select.select([sock], [], [], 0)
    return bool(readable)
