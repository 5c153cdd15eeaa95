"""The `chargebus` command line."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from service import __version__
from service.embedded_broker import BrokerPortTaken
from service.http.server import HttpPortTaken
from service.settings import Settings, load_settings
from service.store import StoreError

log = logging.getLogger("chargebus")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="chargebus", description=__doc__)
    parser.add_argument("--version", action="version", version=f"chargebus {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the load manager with its /cnf API")
    run.add_argument("--config", type=Path, help="TOML file with settings")
    for name, field in Settings.model_fields.items():
        flag = "--" + name.replace("_", "-")
        run.add_argument(
            flag,
            dest=name,
            default=None,
            help=field.description or f"setting {name} (env CHARGEBUS_{name.upper()})",
        )
    return parser


def _configure_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(level.upper())
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(level.upper())


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    overrides: dict[str, Any] = {name: getattr(args, name, None) for name in Settings.model_fields}
    try:
        settings = load_settings(args.config, overrides)
    except (ValidationError, ValueError, OSError) as exc:
        print(f"chargebus: bad settings: {exc}", file=sys.stderr)
        return 2
    _configure_logging(settings.log_level)
    from service.app import run_until_stopped

    try:
        asyncio.run(run_until_stopped(settings))
    except (StoreError, BrokerPortTaken, HttpPortTaken) as exc:
        log.error("%s", exc)
        return 2
    except KeyboardInterrupt:
        pass
    return 0
