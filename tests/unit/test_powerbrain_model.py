"""The Power Brain profile's `model`: the five fields the API gives (issue 14 item 5)."""

from __future__ import annotations

from bridges.modbus.profiles.evse_powerbrain import model_string
from bridges.sim.powerbrain import PowerBrain


def test_model_has_manufacturer_device_versions_and_serial() -> None:
    brain = PowerBrain(serial="W00-001A")
    brain.evse.set("product_version", 0x010E_0000)  # firmware 1.14, build 0
    model = model_string(brain.evse.read(8003, 29))
    assert model == "cFos,Power Brain,1.0,1.14.0,W00-001A"
    # Clients take the firmware and the serial number by position (3 and 4).
    assert model.split(",")[3:] == ["1.14.0", "W00-001A"]
    # The meters: device id 0x101 is device version 1.1.
    assert model_string(brain.meter1.read(8003, 29)).split(",")[2] == "1.1"


def test_a_comma_in_a_register_string_cannot_shift_the_fields() -> None:
    brain = PowerBrain(serial="A,B", name="cFos Power,Brain")
    assert len(model_string(brain.evse.read(8003, 29)).split(",")) == 5
