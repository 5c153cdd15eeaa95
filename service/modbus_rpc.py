"""`cmd=modbus` on the service's side: requests to the Modbus bridges over the bus.

The HTTP adapter never opens a Modbus connection of its own: the device's bridge owns it. A
request goes to `{base}/rpc/{bridge}/request` with an id and this client's reply topic
`{base}/rpc/reply/{client}`; the answer `{id, status, body}` comes back there.
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

DEFAULT_BRIDGE = "modbus"


@dataclass(frozen=True, slots=True)
class RpcReply:
    status: int
    body: Any


class RpcTimeout(Exception):
    pass


class ModbusRpcClient:
    def __init__(self, topics: Topics, client: str, *, bridge: str = DEFAULT_BRIDGE) -> None:
        self.topics = topics
        self.reply_topic = f"{topics.base}/rpc/reply/{client}"
        self.request_topic = f"{topics.base}/rpc/{bridge}/request"
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
        try:
            reply = json.loads(payload)
            future = self._waiting.get(int(reply["id"]))
            answer = RpcReply(int(reply["status"]), reply["body"])
        except (ValueError, KeyError, TypeError):
            log.warning("rejected Modbus reply: not {id, status, body}")
            return
        if future is not None and not future.done():
            future.set_result(answer)

    async def request(
        self, dev_id: str, unit: int, query: Mapping[str, Any], *, timeout: float = 5.0
    ) -> RpcReply:
        if self.bus is None:
            raise RpcTimeout("not connected to the broker")
        request_id = next(self._ids)
        future: asyncio.Future[RpcReply] = asyncio.get_running_loop().create_future()
        self._waiting[request_id] = future
        payload = {
            "id": request_id,
            "reply_to": self.reply_topic,
            "dev_id": dev_id,
            "unit": unit,
            "query": dict(query),
        }
        try:
            if not self.bus.publish_nowait(
                self.request_topic, json.dumps(payload).encode(), qos=1
            ):
                raise RpcTimeout("not connected to the broker")
            try:
                return await asyncio.wait_for(future, timeout)
            except TimeoutError:
                raise RpcTimeout(
                    f"no Modbus bridge answered for {dev_id} within {timeout:g} s"
                ) from None
        finally:
            self._waiting.pop(request_id, None)
