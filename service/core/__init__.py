"""Pure domain logic: models, device types, derived device info. No I/O here."""
