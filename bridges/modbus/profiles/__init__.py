"""Device profiles: one file per `dev_type`, each registering a `Profile` subclass by name.

Adding a device is adding a file here (start from `_blueprint.py`): `load_profiles()` imports
every module of this package whose name has no leading underscore, and each module's
`@register` puts its class in the registry. The service lists the
profiles' device types in `dev_meta`, so configurations may use them.
"""

from __future__ import annotations

import importlib
import pkgutil
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, TypeVar

from bridges.common.follower import Control
from bridges.modbus.connection import Endpoint, ModbusConnection
from bridges.modbus.register_map import RegisterMap
from service.core.contract import EvseConfig
from service.core.device_types import DeviceKind, DeviceType

# Control (what the core asks of an EVSE) is the bridge kit's; profiles take it from here.
__all__ = ["Control", "DeviceSpec", "Profile", "device_types", "profile_for", "register"]

DEFAULT_POLL_S = 1.0


@dataclass(frozen=True, slots=True)
class DeviceSpec:
    """The part of a device's configuration a Modbus poller needs."""

    dev_id: str
    dev_type: str
    endpoint: Endpoint
    unit: int
    poll_s: float = DEFAULT_POLL_S
    failsafe_current: int = EvseConfig.model_fields["failsafe_current"].default
    registers: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    @classmethod
    def from_config(cls, config: Mapping[str, Any], default_port: int) -> DeviceSpec:
        """From a `devices/{id}/config` payload; raises ValueError when it can't be polled."""
        address = str(config.get("address") or "")
        if not address:
            raise ValueError(f"{config.get('dev_id')}: no Modbus address configured")
        return cls(
            dev_id=str(config["dev_id"]),
            dev_type=str(config["dev_type"]),
            endpoint=Endpoint.parse(address, default_port),
            unit=int(config.get("id", 1)),
            poll_s=max(0.1, int(config.get("poll_interval", 1000)) / 1000),
            failsafe_current=int(
                config.get("failsafe_current", EvseConfig.model_fields["failsafe_current"].default)
            ),
            registers=dict(config.get("modbus_registers") or {}),
        )


class Profile(ABC):
    device_type: ClassVar[DeviceType]
    default_port: ClassVar[int] = 502
    # Which registers `cmd=modbus` reads: holding (function 03) or input (04).
    rpc_function: ClassVar[Literal["holding", "input"]] = "holding"

    def __init__(self, spec: DeviceSpec) -> None:
        self.spec = spec

    @property
    def kind(self) -> DeviceKind:
        return self.device_type.kind

    @abstractmethod
    async def read_state(self, conn: ModbusConnection) -> dict[str, Any]:
        """One poll: the state payload (without `ts`); raises ModbusError."""

    async def apply(self, conn: ModbusConnection, control: Control) -> None:
        """Writes a command to an EVSE; raises ModbusError."""
        raise NotImplementedError(f"{self.device_type.name} takes no commands")

    def applied(self, state: Mapping[str, Any]) -> Control | None:
        """What the EVSE reports as applied, read back in `state`; None if it can't tell."""
        return None

    def register_map(self, unit: int) -> RegisterMap | None:
        """The register map `cmd=modbus&read=all` reads at `unit`; None when there is none."""
        return None


P = TypeVar("P", bound=type[Profile])
PROFILES: dict[str, type[Profile]] = {}


def register(profile: P) -> P:
    name = profile.device_type.name
    if PROFILES.get(name, profile) is not profile:
        raise ValueError(f"two Modbus profiles for {name!r}")
    PROFILES[name] = profile
    return profile


def load_profiles() -> dict[str, type[Profile]]:
    for module in pkgutil.iter_modules(__path__):
        # `_blueprint.py` and other modules with a leading underscore are examples, not types.
        if not module.name.startswith("_"):
            importlib.import_module(f"{__name__}.{module.name}")
    return PROFILES


def device_types() -> list[DeviceType]:
    return [profile.device_type for profile in load_profiles().values()]


def profile_for(config: Mapping[str, Any]) -> Profile | None:
    """The profile polling the device of `config`; None for a device no profile polls."""
    profile = load_profiles().get(str(config.get("dev_type", "")))
    if profile is None:
        return None
    return profile(DeviceSpec.from_config(config, profile.default_port))
