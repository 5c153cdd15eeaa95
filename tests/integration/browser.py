"""A real browser for the dashboard's tests: Playwright for Python driving Debian's chromium
(scripts/ensure-chromium.sh installs it; Playwright's own browser download is never used).
Without chromium the tests that need it are skipped, with the reason."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
# Headless in a container as root: no sandbox, no GPU, and nothing that reaches out.
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def chromium_path() -> str | None:
    configured = os.environ.get("CHROMIUM")
    for candidate in (configured, *CANDIDATES, shutil.which("chromium")):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def skip_reason() -> str | None:
    """Why the browser tests cannot run here, or None when they can."""
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (it is a dev dependency: make venv)"
    if chromium_path() is None:
        return "no chromium at /usr/bin/chromium: run scripts/ensure-chromium.sh (make test does)"
    return None
