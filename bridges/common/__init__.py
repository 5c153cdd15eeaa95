"""The bridge kit: what every device bridge shares, so a new bridge writes only its device
protocol.

- `directory.py`: the devices a bridge serves, learnt from the retained `config` topics;
- `follower.py`: the core's commands per EVSE, and the fail-safe rule (core offline, or no
  fresh command for the staleness age → the EVSE's `failsafe_current`);
- `publisher.py`: states with the time of receipt, and the bridge's retained `status`;
- `bridge.py`: `DeviceBridge`, the base that routes the core's topics to the three above.

The payloads are the contract's models (service/core/contract.py). The Modbus bridge
(bridges/modbus/) and the OCPP bridge (bridges/ocpp/) are built on it; CONTRIBUTING.md says
how to add another.
"""
