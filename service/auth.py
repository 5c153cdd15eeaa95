"""Admin password handling: salted scrypt hashes, constant-time checks, throttled guessing."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import secrets
import time
from collections.abc import Callable

from service.core.throttle import DEFAULT_RATES, GuessThrottle, Rates, Refusal, Ticket
from service.store import AdminSecret, Store

log = logging.getLogger(__name__)

# scrypt cost: ~30 ms per check on one core; verified passwords are remembered (below) so
# frequent authenticated pushes (set_ajax_meter every second) do not pay it each time.
SCRYPT_N = 2**14
SCRYPT_R = 8
SCRYPT_P = 1
MIN_PASSWORD_LENGTH = 4


def hash_password(password: str) -> AdminSecret:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(
        password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=32
    )
    return AdminSecret(
        salt_hex=salt.hex(), hash_hex=digest.hex(), n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P
    )


def verify_password(secret: AdminSecret, password: str) -> bool:
    digest = hashlib.scrypt(
        password.encode(),
        salt=bytes.fromhex(secret.salt_hex),
        n=secret.n,
        r=secret.r,
        p=secret.p,
        dklen=32,
    )
    return hmac.compare_digest(digest, bytes.fromhex(secret.hash_hex))


def generate_password() -> str:
    return secrets.token_urlsafe(12)


class VerifiedCache:
    """Remembers the last password that passed scrypt, as a keyed digest, in memory only."""

    def __init__(self) -> None:
        self._key = secrets.token_bytes(32)
        self._digest: bytes | None = None

    def _mac(self, password: str) -> bytes:
        return hmac.new(self._key, password.encode(), hashlib.sha256).digest()

    def remember(self, password: str) -> None:
        self._digest = self._mac(password)

    def matches(self, password: str) -> bool:
        return self._digest is not None and hmac.compare_digest(self._digest, self._mac(password))

    def forget(self) -> None:
        self._digest = None


class FailureThrottle:
    """The guess throttle (service.core.throttle) on the monotonic clock: every check of a
    credential (admin password, user PIN/RFID) asks `admit` first and reports the outcome.
    One instance per process, shared by all commands, so guesses at one credential count
    against the others too."""

    def __init__(
        self, rates: Rates = DEFAULT_RATES, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rates = rates
        self._clock = clock
        self._throttle = GuessThrottle(rates)

    def admit(self, address: str) -> Ticket | Refusal:
        verdict = self._throttle.admit(address, self._clock())
        if isinstance(verdict, Refusal):
            log.debug("throttle: %s over its budget, retry in %.1f s", address, verdict.retry_after)
        return verdict

    def succeeded(self, ticket: Ticket) -> None:
        self._throttle.succeeded(ticket, self._clock())

    def failed(self, ticket: Ticket) -> None:
        self._throttle.failed(ticket, self._clock())


class AdminAccount:
    """The admin password as stored; checks cost one scrypt, run off the event loop."""

    def __init__(self, store: Store, secret: AdminSecret) -> None:
        self._store = store
        self._secret = secret
        self._verified = VerifiedCache()

    @classmethod
    def load_or_create(cls, store: Store, configured_password: str | None) -> AdminAccount:
        """The stored hash wins over the configured initial password; with neither, a random
        password is generated, stored as a hash and logged once."""
        secret = store.load_admin()
        if secret is None:
            password = configured_password or generate_password()
            secret = hash_password(password)
            store.save(store.ADMIN, secret)
            if configured_password is None:
                log.warning(
                    "generated the admin password: %s (log in as 'admin'; change it with "
                    "cmd=change_admin_pwd; it is stored only as a hash and not shown again)",
                    password,
                )
        return cls(store, secret)

    async def check(self, password: str) -> bool:
        if self._verified.matches(password):
            return True
        ok = await asyncio.to_thread(verify_password, self._secret, password)
        if ok:
            self._verified.remember(password)
        return ok

    async def change(self, new_password: str) -> None:
        if len(new_password) < MIN_PASSWORD_LENGTH:
            raise ValueError(f"the new password needs at least {MIN_PASSWORD_LENGTH} characters")
        secret = await asyncio.to_thread(hash_password, new_password)
        await asyncio.to_thread(self._store.save, self._store.ADMIN, secret)
        self._secret = secret
        self._verified.forget()
