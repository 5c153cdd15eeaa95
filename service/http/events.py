"""The dashboard's live feed: a server-sent event stream of the service's own device info.

Fed with exactly the payloads MqttLink publishes as retained `info` and `params` (the
non-admin view, so the stream shows nobody more than an anonymous `get_dev_info` does), plus
the group tree and a chart sample every few seconds.

On the wire (`GET /ui/events`, text/event-stream):

    retry: 2000                      reconnect after 2 s when the stream breaks
    event: snapshot                  everything, on connect and after falling behind:
    data: {"params":{..},"groups":[..],"infos":[{..},..],"history":[[t,g1,g2,g3,e1,e2,e3],..],
           "sessions":{"E1":[start_wh,since_unix_s]}}
    event: update                    what changed since the last event, at most every 100 ms:
    data: {"params":{..},"groups":[..],"infos":[{"dev_id":"E1",<changed fields>},..],
           "removed":["E3"],"samples":[[..]],"sessions":{..}}
    : keepalive                      every 15 s while nothing changes

An update is built once per tick and the same bytes go to every browser. Each browser has a
slot for one event besides the one being written: a browser still busy with the last event
when the next is due has fallen behind, and gets one fresh snapshot (the newest values only)
when it is ready again, so a slow browser never holds more than two events of memory and
never sees old values. Streams end at once on shutdown (`close`), so that the service stops
without waiting for browsers.

The stream needs no credentials, so one peer must not take every place: besides the global
MAX_CLIENTS, one address (an IPv6 client by its /64, as the guess throttle counts it) holds
at most MAX_PER_ADDRESS streams; more are refused with 429.

While no browser is connected, an info is kept as the bytes that came (for the next
snapshot) and not diffed; only an EVSE's is decoded, for its session's start. Infos that
changed meanwhile are decoded when the next browser connects, before its snapshot.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from service.core.site_figures import session_start
from service.core.throttle import address_key

log = logging.getLogger(__name__)

MIN_INTERVAL_S = 0.1
KEEPALIVE_S = 15.0
RETRY_MS = 2000
SAMPLE_INTERVAL_S = 2.0
HISTORY_S = 600.0
# More browsers than a site has people: each holds a connection and its events.
MAX_CLIENTS = 200
# A household has a few browsers behind one address (NAT); one peer gets no more.
MAX_PER_ADDRESS = 8

GroupsSource = Callable[[], list[dict[str, Any]]]
Sampler = Callable[[], list[float | None]]


def _encode(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def _delta(old: dict[str, Any] | None, new: dict[str, Any]) -> dict[str, Any]:
    """The fields of `new` that differ from `old` (a dropped field becomes None); always
    with dev_id, so that the browser knows whose they are."""
    if old is None:
        return new
    changed = {k: v for k, v in new.items() if old.get(k, _MISSING) != v}
    changed.update({k: None for k in old if k not in new})
    changed["dev_id"] = new.get("dev_id")
    return changed


_MISSING = object()


def event(name: str, data: bytes) -> bytes:
    """One SSE event; `data` is compact JSON, which has no line breaks."""
    return b"event: " + name.encode() + b"\ndata: " + data + b"\n\n"


@dataclass(eq=False)
class _Client:
    # The next event to write (one at most), or a snapshot owed after falling behind.
    slot: bytes | None = None
    resync: bool = False
    # The key the client's address is counted under (address_key).
    address: str = ""
    wake: asyncio.Event = field(default_factory=asyncio.Event)


class DashboardHub:
    def __init__(
        self,
        groups: GroupsSource | None = None,
        sampler: Sampler | None = None,
        *,
        min_interval_s: float = MIN_INTERVAL_S,
        keepalive_s: float = KEEPALIVE_S,
        sample_interval_s: float = SAMPLE_INTERVAL_S,
        history_s: float = HISTORY_S,
        max_clients: int = MAX_CLIENTS,
        max_per_address: int = MAX_PER_ADDRESS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._clock = clock
        self._groups_source = groups
        self._sampler = sampler
        self.min_interval_s = min_interval_s
        self.keepalive_s = keepalive_s
        self.sample_interval_s = sample_interval_s
        self.max_clients = max_clients
        self.max_per_address = max_per_address
        # The newest of everything (for snapshots), as encoded JSON, and decoded infos to
        # compute deltas against (an info missing there changed while nobody watched).
        self._params = b"{}"
        self._groups = b"[]"
        self._infos: dict[str, bytes] = {}
        self._decoded: dict[str, dict[str, Any]] = {}
        # Devices whose last decoded info was no EVSE's: not decoded while nobody watches.
        self._meters: set[str] = set()
        self._history: deque[bytes] = deque(maxlen=max(1, int(history_s / sample_interval_s)))
        # What changed since the last tick.
        self._dirty: dict[str, dict[str, Any]] = {}
        self._removed: set[str] = set()
        self._params_dirty = False
        self._groups_dirty = False
        self._samples: list[bytes] = []
        # Per EVSE: the energy counter and time its vehicle's session began (sessions).
        self._sessions: dict[str, tuple[float, float]] = {}
        self._sessions_dirty = False
        self._clients: set[_Client] = set()
        self._per_address: dict[str, int] = {}
        self._tick: asyncio.TimerHandle | None = None
        self._last_tick = 0.0
        self._sampling: asyncio.Task[None] | None = None
        self.closed = False
        # For the metrics and the benchmark: events built, snapshots sent to slow browsers.
        self.updates_built = 0
        self.resyncs = 0
        # Streams refused: the service at MAX_CLIENTS, or an address at MAX_PER_ADDRESS.
        self.refused = 0

    @property
    def held_bytes(self) -> int:
        """The bytes of the events waiting for browsers (one per browser at most)."""
        return sum(len(client.slot) for client in self._clients if client.slot is not None)

    @property
    def clients(self) -> int:
        return len(self._clients)

    # -- fed by MqttLink (its observer interface) -------------------------------------------

    def params(self, payload: bytes) -> None:
        self._params = payload
        self._params_dirty = True
        if self._groups_source is not None:
            groups = _encode(self._groups_source())
            if groups != self._groups:
                self._groups = groups
                self._groups_dirty = True
        self._schedule()

    def info(self, dev_id: str, payload: bytes, decoded: dict[str, Any] | None = None) -> None:
        """A device's info as published; `decoded` spares decoding it again (the link has
        the object it encoded: a thousand EVSEs report each second)."""
        if self._infos.get(dev_id) == payload:
            return
        if not self._clients and dev_id in self._meters:
            # Nobody watches and no session to follow: the bytes for the next snapshot only.
            self._infos[dev_id] = payload
            self._decoded.pop(dev_id, None)
            return
        if decoded is None:
            decoded = self._decode(dev_id, payload)
            if decoded is None:
                return
        self._infos[dev_id] = payload
        old = self._decoded.get(dev_id)
        self._decoded[dev_id] = decoded
        self._removed.discard(dev_id)
        if decoded.get("is_evse"):
            self._meters.discard(dev_id)
            self._track_session(dev_id, decoded)
        else:
            self._meters.add(dev_id)
        if not self._clients:
            # No browser to send a delta to: the next one starts with a snapshot.
            self._dirty.pop(dev_id, None)
            return
        if dev_id in self._dirty:
            # Several changes within one tick: one delta against what the browsers last got.
            self._dirty[dev_id].update(_delta(old, decoded))
        else:
            self._dirty[dev_id] = _delta(old, decoded)
        self._schedule()

    @staticmethod
    def _decode(dev_id: str, payload: bytes) -> dict[str, Any] | None:
        try:
            decoded = json.loads(payload)
        except ValueError:
            log.warning("dashboard: info for %s is not JSON; not shown", dev_id)
            return None
        return decoded if isinstance(decoded, dict) else None

    def _catch_up(self) -> None:
        """Decodes the infos that changed while nobody watched (before a snapshot)."""
        for dev_id in [d for d in self._infos if d not in self._decoded]:
            decoded = self._decode(dev_id, self._infos[dev_id])
            if decoded is None:
                del self._infos[dev_id]
                continue
            self._decoded[dev_id] = decoded
            if decoded.get("is_evse"):
                self._meters.discard(dev_id)
                self._track_session(dev_id, decoded)

    def _track_session(self, dev_id: str, info: dict[str, Any]) -> None:
        held = self._sessions.get(dev_id)
        now = self._clock()
        started = session_start(held, info, now)
        if started == held:
            return
        if started is None:
            del self._sessions[dev_id]
        else:
            self._sessions[dev_id] = started
        self._sessions_dirty = True

    def removed(self, dev_id: str) -> None:
        if self._sessions.pop(dev_id, None) is not None:
            self._sessions_dirty = True
        self._infos.pop(dev_id, None)
        self._decoded.pop(dev_id, None)
        self._meters.discard(dev_id)
        self._dirty.pop(dev_id, None)
        self._removed.add(dev_id)
        self._schedule()

    # -- chart samples -----------------------------------------------------------------------

    def start(self) -> None:
        """Starts sampling the chart (in a running event loop)."""
        if self._sampler is not None and self._sampling is None:
            self._sampling = asyncio.get_running_loop().create_task(
                self._sample_forever(), name="dashboard-samples"
            )

    async def _sample_forever(self) -> None:
        assert self._sampler is not None
        while not self.closed:
            try:
                self.add_sample(self._sampler())
            except Exception:
                log.exception("dashboard: chart sample failed")
            await asyncio.sleep(self.sample_interval_s)

    def add_sample(self, sample: list[float | None]) -> None:
        encoded = _encode(sample)
        self._history.append(encoded)
        self._samples.append(encoded)
        self._schedule()

    # -- ticks: one update for every browser ---------------------------------------------------

    def _schedule(self) -> None:
        if self._tick is not None or self.closed:
            return
        loop = asyncio.get_running_loop()
        wait = max(0.0, self._last_tick + self.min_interval_s - time.monotonic())
        self._tick = loop.call_later(wait, self._broadcast)

    def _update_event(self) -> bytes:
        parts: list[bytes] = []
        if self._params_dirty:
            parts.append(b'"params":' + self._params)
        if self._groups_dirty:
            parts.append(b'"groups":' + self._groups)
        if self._dirty:
            parts.append(b'"infos":' + _encode(list(self._dirty.values())))
        if self._removed:
            parts.append(b'"removed":' + _encode(sorted(self._removed)))
        if self._samples:
            parts.append(b'"samples":[' + b",".join(self._samples) + b"]")
        if self._sessions_dirty:
            parts.append(b'"sessions":' + _encode(self._sessions))
        return event("update", b"{" + b",".join(parts) + b"}")

    def _broadcast(self) -> None:
        self._tick = None
        self._last_tick = time.monotonic()
        if self._clients:
            data = self._update_event()
            self.updates_built += 1
            for client in self._clients:
                if client.slot is not None or client.resync:
                    # Still busy with an earlier event: the newest values later, in one go.
                    if not client.resync:
                        self.resyncs += 1
                    client.slot, client.resync = None, True
                else:
                    client.slot = data
                client.wake.set()
        self._dirty = {}
        self._removed = set()
        self._params_dirty = self._groups_dirty = self._sessions_dirty = False
        self._samples = []

    def snapshot(self) -> bytes:
        return (
            b'{"params":' + self._params
            + b',"groups":' + self._groups
            + b',"infos":[' + b",".join(self._infos.values())
            + b'],"history":[' + b",".join(self._history)
            + b'],"sessions":' + _encode(self._sessions) + b"}"
        )  # fmt: skip

    def snapshot_event(self) -> bytes:
        # Deltas already due would repeat what the snapshot holds: harmless, and the next
        # update carries them.
        return event("snapshot", self.snapshot())

    # -- the stream ----------------------------------------------------------------------------

    def attach(self, remote: str | None) -> _Client:
        """A new browser's place, or the refusal (503 when full, 429 for its address)."""
        if self.closed:
            raise web.HTTPServiceUnavailable(reason="shutting down")
        address = address_key(remote or "?")
        if len(self._clients) >= self.max_clients:
            self.refused += 1
            log.warning("dashboard stream from %s refused: %d open", remote, self.clients)
            raise web.HTTPServiceUnavailable(reason="too many dashboard connections")
        if self._per_address.get(address, 0) >= self.max_per_address:
            self.refused += 1
            log.warning(
                "dashboard stream from %s refused: %d open from %s",
                remote, self.max_per_address, address,
            )  # fmt: skip
            raise web.HTTPTooManyRequests(
                reason=f"too many dashboard connections from this address "
                f"(at most {self.max_per_address})"
            )
        self._catch_up()
        client = _Client(address=address)
        self._clients.add(client)
        self._per_address[address] = self._per_address.get(address, 0) + 1
        return client

    def detach(self, client: _Client) -> None:
        if client not in self._clients:
            return
        self._clients.discard(client)
        left = self._per_address[client.address] - 1
        if left:
            self._per_address[client.address] = left
        else:
            del self._per_address[client.address]

    async def stream(self, request: web.Request, headers: dict[str, str]) -> web.StreamResponse:
        client = self.attach(request.remote)
        try:
            return await self._stream(request, headers, client)
        finally:
            self.detach(client)
            log.debug("dashboard stream closed (%d open)", self.clients)

    async def _stream(
        self, request: web.Request, headers: dict[str, str], client: _Client
    ) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={
                **headers,
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                # A reverse proxy (nginx) must pass events on at once, not buffer them.
                "X-Accel-Buffering": "no",
            }
        )
        await response.prepare(request)
        log.debug("dashboard stream opened from %s (%d open)", request.remote, self.clients)
        try:
            await response.write(b"retry: %d\n\n" % RETRY_MS + self.snapshot_event())
            while not self.closed:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(client.wake.wait(), self.keepalive_s)
                client.wake.clear()
                if self.closed:
                    break
                if client.resync:
                    client.resync, client.slot = False, None
                    data = self.snapshot_event()
                elif client.slot is not None:
                    data, client.slot = client.slot, None
                else:
                    data = b": keepalive\n\n"
                await response.write(data)
        except ConnectionError:
            # The browser went away: nothing to answer.
            pass
        return response

    def close(self) -> None:
        """Ends every stream at once and stops sampling."""
        self.closed = True
        if self._tick is not None:
            self._tick.cancel()
            self._tick = None
        if self._sampling is not None:
            self._sampling.cancel()
            self._sampling = None
        for client in self._clients:
            client.wake.set()
