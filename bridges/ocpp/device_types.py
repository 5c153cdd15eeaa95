"""The device types the OCPP bridge serves, named as the cFos Charging Manager names them."""

from __future__ import annotations

from service.core.device_types import DeviceType

EVSE_OCPP = DeviceType("evse_ocpp", "evse", "EVSE with OCPP 1.6", "ocpp")
DEVICE_TYPES: tuple[DeviceType, ...] = (EVSE_OCPP,)


def device_types() -> list[DeviceType]:
    return list(DEVICE_TYPES)
