"""set_ajax_meter / set_ajax_evse handled by HTTP-input bridge processes elsewhere.

With `http_input_remote`, the core's /cnf does not run the HTTP-input bridge in-process: it
forwards each request as `{id, reply_to, cmd, dev_id, values, from_query}` to
`{base}/rpc/http-input/request` and answers with the `{id, status, body}` that comes back.

Bridge processes (`chargebus bridge http` with `http_input_remote`) subscribe to that topic
through the shared subscription `$share/http-input/...`: the broker hands each request to
exactly one of them, so any number of them share the load and any one of them may go away.
mosquitto (1.6 and later) shares for MQTT 3.1.1 clients too, as EMQX, HiveMQ and VerneMQ do.

Each bridge runs a request through its own `HttpInputBridge` (publish the state, wait for the
command that answers it) and replies with `by` naming itself. It replies only under
`{base}/rpc/reply/`: a forged `reply_to` must not make it publish onto a device's topics.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bridges.http_input import COMMANDS, HttpInputBridge, InputError, request_values, serve
from service.bus import MqttBus
from service.bus_setup import make_bus
from service.rpc_client import RpcClient, RpcTimeout, reply_prefix, request_topic
from service.settings import Settings
from service.topics import Topics

log = logging.getLogger(__name__)

HTTP_INPUT_BRIDGE = "http-input"
SHARE_GROUP = "http-input"
# Longer than the bridge's own wait for the core's command (HttpInputBridge.answer_timeout),
# so that the bridge's 504 reaches the client rather than a bare "no bridge answered".
FORWARD_TIMEOUT = 5.0


def shared_subscription(topics: Topics) -> str:
    return f"$share/{SHARE_GROUP}/{request_topic(topics, HTTP_INPUT_BRIDGE)}"


# -- the core's side -------------------------------------------------------------------------


async def forward_request(
    rpc: RpcClient,
    cmd: str,
    dev_id: str,
    method: str,
    query: Mapping[str, str],
    body: bytes,
    *,
    dev_type: str | None = None,
    timeout: float = FORWARD_TIMEOUT,
) -> Any:
    """One set_ajax_* request, answered by whichever bridge process takes it. `dev_type`
    (the device's type as the core has it now) travels along: a device added a moment ago
    may not have reached the bridge's retained configs yet."""
    values, from_query = request_values(method, query, body)
    fields: dict[str, Any] = {
        "cmd": cmd,
        "dev_id": dev_id,
        "values": values,
        "from_query": from_query,
    }
    if dev_type is not None:
        fields["dev_type"] = dev_type
    try:
        reply = await rpc.call(fields, timeout=timeout)
    except RpcTimeout as exc:
        raise InputError(504, f"{exc} (is a `chargebus bridge http` process running?)") from None
    if reply.status != 200:
        raise InputError(reply.status, str(reply.body))
    return reply.body


class RemoteHttpInput:
    """The /cnf adapter's HttpInput with http_input_remote: each request goes to a bridge
    process over the bus."""

    def __init__(self, rpc: RpcClient) -> None:
        self.rpc = rpc

    async def handle_request(
        self,
        cmd: str,
        dev_id: str,
        method: str,
        query: Mapping[str, str],
        body: bytes,
        *,
        dev_type: str | None = None,
    ) -> Any:
        return await forward_request(self.rpc, cmd, dev_id, method, query, body, dev_type=dev_type)


# -- the bridge's side -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RemoteRequest:
    id: int
    reply_to: str
    cmd: str
    dev_id: str
    values: Any
    from_query: bool
    # The device's type as the core has it configured (only the core may publish requests:
    # mosquitto/acl); None from a core that does not send it.
    dev_type: str | None = None


def parse_request(payload: bytes, allowed_reply_prefix: str) -> RemoteRequest | None:
    """A request message → RemoteRequest; None when it can't be answered at all (no id, or
    a reply topic outside `allowed_reply_prefix`)."""
    try:
        data = json.loads(payload)
        request_id = data["id"]
        reply_to = data["reply_to"]
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        return None
    if not isinstance(request_id, int) or isinstance(request_id, bool):
        return None
    if (
        not isinstance(reply_to, str)
        or not reply_to.startswith(allowed_reply_prefix)
        or any(c in reply_to for c in "+#")
    ):
        return None
    cmd, dev_id, dev_type = data.get("cmd"), data.get("dev_id"), data.get("dev_type")
    return RemoteRequest(
        id=request_id,
        reply_to=reply_to,
        cmd=cmd if isinstance(cmd, str) else "",
        dev_id=dev_id if isinstance(dev_id, str) else "",
        values=data.get("values"),
        from_query=data.get("from_query") is True,
        dev_type=dev_type if isinstance(dev_type, str) else None,
    )


async def dispatch(bridge: HttpInputBridge, request: RemoteRequest) -> tuple[int, Any]:
    """Runs a request through the bridge → (status, body) as /cnf would answer it."""
    if not request.dev_id and request.cmd in COMMANDS:
        return 400, "missing parameter 'dev_id'"
    try:
        body = await serve(
            bridge,
            request.cmd,
            request.dev_id,
            request.values,
            from_query=request.from_query,
            dev_type=request.dev_type,
        )
    except InputError as exc:
        return exc.status, exc.message
    return 200, body


class HttpInputRpcServer:
    """One bridge process's member of the shared group."""

    def __init__(self, bridge: HttpInputBridge, name: str) -> None:
        self.bridge = bridge
        self.name = name
        self.topics = bridge.topics
        self.request_topic = request_topic(self.topics, HTTP_INPUT_BRIDGE)
        self._reply_prefix = reply_prefix(self.topics)
        self._bus: MqttBus | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.handled = 0
        self.refused = 0

    def subscriptions(self) -> list[str]:
        return [shared_subscription(self.topics), *self.bridge.subscriptions()]

    def attach(self, bus: MqttBus) -> None:
        self._bus = bus
        self.bridge.attach(bus)

    def on_message(self, topic: str, payload: bytes, retained: bool) -> None:
        if topic != self.request_topic:
            self.bridge.on_message(topic, payload, retained)
            return
        request = parse_request(payload, self._reply_prefix)
        if request is None:
            self.refused += 1
            log.warning("dropped an HTTP-input request without id or with a foreign reply_to")
            return
        # Each request waits for its command on its own: one slow device holds up no other.
        task = asyncio.create_task(self._serve(request), name=f"http-input-{request.id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, request: RemoteRequest) -> None:
        try:
            status, body = await dispatch(self.bridge, request)
        except Exception as exc:
            log.exception("HTTP-input request %d for %s failed", request.id, request.dev_id)
            status, body = 500, f"the HTTP-input bridge failed: {exc}"
        self.handled += 1
        reply = {"id": request.id, "status": status, "body": body, "by": self.name}
        bus = self._bus
        if bus is None or not bus.publish_nowait(
            request.reply_to, json.dumps(reply, separators=(",", ":")).encode(), qos=1
        ):
            log.warning("HTTP-input reply %d lost: not connected to the broker", request.id)

    async def close(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task


def bridge_name() -> str:
    """Unique per process, so replies tell which member of the group answered."""
    return f"{socket.gethostname()}-{os.getpid()}"


async def run_rpc_bridge(settings: Settings, stop: asyncio.Event) -> None:
    """A member of the shared HTTP-input group until `stop`; it serves no HTTP port itself:
    the core's /cnf takes the requests (and checks the admin password)."""
    target = settings.mqtt_target()
    if target is None:
        raise ValueError("the HTTP-input bridge needs the broker's URL (CHARGEBUS_MQTT_URL)")
    topics = Topics(settings.base_topic)
    server = HttpInputRpcServer(HttpInputBridge(topics), bridge_name())
    bus = make_bus(
        settings,
        target,
        "bridge-http-input",
        subscriptions=server.subscriptions(),
        on_message=server.on_message,
    )
    async with bus:
        server.attach(bus)
        try:
            if await _connected_or_stopped(bus, stop):
                log.info(
                    "HTTP-input bridge %s ready: shared group %r on %s, MQTT %s",
                    server.name,
                    SHARE_GROUP,
                    server.request_topic,
                    target.redacted(),
                )
            await stop.wait()
        finally:
            await server.close()
            log.info(
                "HTTP-input bridge %s handled %d requests (%d dropped)",
                server.name,
                server.handled,
                server.refused,
            )


async def _connected_or_stopped(bus: MqttBus, stop: asyncio.Event) -> bool:
    """Waits for the first connection (the bus keeps retrying) unless stopped first."""
    connected = asyncio.create_task(bus.connected.wait())
    stopped = asyncio.create_task(stop.wait())
    await asyncio.wait({connected, stopped}, return_when=asyncio.FIRST_COMPLETED)
    for task in (connected, stopped):
        task.cancel()
    return bus.connected.is_set()
