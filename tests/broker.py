"""MQTT brokers for tests.

The broker a test run uses is chosen in this order:

1. ``MQTT_URL`` (e.g. ``mqtt://user:pw@127.0.0.1:1884``): a broker someone already runs.
   It must be on loopback; it can't be restarted by the tests.
2. A private ``mosquitto`` process on a free loopback port, with a generated config and log
   file in a temporary directory. This is the normal case (``scripts/ensure-mosquitto.sh``
   installs the binary).
3. Only when no binary is found but a Docker engine answers: testcontainers' mosquitto.

Tests talk to nothing but loopback.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import ipaddress
import os
import random
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType, TracebackType
from typing import Any, Self
from urllib.parse import unquote, urlsplit

from service.mosquitto_child import find_mosquitto as find_mosquitto  # re-exported for tests

LOOPBACK = "127.0.0.1"
DEFAULT_MQTT_PORT = 1883
MQTT_URL_ENV = "MQTT_URL"
READY_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0
INSTALL_HINT = (
    "no mosquitto binary found (looked on PATH and in /usr/sbin, /usr/local/sbin) and no "
    "Docker engine answers. Run `scripts/ensure-mosquitto.sh` to install Debian's mosquitto, "
    f"or set {MQTT_URL_ENV}=mqtt://127.0.0.1:PORT to use a broker that already runs."
)


class BrokerError(RuntimeError):
    """A test broker could not be found, started or used."""


class BrokerUnavailable(BrokerError):
    """Neither MQTT_URL, a mosquitto binary nor a Docker engine is there."""


class _PortTaken(BrokerError):
    """mosquitto could not bind its port: someone else got it first."""


@dataclass(frozen=True)
class BrokerAddress:
    """Where a test broker listens. ``url`` is what a client or the service is given."""

    host: str
    port: int
    url: str
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    controller: MosquittoBroker | None = field(default=None, repr=False, compare=False)

    @property
    def restartable(self) -> bool:
        return self.controller is not None

    def restart(self) -> None:
        """Stops and starts the broker on the same port. Only for a private mosquitto:
        retained messages and sessions are gone afterwards (persistence is off)."""
        if self.controller is None:
            raise BrokerError(
                f"the broker at {self.host}:{self.port} is not ours (MQTT_URL or Docker) "
                "and can't be restarted; use the restartable_broker fixture"
            )
        self.controller.restart()


# Ports handed out by find_free_port in this process: none is handed out twice.
_HANDED_OUT: set[int] = set()
_PICK = random.Random(f"{os.getpid()}-{time.time_ns()}")


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


def find_free_port(host: str = LOOPBACK) -> int:
    """A TCP port on ``host`` that was free a moment ago, for a server a test starts.

    Chosen below the OS's ephemeral range: a port the OS picks for bind(0) comes from the
    range it also gives every outgoing connection, so a client connecting between the choice
    and the server's bind could take it (seen: a core that found its HTTP port taken).
    """
    low, _ = _ephemeral_range()
    for _ in range(200):
        port = _PICK.randrange(max(1024, low - 12_000), low)
        if port in _HANDED_OUT:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
        _HANDED_OUT.add(port)
        return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        chosen: int = sock.getsockname()[1]
    _HANDED_OUT.add(chosen)
    return chosen


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and names that resolve only to those."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    if host.lower() == "localhost":
        return True
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except OSError:
        return False
    addresses = {str(info[4][0]) for info in infos}
    return bool(addresses) and all(ipaddress.ip_address(a).is_loopback for a in addresses)


def parse_mqtt_url(url: str) -> BrokerAddress:
    """Parses ``mqtt://[user[:password]@]host[:port]`` (``tcp://`` too); the port defaults
    to 1883. The URL itself is kept as given, credentials included."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("mqtt", "tcp"):
        raise ValueError(f"unsupported MQTT URL scheme in {url!r}: use mqtt://host:port")
    try:
        port = parts.port or DEFAULT_MQTT_PORT
    except ValueError as exc:
        raise ValueError(f"bad port in MQTT URL {url!r}") from exc
    if not parts.hostname:
        raise ValueError(f"no host in MQTT URL {url!r}")
    return BrokerAddress(
        host=parts.hostname,
        port=port,
        url=url.strip(),
        username=unquote(parts.username) if parts.username is not None else None,
        password=unquote(parts.password) if parts.password is not None else None,
    )


