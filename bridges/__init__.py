"""Bridges connect devices and external inputs to the chargebus MQTT bus."""
