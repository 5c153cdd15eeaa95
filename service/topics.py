"""Topic names of the chargebus MQTT contract (docs/mqtt.md)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Topics:
    base: str

    @property
    def status(self) -> str:
        return f"{self.base}/status"

    @property
    def params(self) -> str:
        return f"{self.base}/params"

    def device(self, dev_id: str, leaf: str) -> str:
        return f"{self.base}/devices/{dev_id}/{leaf}"

    def config(self, dev_id: str) -> str:
        return self.device(dev_id, "config")

    def state(self, dev_id: str) -> str:
        return self.device(dev_id, "state")

    def info(self, dev_id: str) -> str:
        return self.device(dev_id, "info")

    def command(self, dev_id: str) -> str:
        return self.device(dev_id, "command")

    def set(self, dev_id: str) -> str:
        return self.device(dev_id, "set")

    def all_devices(self, leaf: str) -> str:
        return f"{self.base}/devices/+/{leaf}"

    def parse_device_topic(self, topic: str) -> tuple[str, str] | None:
        """`{base}/devices/{id}/{leaf}` → (id, leaf); anything else → None."""
        prefix = f"{self.base}/devices/"
        if not topic.startswith(prefix):
            return None
        rest = topic[len(prefix) :].split("/")
        if len(rest) != 2 or not rest[0] or not rest[1]:
            return None
        return rest[0], rest[1]