def broker_from_env() -> BrokerAddress | None:
    """The broker named by MQTT_URL (empty counts as unset), checked to be on loopback."""
    url = os.environ.get(MQTT_URL_ENV, "").strip()
    if not url:
        return None
    try:
        address = parse_mqtt_url(url)
    except ValueError as exc:
        raise BrokerError(f"{MQTT_URL_ENV}: {exc}") from exc
    if not is_loopback(address.host):
        raise BrokerError(
            f"{MQTT_URL_ENV} points at {address.host!r}; tests only talk to loopback "
            "(127.0.0.0/8, ::1, localhost)"
        )
    return address


def docker_engine_answers(timeout: float = 3.0) -> bool:
    """True if a ``docker`` CLI is there and ``docker info`` succeeds within ``timeout``."""
    docker = shutil.which("docker")
    if docker is None:
        return False
    try:
        done = subprocess.run(
            [docker, "info"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, timeout=timeout, check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


_LIVE: set[MosquittoBroker] = set()


@atexit.register
def _stop_leftovers() -> None:
    # Fixtures stop their brokers; this only catches a run that ends without finalizers.
    for broker in list(_LIVE):
        broker.stop()


class MosquittoBroker:
    """A private mosquitto process on a loopback port, with its config and log in ``workdir``.

    The port is picked free on the first start and kept, so ``stop()`` then ``start()``
    (or ``restart()``) brings the broker back where clients expect it.
    """

    def __init__(self, workdir: Path, *, port: int | None = None, binary: str | None = None,
                 ready_timeout: float = READY_TIMEOUT) -> None:
        found = binary or find_mosquitto()
        if found is None:
            raise BrokerUnavailable(INSTALL_HINT)
        self.binary = found
        self.workdir = workdir
        self.ready_timeout = ready_timeout
        self.host = LOOPBACK
        self._port = port
        self.config_path = workdir / "mosquitto.conf"
        self.log_path = workdir / "mosquitto.log"
        self.output_path = workdir / "mosquitto.out"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def port(self) -> int:
        if self._port is None:
            raise BrokerError("the broker has no port before its first start()")
        return self._port

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    @property
    def address(self) -> BrokerAddress:
        return BrokerAddress(self.host, self.port, self.url, controller=self)

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def start(self) -> None:
        """Starts mosquitto and waits until it accepts connections. A no-op if running."""
        if self.running:
            return
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self._port is not None:
            self._start_on_fixed_port(self._port)
            return
        last: _PortTaken | None = None
        for _ in range(5):
            port = find_free_port(self.host)
            try:
                self._launch(port)
            except _PortTaken as exc:
                last = exc
                continue
            self._port = port
            return
        raise BrokerError(f"no free loopback port for mosquitto after 5 tries: {last}")

    def stop(self) -> None:
        """Terminates mosquitto (SIGTERM, SIGKILL after 5 s) and waits for it. Idempotent."""
        process, self._process = self._process, None
        _LIVE.discard(self)
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=STOP_TIMEOUT)

    def restart(self) -> None:
        self.stop()
        self.start()

    def log_tail(self, lines: int = 30) -> str:
        chunks = []
        for path in (self.log_path, self.output_path):
            with contextlib.suppress(OSError):
                text = path.read_text(errors="replace").splitlines()[-lines:]
                if text:
                    chunks.append(f"--- {path.name} ---\n" + "\n".join(text))
        return "\n".join(chunks) or "(no mosquitto output)"

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"MosquittoBroker(port={self._port}, running={self.running})"

    def _start_on_fixed_port(self, port: int) -> None:
        # The port was ours a moment ago; retry briefly in case a client's socket lingers.
        deadline = time.monotonic() + self.ready_timeout
        while True:
            try:
                self._launch(port)
                return
            except _PortTaken:
                if time.monotonic() >= deadline:
                    raise BrokerError(
                        f"mosquitto can't get port {port} back: something else took it\n"
                        + self.log_tail()
                    ) from None
                time.sleep(0.1)

    def _config(self, port: int) -> str:
        lines = [
            f"listener {port} {self.host}",
            "allow_anonymous true",
            "set_tcp_nodelay true",
            "persistence false",
            f"log_dest file {self.log_path}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "log_timestamp_format %H:%M:%S",
        ]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            # Run as root, mosquitto switches to user "mosquitto" before it opens the log
            # file, which then can't be written in a private temporary directory.
            lines.append("user root")
        return "\n".join(lines) + "\n"

    def _launch(self, port: int) -> None:
        self.config_path.write_text(self._config(port))
        log_start = self.log_path.stat().st_size if self.log_path.exists() else 0
        with self.output_path.open("ab") as output:
            process = subprocess.Popen(
                [self.binary, "-c", str(self.config_path)],
                stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT,
            )
        self._process = process
        _LIVE.add(self)
        try:
            self._wait_ready(process, port, log_start)
        except BaseException:
            self.stop()
            raise

    def _new_log(self, offset: int) -> str:
        try:
            with self.log_path.open("rb") as log:
                log.seek(offset)
                return log.read().decode(errors="replace")
        except OSError:
            return ""

    def _wait_ready(self, process: subprocess.Popen[bytes], port: int, log_start: int) -> None:
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                if "Address already in use" in self._new_log(log_start):
                    raise _PortTaken(f"port {port} in use")
                raise BrokerError(
                    f"mosquitto exited with code {process.returncode} while starting on port "
                    f"{port}\n{self.log_tail()}"
                )
            if _accepts(self.host, port):
                if "running" in self._new_log(log_start):
                    return
                # An old mosquitto may log differently: alive a moment after the port
                # answered means it has bound it (a failed bind ends it at once).
                time.sleep(0.2)
                if process.poll() is None:
                    return
                continue
            time.sleep(0.05)
        raise BrokerError(
            f"mosquitto did not accept connections on {self.host}:{port} within "
            f"{self.ready_timeout:.0f}s\n{self.log_tail()}"
        )


def _accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _testcontainers_mqtt() -> ModuleType:
    for name in ("testcontainers.community.mqtt", "testcontainers.mqtt"):
        with contextlib.suppress(ImportError):
            return importlib.import_module(name)
    raise BrokerUnavailable(INSTALL_HINT + " (testcontainers has no MosquittoContainer)")


@contextlib.contextmanager
def docker_broker() -> Iterator[BrokerAddress]:
    """testcontainers' mosquitto; only used when no binary is there but Docker answers."""
    container: Any = _testcontainers_mqtt().MosquittoContainer()
    container.start()
    try:
        host = str(container.get_container_host_ip())
        port = int(container.get_exposed_port(DEFAULT_MQTT_PORT))
        if not is_loopback(host):
            raise BrokerError(f"the Docker broker is at {host!r}, not on loopback")
        yield BrokerAddress(host, port, f"mqtt://{host}:{port}")
    finally:
        container.stop()


@contextlib.contextmanager
def session_broker(workdir: Path) -> Iterator[BrokerAddress]:
    """The broker for a whole test run: MQTT_URL, else a private mosquitto, else Docker."""
    from_env = broker_from_env()
    if from_env is not None:
        yield from_env
        return
    binary = find_mosquitto()
    if binary is not None:
        with MosquittoBroker(workdir, binary=binary) as broker:
            yield broker.address
        return
    if docker_engine_answers():
        with docker_broker() as address:
            yield address
        return
    raise BrokerUnavailable(INSTALL_HINT)
