"""The aiohttp adapter serving the cFos-compatible /cnf API."""
