"""`cmd=modbus` on the service's side: requests to the Modbus bridge over the bus.

The HTTP adapter never opens a Modbus connection of its own: the device's bridge owns it. A
request `{id, reply_to, dev_id, unit, query}` goes to `{base}/rpc/{bridge}/request`; the
answer `{id, status, body}` comes back on this client's reply topic (service/rpc_client.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from service.rpc_client import RpcClient, RpcReply, RpcTimeout
from service.topics import Topics

DEFAULT_BRIDGE = "modbus"

__all__ = ["DEFAULT_BRIDGE", "ModbusRpcClient", "RpcReply", "RpcTimeout"]


class ModbusRpcClient(RpcClient):
    def __init__(self, topics: Topics, client: str, *, bridge: str = DEFAULT_BRIDGE) -> None:
        super().__init__(topics, client, bridge)

    async def request(
        self, dev_id: str, unit: int, query: Mapping[str, Any], *, timeout: float = 5.0
    ) -> RpcReply:
        return await self.call(
            {"dev_id": dev_id, "unit": unit, "query": dict(query)}, timeout=timeout
        )
