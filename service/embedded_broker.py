"""An in-process MQTT broker (amqtt) so that `chargebus run` works with nothing else."""

from __future__ import annotations

import contextlib
import errno
import logging
import socket
from collections.abc import AsyncIterator

from service.settings import DEFAULT_EMBEDDED_BROKER_PORT, MqttTarget

log = logging.getLogger(__name__)


class BrokerPortTaken(RuntimeError):
    pass


def port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


def free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def choose_port(host: str, port: int) -> int:
    """The configured port; if it is taken, say so. Only the default port falls back to a
    free one, so an explicitly configured port is never silently moved."""
    if port == 0:
        return free_port(host)
    if port_is_free(host, port):
        return port
    hint = (
        f"port {port} on {host} is taken, probably by an MQTT broker that is already "
        f"running. To use that broker instead, set CHARGEBUS_MQTT_URL=mqtt://{host}:{port} "
        f"(or --mqtt-url); to move the embedded broker, set CHARGEBUS_EMBEDDED_BROKER_PORT."
    )
    if port != DEFAULT_EMBEDDED_BROKER_PORT:
        raise BrokerPortTaken(hint)
    chosen = free_port(host)
    log.warning("%s Starting the embedded broker on free port %d instead.", hint, chosen)
    return chosen


@contextlib.asynccontextmanager
async def embedded_broker(host: str, port: int) -> AsyncIterator[MqttTarget]:
    try:
        from amqtt.broker import Broker
    except ImportError as exc:  # pragma: no cover - depends on the install extra
        raise RuntimeError(
            "no MQTT URL is configured and the embedded broker is not installed: "
            "install chargebus[embedded] or set CHARGEBUS_MQTT_URL"
        ) from exc
    chosen = choose_port(host, port)
    # amqtt logs every connection at INFO; our own log says what matters.
    logging.getLogger("amqtt").setLevel(logging.WARNING)
    logging.getLogger("transitions").setLevel(logging.WARNING)
    broker = Broker(
        {
            "listeners": {"default": {"type": "tcp", "bind": f"{host}:{chosen}"}},
            "plugins": {
                "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}
            },
        }
    )
    await broker.start()
    try:
        yield MqttTarget(host=host, port=chosen)
    finally:
        await broker.shutdown()
