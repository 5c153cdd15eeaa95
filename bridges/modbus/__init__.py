"""Modbus side of chargebus: register maps, their codec, device profiles and pollers."""
