"""The devices a bridge serves, learnt from the retained `devices/{id}/config` topics: the
bridge needs no configuration of its own and may run on any host that reaches the broker."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from service.core.contract import ContractError, EvseConfig, MeterConfig, parse_device_config

Config = EvseConfig | MeterConfig


@dataclass(frozen=True, slots=True)
class Change:
    """A device came, changed or went: `old` and `new` are None for none."""

    dev_id: str
    old: Config | None
    new: Config | None
    # Why the config was refused (it broke the contract); the device is no longer served.
    error: str = ""


class DeviceDirectory:
    """The configurations of the devices `serves` accepts, by device id."""

    def __init__(self, serves: Callable[[Config], bool]) -> None:
        self._serves = serves
        self.devices: dict[str, Config] = {}
        self._payloads: dict[str, bytes] = {}

    def on_config(self, dev_id: str, payload: bytes) -> Change | None:
        """A config message → what changed for this bridge (None: nothing). A config that
        breaks the contract drops the device, with `error` saying why."""
        if self._payloads.get(dev_id) == payload and (payload or dev_id not in self.devices):
            return None
        old = self.devices.pop(dev_id, None)
        self._payloads.pop(dev_id, None)
        try:
            config = parse_device_config(payload)
        except ContractError as exc:
            return Change(dev_id, old, None, error=str(exc))
        if config is None or config.dev_id != dev_id or not self._serves(config):
            return Change(dev_id, old, None) if old is not None else None
        self.devices[dev_id] = config
        self._payloads[dev_id] = payload
        return Change(dev_id, old, config)

    def get(self, dev_id: str) -> Config | None:
        return self.devices.get(dev_id)

    def payload(self, dev_id: str) -> bytes | None:
        """The config message as it came (for fields the contract's model leaves out)."""
        return self._payloads.get(dev_id)
