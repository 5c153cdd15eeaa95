"""Requests to a bridge over the bus, answered on a reply topic of this client's own.

A request `{id, reply_to, ...fields}` goes to `{base}/rpc/{bridge}/request`; the bridge that
takes it answers `{id, status, body}` on `reply_to` (`{base}/rpc/reply/{client}`). Which
bridge process takes it is the broker's business: one subscriber, or a shared subscription
that hands each request to exactly one member of the group.

Generic over the request's fields, so that every RPC of the core (cmd=modbus,
set_ajax_*) can use it; `RpcClient` knows nothing of what the fields mean.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from service.bus import MqttBus
from service.topics import Topics

log = logging.getLogger(__name__)

# The fields the client sets itself; a caller's fields must not shadow them.
_ENVELOPE = frozenset({"id", "reply_to"})


@dataclass(frozen=True, slots=True)
class RpcReply:
    status: int
    body: Any
    # Which bridge process answered (optional in the reply): where a shared group's load goes.
    by: str = ""


class RpcTimeout(Exception):
    pass


def request_topic(topics: Topics, bridge: str) -> str:
    return f"{topics.base}/rpc/{bridge}/request"


def reply_prefix(topics: Topics) -> str:
    """Every reply topic begins with this; a bridge answers nowhere else."""
    return f"{topics.base}/rpc/reply/"


def parse_reply(payload: bytes) -> tuple[int, RpcReply] | None:
    """`{id, status, body[, by]}` → (id, reply); None if malformed."""
    try:
        data = json.loads(payload)
        by = data.get("by", "")
        return int(data["id"]), RpcReply(int(data["status"]), data["body"], str(by))
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


class RpcClient:
    def __init__(self, topics: Topics, client: str, bridge: str) -> None:
        self.topics = topics
        self.bridge = bridge
        self.reply_topic = reply_prefix(topics) + client
        self.request_topic = request_topic(topics, bridge)
        self.bus: MqttBus | None = None
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[RpcReply]] = {}

    def subscriptions(self) -> list[str]:
        return [self.reply_topic]

    def attach(self, bus: MqttBus) -> None:
        self.bus = bus

    def on_message(self, topic: str, payload: bytes, retained: bool) -> None:
        if topic != self.reply_topic:
            return
        parsed = parse_reply(payload)
        if parsed is None:
            log.warning("rejected %s reply: not {id, status, body}", self.bridge)
            return
        request_id, reply = parsed
        future = self._waiting.get(request_id)
        if future is not None and not future.done():
            future.set_result(reply)

    async def call(self, fields: Mapping[str, Any], *, timeout: float = 5.0) -> RpcReply:
        """Sends one request and waits for its reply; RpcTimeout if none comes in time."""
        clash = _ENVELOPE.intersection(fields)
        if clash:
            raise ValueError(f"request fields {sorted(clash)} are the client's own")
        if self.bus is None:
            raise RpcTimeout("not connected to the broker")
        request_id = next(self._ids)
        future: asyncio.Future[RpcReply] = asyncio.get_running_loop().create_future()
        # Registered before publishing: a fast bridge may answer before publish returns.
        self._waiting[request_id] = future
        payload = {"id": request_id, "reply_to": self.reply_topic, **fields}
        try:
            if not self.bus.publish_nowait(
                self.request_topic, json.dumps(payload, separators=(",", ":")).encode(), qos=1
            ):
                raise RpcTimeout("not connected to the broker")
            try:
                return await asyncio.wait_for(future, timeout)
            except TimeoutError:
                raise RpcTimeout(f"no {self.bridge} bridge answered within {timeout:g} s") from None
        finally:
            self._waiting.pop(request_id, None)
