"""A plain server-sent-events reader for tests and benchmarks: aiohttp reads the stream,
this splits it into events (name, data, comments) as a browser's EventSource would."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp


@dataclass(frozen=True)
class Event:
    name: str  # "message" when the stream named none; "" for a comment (keepalive)
    data: str
    comment: str = ""
    at: float = 0.0

    def json(self) -> Any:
        return json.loads(self.data)


async def events(response: aiohttp.ClientResponse) -> AsyncIterator[Event]:
    """The events of an open text/event-stream response, until the server ends it."""
    name, comment = "", ""
    data: list[str] = []
    while True:
        line = await response.content.readline()
        if not line:
            return
        text = line.decode().rstrip("\r\n")
        if text == "":
            if data or comment:
                yield Event(name or ("message" if data else ""), "\n".join(data), comment,
                            time.monotonic())
            name, data, comment = "", [], ""
        elif text.startswith(":"):
            comment = text[1:].strip()
        else:
            key, _, value = text.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if key == "event":
                name = value
            elif key == "data":
                data.append(value)


async def next_event(
    stream: AsyncIterator[Event], name: str | None = None, timeout: float = 10.0
) -> Event:
    """The next event (of that name), or TimeoutError."""
    async with asyncio.timeout(timeout):
        async for event in stream:
            if name is None or event.name == name:
                return event
    raise EOFError("the stream ended")
