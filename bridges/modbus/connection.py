"""One Modbus connection per TCP endpoint or serial line, shared by the devices on it.

Requests on one connection are serialised (a Modbus line answers one request at a time, and
several Modbus ids share an RS-485 bus). A failed request closes the connection; the next
request reconnects only after an exponential backoff (tenacity's wait strategy), so a dead
endpoint costs its devices one short timeout per backoff step and never delays other
endpoints, which have their own connections and locks.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException
from tenacity import RetryCallState, Retrying, wait_exponential_jitter

T = TypeVar("T")

DEFAULT_TCP_PORT = 502


class ModbusError(Exception):
    """A request that did not get a valid answer: timeout, disconnect or exception code."""


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where a device is: `host:port` (TCP) or a serial device path (`/dev/ttyUSB0` or
    `/dev/ttyUSB0@9600`)."""

    kind: Literal["tcp", "serial"]
    target: str
    port: int = DEFAULT_TCP_PORT
    baudrate: int = 9600

    @classmethod
    def parse(cls, address: str, default_port: int = DEFAULT_TCP_PORT) -> Endpoint:
        address = address.strip()
        if not address:
            raise ValueError("empty Modbus address")
        if address.startswith("/") or address.upper().startswith("COM"):
            path, _, baud = address.partition("@")
            return cls("serial", path, baudrate=int(baud) if baud else 9600)
        host, sep, port = address.rpartition(":")
        if not sep:
            return cls("tcp", address, default_port)
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"bad Modbus TCP port in {address!r}")
        return cls("tcp", host.strip("[]"), int(port))

    def __str__(self) -> str:
        return f"{self.target}:{self.port}" if self.kind == "tcp" else self.target


class ModbusConnection:
    def __init__(
        self,
        endpoint: Endpoint,
        *,
        timeout: float = 1.0,
        max_backoff: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.endpoint = endpoint
        self.timeout = timeout
        self._clock = clock
        self._lock = asyncio.Lock()
        self._client: AsyncModbusTcpClient | AsyncModbusSerialClient | None = None
        self._wait = wait_exponential_jitter(multiplier=0.2, max=max_backoff, jitter=0.2)
        self._failures = 0
        self._retry_at = 0.0

    def _new_client(self) -> AsyncModbusTcpClient | AsyncModbusSerialClient:
        # reconnect_delay=0: the backoff is ours, pymodbus must not reconnect behind our back.
        if self.endpoint.kind == "tcp":
            return AsyncModbusTcpClient(
                self.endpoint.target,
                port=self.endpoint.port,
                timeout=self.timeout,
                retries=0,
                reconnect_delay=0,
            )
        return AsyncModbusSerialClient(
            self.endpoint.target,
            baudrate=self.endpoint.baudrate,
            timeout=self.timeout,
            retries=0,
            reconnect_delay=0,
        )

    async def _connected(self) -> AsyncModbusTcpClient | AsyncModbusSerialClient:
        if self._client is not None and self._client.connected:
            return self._client
        now = self._clock()
        if now < self._retry_at:
            raise ModbusError(
                f"{self.endpoint}: not connected (next attempt in {self._retry_at - now:.1f} s)"
            )
        self.close()
        client = self._new_client()
        try:
            ok = await asyncio.wait_for(client.connect(), self.timeout + 0.5)
        except (TimeoutError, OSError, ModbusException) as exc:
            client.close()
            self._failed()
            raise ModbusError(f"{self.endpoint}: connect failed: {exc}") from exc
        if not ok:
            client.close()
            self._failed()
            raise ModbusError(f"{self.endpoint}: connection refused")
        self._client = client
        return client

    def _failed(self) -> None:
        self._failures += 1
        state = RetryCallState(Retrying(), None, (), {})
        state.attempt_number = self._failures
        self._retry_at = self._clock() + self._wait(state)

    async def request(
        self, call: Callable[[AsyncModbusTcpClient | AsyncModbusSerialClient], Awaitable[Any]]
    ) -> Any:
        """Runs one request under the connection's lock; raises ModbusError on any failure."""
        async with self._lock:
            client = await self._connected()
            on_wire = asyncio.ensure_future(asyncio.wait_for(call(client), self.timeout + 0.5))
            try:
                # Shielded: a caller cancelled with the request on the wire (a poller
                # stopped for a new configuration) must not cancel the request itself, or
                # its answer arrives for a request nobody waits for ("received pdu without
                # a corresponding request") or is taken for the next one.
                response = await asyncio.shield(on_wire)
            except (TimeoutError, OSError, ModbusException) as exc:
                # A timed-out answer may still arrive and be taken for the next one: start over.
                self.close()
                self._failed()
                raise ModbusError(f"{self.endpoint}: {type(exc).__name__}: {exc}") from exc
            except asyncio.CancelledError:
                await self._let_finish(on_wire)
                raise
            if response.isError():
                raise ModbusError(f"{self.endpoint}: device answered {response}")
            self._failures = 0
            return response

    async def _let_finish(self, on_wire: asyncio.Future[Any]) -> None:
        """Waits (holding the lock, bounded by the request's timeout) until the request on
        the wire has its answer; a request that failed, or a second cancellation, leaves
        a connection whose state is unknown: closed, for a fresh one (this is no failure)."""
        try:
            if not on_wire.done():
                await asyncio.wait({on_wire})
        finally:
            clean = on_wire.done() and not on_wire.cancelled() and on_wire.exception() is None
            if not clean:
                on_wire.cancel()
                self.close()

    async def read_holding(self, unit: int, address: int, count: int) -> list[int]:
        response = await self.request(
            lambda c: c.read_holding_registers(address, count=count, device_id=unit)
        )
        return list(response.registers)

    async def read_input(self, unit: int, address: int, count: int) -> list[int]:
        response = await self.request(
            lambda c: c.read_input_registers(address, count=count, device_id=unit)
        )
        return list(response.registers)

    async def write_registers(self, unit: int, address: int, values: list[int]) -> None:
        if len(values) == 1:
            await self.request(
                lambda c: c.write_register(address, values[0], device_id=unit)
            )
        else:
            await self.request(
                lambda c: c.write_registers(address, values, device_id=unit)
            )

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


class ConnectionPool:
    """Connections by endpoint: devices at the same address share one."""

    def __init__(self, *, timeout: float = 1.0) -> None:
        self.timeout = timeout
        self._connections: dict[Endpoint, ModbusConnection] = {}

    def get(self, endpoint: Endpoint) -> ModbusConnection:
        connection = self._connections.get(endpoint)
        if connection is None:
            connection = ModbusConnection(endpoint, timeout=self.timeout)
            self._connections[endpoint] = connection
        return connection

    def close(self) -> None:
        for connection in self._connections.values():
            connection.close()
        self._connections.clear()
