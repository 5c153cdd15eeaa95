"""`cmd=modbus` on the bridge's side: a query from the bus, executed on a device's connection.

The HTTP adapter sends `{id, reply_to, dev_id, unit, query}` to `{base}/rpc/{bridge}/request`;
`query` holds the /cnf parameters as given (`read`, `count`, `write`, `value`, `values`). The
answer goes to `reply_to` as `{id, status, body}`, where body is exactly what /cnf answers:
a number, a string, an array or, for `read=all`, an object keyed by address and type suffix.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from bridges.modbus.connection import ModbusConnection, ModbusError
from bridges.modbus.register_map import (
    BAD_VALUE,
    RegisterError,
    RegisterMap,
    check_count_read,
    check_read,
    check_write,
    decode,
    encode,
    parse_address,
)


@dataclass(frozen=True, slots=True)
class RpcAnswer:
    status: int
    body: Any


def _int_value(raw: Any) -> int:
    if isinstance(raw, bool):
        raise RegisterError(BAD_VALUE)
    if isinstance(raw, int):
        return raw
    try:
        return int(str(raw).strip())
    except ValueError:
        raise RegisterError(BAD_VALUE) from None


def _values(raw: Any) -> list[int]:
    """`values=[7,230,230,230 ]` as the query string gives it, or a JSON array."""
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            raise RegisterError(BAD_VALUE) from None
    if not isinstance(raw, list) or not raw:
        raise RegisterError(BAD_VALUE)
    values = [_int_value(v) for v in raw]
    if not all(-0x8000 <= v <= 0xFFFF for v in values):
        raise RegisterError(BAD_VALUE)
    return [v & 0xFFFF for v in values]


async def execute(
    conn: ModbusConnection,
    unit: int,
    regmap: RegisterMap | None,
    function: Literal["holding", "input"],
    query: Mapping[str, Any],
) -> RpcAnswer:
    try:
        return RpcAnswer(200, await _execute(conn, unit, regmap, function, query))
    except RegisterError as exc:
        return RpcAnswer(400, str(exc))
    except ModbusError as exc:
        return RpcAnswer(502, f"modbus request failed: {exc}")


async def _read(
    conn: ModbusConnection, unit: int, function: str, address: int, count: int
) -> list[int]:
    if function == "input":
        return await conn.read_input(unit, address, count)
    return await conn.read_holding(unit, address, count)


async def _execute(
    conn: ModbusConnection,
    unit: int,
    regmap: RegisterMap | None,
    function: Literal["holding", "input"],
    query: Mapping[str, Any],
) -> Any:
    empty = RegisterMap(())
    if "read" in query:
        target = str(query["read"])
        if target == "all":
            if regmap is None:
                raise RegisterError("this device has no register map for read=all")
            answer: dict[str, Any] = {}
            for entry in regmap.entries():
                words = await _read(conn, unit, function, entry.address, entry.count)
                answer[entry.key] = decode(entry.suffix, words)
            return answer
        address, suffix = parse_address(target)
        if query.get("count") is not None:
            count = check_count_read(address, _int_value(query["count"]))
            return await _read(conn, unit, function, address, count)
        count = check_read(regmap or empty, address, suffix)
        return decode(suffix, await _read(conn, unit, function, address, count))
    if "write" in query:
        if function != "holding":
            raise RegisterError("this device's registers are read-only")
        address, suffix = parse_address(str(query["write"]))
        if query.get("values") is not None:
            values = _values(query["values"])
            check_write(regmap or empty, address, suffix, len(values))
            await conn.write_registers(unit, address, values)
            return "ok"
        if query.get("value") is None:
            raise RegisterError("missing parameter 'value' or 'values'")
        count = check_write(regmap or empty, address, suffix)
        raw = query["value"]
        value: int | str = str(raw) if suffix == "s" else _int_value(raw)
        if suffix == "":
            if not -0x8000 <= int(value) <= 0xFFFF:
                raise RegisterError(BAD_VALUE)
            value = int(value) & 0xFFFF
        await conn.write_registers(unit, address, encode(suffix, value, count=count))
        return "ok"
    raise RegisterError("missing parameter 'read' or 'write'")
