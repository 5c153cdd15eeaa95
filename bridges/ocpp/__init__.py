"""The OCPP 1.6J bridge: chargebus as the central system of OCPP wallboxes (docs/ocpp.md).

- `device_types.py`: `evse_ocpp` (address = charge point id, id = connector);
- `meter_values.py`, `statuses.py`, `profiles.py`: pure translations between OCPP messages
  and the bus contract;
- `station.py`: one charge point's connection (the `ocpp` library's ChargePoint in the
  central-system role): boot, setup, answers, and the control task sending profiles;
- `bridge.py`: the bridge (bridges/common's DeviceBridge) with its aiohttp listener, the
  admission of connections (unknown ids and wrong passwords refused before the upgrade)
  and the state republishing;
- `runner.py`: its lifetime in `chargebus run` or as `chargebus bridge ocpp`.
"""
