"""Guess throttle: how many credential checks (admin password, user PIN/RFID) may fail, per
source address and in total. Pure: the caller passes the time; no I/O.

Token buckets. Each source address has one (`per_address` tokens a second, up to
`address_burst`), and all addresses share one more (`total`, up to `total_burst`). A check
may run only when its buckets hold a token; it takes the token *before* the check runs, so
any number of parallel requests can never have more checks in flight than there are tokens.
A check that succeeds gives its token back; a failed one keeps it spent. Hence, over any
time span T, one address reaches at most `address_burst + per_address * T` failed checks
and all addresses together at most `total_burst + total * T` (addresses that are trusted,
below, aside) — whatever the number of connections.

A request that finds no token is answered "too many attempts" without being checked at all:
even the right password is refused then, or the refusal would itself be the oracle.

An address that passed a check within `trusted_for` seconds is *trusted*: it skips the
shared bucket (its own still applies), so an admin whose client keeps logging in is not
locked out when attackers elsewhere drain the shared bucket. Only the right credential
makes an address trusted, so an attacker cannot make itself one. A success refunds only its
own token: it never clears failures of someone else on the same address.

IPv6 clients are keyed by their /64 (one host usually holds the whole /64); IPv4 addresses,
IPv4-mapped IPv6 included, by the address.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Final


@dataclass(frozen=True, slots=True)
class Rates:
    per_address: float = 1.0  # failed checks per second and source address
    address_burst: float = 10.0
    total: float = 10.0  # failed checks per second, all untrusted addresses together
    total_burst: float = 30.0
    trusted_for: float = 3600.0  # s an address counts as trusted after a success
    max_addresses: int = 10_000  # entries kept; beyond, refilled ones are forgotten first


DEFAULT_RATES: Final = Rates()


@dataclass(slots=True)
class _Bucket:
    tokens: float
    at: float

    def refill(self, rate: float, burst: float, now: float) -> None:
        if now > self.at:
            self.tokens = min(burst, self.tokens + (now - self.at) * rate)
            self.at = now


@dataclass(slots=True)
class _Address:
    bucket: _Bucket
    trusted_until: float = float("-inf")


@dataclass(frozen=True, slots=True)
class Ticket:
    """A check that was let through: give it back with `succeeded` or `failed`."""

    key: str
    shared: bool  # it took a token from the shared bucket too


@dataclass(frozen=True, slots=True)
class Refusal:
    """No token: answer at once, without checking; `retry_after` in seconds."""

    retry_after: float


def address_key(address: str) -> str:
    """The key an address is counted under (see the module docstring)."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((int(ip) >> 64 << 64, 64)))
    return str(ip)


@dataclass
class GuessThrottle:
    rates: Rates = DEFAULT_RATES
    _addresses: dict[str, _Address] = field(default_factory=dict)
    _shared: _Bucket | None = None

    def admit(self, address: str, now: float) -> Ticket | Refusal:
        """Takes a token for one check from `address`, or says how long to wait."""
        r = self.rates
        key = address_key(address)
        entry = self._addresses.get(key)
        if entry is None:
            self._make_room(now)
            entry = _Address(_Bucket(r.address_burst, now))
            self._addresses[key] = entry
        entry.bucket.refill(r.per_address, r.address_burst, now)
        shared = self._shared_bucket(now)
        trusted = now < entry.trusted_until
        own_wait = _wait(entry.bucket, r.per_address)
        shared_wait = 0.0 if trusted else _wait(shared, r.total)
        if own_wait > 0 or shared_wait > 0:
            return Refusal(max(own_wait, shared_wait))
        entry.bucket.tokens -= 1
        if not trusted:
            shared.tokens -= 1
        return Ticket(key, shared=not trusted)

    def succeeded(self, ticket: Ticket, now: float) -> None:
        """The check passed: its token comes back and the address is trusted for a while."""
        self.unused(ticket, now)
        entry = self._addresses.get(ticket.key)
        if entry is not None:
            entry.trusted_until = now + self.rates.trusted_for

    def unused(self, ticket: Ticket, now: float) -> None:
        """Nothing was checked after all (the resource asks for no credential): the token
        comes back, but the address earns no trust, as only a right credential does."""
        r = self.rates
        entry = self._addresses.get(ticket.key)
        if entry is not None:
            entry.bucket.refill(r.per_address, r.address_burst, now)
            entry.bucket.tokens = min(r.address_burst, entry.bucket.tokens + 1)
        if ticket.shared:
            shared = self._shared_bucket(now)
            shared.tokens = min(r.total_burst, shared.tokens + 1)

    def failed(self, ticket: Ticket, now: float) -> None:
        """The check failed: the token stays spent (nothing else to do; kept for symmetry
        and for the log at the caller)."""

    def tracked(self) -> int:
        return len(self._addresses)

    def _shared_bucket(self, now: float) -> _Bucket:
        if self._shared is None:
            self._shared = _Bucket(self.rates.total_burst, now)
        self._shared.refill(self.rates.total, self.rates.total_burst, now)
        return self._shared

    def _make_room(self, now: float) -> None:
        """Keeps at most max_addresses entries. An entry whose bucket has refilled and that
        is not trusted says nothing a new entry would not: those go first; if none, the
        one touched longest ago (its failures are forgotten: the shared bucket still
        bounds what that buys an attacker)."""
        r = self.rates
        if len(self._addresses) < r.max_addresses:
            return
        idle = [
            key
            for key, entry in self._addresses.items()
            if entry.trusted_until <= now
            and entry.bucket.tokens + (now - entry.bucket.at) * r.per_address >= r.address_burst
        ]
        for key in idle:
            del self._addresses[key]
        if len(self._addresses) >= r.max_addresses:
            oldest = min(self._addresses, key=lambda k: self._addresses[k].bucket.at)
            del self._addresses[oldest]


def _wait(bucket: _Bucket, rate: float) -> float:
    """Seconds until the bucket holds a whole token (0 when it does)."""
    if bucket.tokens >= 1:
        return 0.0
    return (1 - bucket.tokens) / rate if rate > 0 else float("inf")
