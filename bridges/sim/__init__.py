"""Simulated devices (pymodbus servers) for tests and the demo."""
