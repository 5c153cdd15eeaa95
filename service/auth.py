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
from service.store import AdminSecret, Store, StoreError

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

    def unused(self, ticket: Ticket) -> None:
        self._throttle.unused(ticket, self._clock())


FileStamp = tuple[int, int, int]  # inode, mtime in ns, size


class AdminAccount:
    """The admin password as stored; checks cost one scrypt, run off the event loop.

    The stored hash is the password: `change_admin_pwd`, `chargebus admin-password` (another
    process, on the same data dir) and the first start write it. A running service notices
    when the file was replaced and uses the new hash from the next check on."""

    def __init__(self, store: Store, secret: AdminSecret) -> None:
        self._store = store
        self._secret = secret
        self._verified = VerifiedCache()
        self._stamp = self._file_stamp()
        # A password chosen at this start and not stored yet, and the generated one to show
        # once it is stored.
        self._unsaved = False
        self._to_show: str | None = None

    @classmethod
    def prepare(cls, store: Store, configured_password: str | None) -> AdminAccount:
        """The stored hash, or a new password held in memory until `commit()`: a start that
        fails (a port taken) stores nothing, so the next start generates and shows one.
        A configured password that is not the stored one is ignored with a warning."""
        secret = store.load_admin()
        if secret is not None:
            if configured_password is not None and not verify_password(
                secret, configured_password
            ):
                log.warning(
                    "the configured admin password (--admin-password, CHARGEBUS_ADMIN_PASSWORD "
                    "or the config file) is ignored: %s already holds one, and the setting is "
                    "only the first password. Log in with the stored one, or replace it with "
                    "`chargebus admin-password --data-dir %s` (or cmd=change_admin_pwd)",
                    store.path(store.ADMIN),
                    store.data_dir,
                )
            return cls(store, secret)
        password = configured_password or generate_password()
        account = cls(store, hash_password(password))
        account._unsaved = True
        account._to_show = password if configured_password is None else None
        return account

    def commit(self) -> None:
        """Once the start succeeded: stores a new password, and logs it if generated."""
        if not self._unsaved:
            return
        generated, self._to_show = self._to_show, None
        self._store.save(self._store.ADMIN, self._secret)
        self._stamp = self._file_stamp()
        self._unsaved = False
        if generated is not None:
            log.warning(
                "generated the admin password: %s (log in as 'admin'; change it with "
                "cmd=change_admin_pwd or `chargebus admin-password`; it is stored only as a "
                "hash and not shown again)",
                generated,
            )

    @classmethod
    def load_or_create(cls, store: Store, configured_password: str | None) -> AdminAccount:
        """`prepare` and `commit` at once (for tools and tests that have no start to fail)."""
        account = cls.prepare(store, configured_password)
        account.commit()
        return account

    def _file_stamp(self) -> FileStamp | None:
        try:
            st = self._store.path(self._store.ADMIN).stat()
        except OSError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def _reload_if_replaced(self) -> None:
        """One stat per check: the file is replaced (renamed over) by every writer."""
        if self._unsaved:
            return
        stamp = self._file_stamp()
        if stamp is None or stamp == self._stamp:
            return
        try:
            secret = self._store.load_admin()
        except StoreError as exc:
            log.error("admin password file changed but cannot be read, keeping the old: %s", exc)
            self._stamp = stamp
            return
        self._stamp = stamp
        if secret is not None and secret != self._secret:
            log.info("the admin password was changed on disk: using the new one")
            self._secret = secret
            self._verified.forget()

    async def check(self, password: str) -> bool:
        self._reload_if_replaced()
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
        self._stamp = self._file_stamp()
        self._unsaved, self._to_show = False, None
        self._verified.forget()
