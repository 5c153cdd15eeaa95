"""chargebus: MQTT-centric EV-charging load manager with a cFos-compatible /cnf API."""

__version__ = "0.1.0"

# Clients pick field names by the major.minor of params.version (power_w since 1.2), so
# we report a cFos-style API version there and our own version in `chargebus_version`.
CFOS_API_VERSION = "1.25.0"
