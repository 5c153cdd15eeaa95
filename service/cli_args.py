"""The `chargebus` command line's arguments: which settings each command takes, their help
with defaults, and errors as one line that names the problem and where to look."""

from __future__ import annotations

import argparse
import difflib
import os
import sys
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from service import __version__
from service.settings import Settings

# The settings a bridge process uses; the service and the demo take them all.
_BRIDGE_COMMON = (
    "mqtt_url",
    "mqtt_ca_file",
    "mqtt_cert_file",
    "mqtt_key_file",
    "base_topic",
    "log_level",
    "log_format",
)
BRIDGE_SETTINGS: dict[str, tuple[str, ...]] = {
    "modbus": (*_BRIDGE_COMMON, "modbus_bridge_name"),
    "ocpp": (*_BRIDGE_COMMON, "ocpp_host", "ocpp_port", "ocpp_tls_cert_file", "ocpp_tls_key_file"),
    "http": (
        *_BRIDGE_COMMON,
        "http_host",
        "http_port",
        "admin_password",
        "max_body_bytes",
        "http_input_remote",
    ),
}
# Help that differs from the setting's own description in a bridge: it has no broker of its own.
_BRIDGE_HELP = {
    "mqtt_url": "the broker's URL, mqtt://user:pw@host:1883 or mqtts://…",
    "admin_password": "the admin password that set_ajax_* requests must carry (basic auth)",
}
_BRIDGE_REQUIRED = frozenset({"mqtt_url"})
# Settings whose value must not be echoed in an error (a URL may hold a password).
_SECRET = frozenset({"admin_password", "mqtt_url"})


class CliError(Exception):
    """A problem the user fixes by changing the command line, environment or files: shown as
    one line, exit code 2."""


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line naming the problem and where help is."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")

    def unknown(self, extras: Sequence[str]) -> NoReturn:
        options = [a.split("=", 1)[0] for a in extras if a.startswith("-")]
        if not options:
            self.error(f"unexpected argument {extras[0]!r}")
        known = [s for action in self._actions for s in action.option_strings]
        close = difflib.get_close_matches(options[0], known, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        self.error(f"unknown option {options[0]}{hint}")


def _default_text(name: str) -> str:
    default = Settings.model_fields[name].default
    if default is None:
        return "unset"
    if isinstance(default, bool):
        return str(default).lower()
    return str(default)


def _add_settings(
    parser: argparse.ArgumentParser,
    names: Sequence[str],
    help_overrides: Mapping[str, str],
    required: frozenset[str] = frozenset(),
) -> None:
    """A flag for each setting; None when not given, so that the environment and the file
    count (load_settings). Required ones too, as the environment may give them."""
    parser.add_argument("--config", type=Path, metavar="FILE", help="TOML file with settings")
    for name in names:
        field = Settings.model_fields[name]
        text = help_overrides.get(name) or field.description or name.replace("_", " ")
        # argparse %-formats help texts.
        text = text.replace("%", "%%")
        default = "required" if name in required else f"default: {_default_text(name)}"
        parser.add_argument(
            "--" + name.replace("_", "-"),
            dest=name,
            default=None,
            metavar=name.upper(),
            help=f"{text} ({default}; env CHARGEBUS_{name.upper()})",
        )


def _add_sim(sub: Any) -> None:
    sim = sub.add_parser(
        "sim",
        help="simulated cFos Power Brains and a grid meter (Modbus TCP)",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    sim.add_argument("--host", default="127.0.0.1", help="address to listen on")
    sim.add_argument("--port", type=int, default=4701, help="the first Power Brain's port")
    sim.add_argument("--count", type=int, default=2, help="how many Power Brains")
    sim.add_argument("--grid-port", type=int, default=5020, help="SDM630 grid meter; 0 = none")
    sim.add_argument(
        "--ocpp",
        type=int,
        default=0,
        metavar="N",
        help="also N simulated OCPP 1.6J charge points (ids SIM-OCPP-1…N), connecting to "
        "--ocpp-url",
    )
    sim.add_argument(
        "--ocpp-url",
        default="ws://127.0.0.1:19520/",
        help="the central system's URL; each charge point appends its id",
    )
    sim.add_argument(
        "--ocpp-quirks",
        default="",
        help="comma-separated quirks of the simulated charge points (docs/ocpp.md), "
        "e.g. no_boot_on_reconnect,watts_only",
    )
    sim.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR")
    sim.add_argument(
        "--configure",
        metavar="URL",
        help="configure these devices at a chargebus /cnf URL (admin password from "
        "CHARGEBUS_ADMIN_PASSWORD), e.g. http://chargebus:8080/cnf",
    )
    sim.add_argument(
        "--advertise", help="host name the bridge reaches the simulators by (default: --host)"
    )


def _add_admin_password(sub: Any) -> OneLineParser:
    text = (
        "set the admin password in the data dir, for a running chargebus too: typed at a "
        "prompt, read from stdin, or generated (--generate)"
    )
    parser: OneLineParser = sub.add_parser("admin-password", help=text, description=text)
    _add_settings(parser, ("data_dir",), {})
    parser.add_argument("--demo", action="store_true", help="the demo's (DATA_DIR/demo)")
    parser.add_argument(
        "--generate", action="store_true", help="generate a random password and print it"
    )
    return parser


class Parsers:
    """The top-level parser and each command's, so that an error names the command's."""

    def __init__(self) -> None:
        self.top = OneLineParser(
            prog="chargebus",
            description="chargebus, an MQTT-centric EV-charging load manager.",
        )
        self.top.add_argument("--version", action="version", version=f"chargebus {__version__}")
        sub = self.top.add_subparsers(dest="command", required=True, metavar="COMMAND")
        everything = list(Settings.model_fields)
        self.commands: dict[str, OneLineParser] = {}
        for name, text in (
            ("run", "run the load manager with its /cnf API"),
            (
                "demo",
                "the load manager with an embedded broker, two simulated Power Brains and a "
                "simulated grid meter, already configured (data in DATA_DIR/demo)",
            ),
        ):
            self.commands[name] = sub.add_parser(name, help=text, description=text)
            _add_settings(self.commands[name], everything, {})
        _add_sim(sub)
        self.commands["admin-password"] = _add_admin_password(sub)
        bridge = sub.add_parser("bridge", help="run one bridge as a process of its own")
        kinds = bridge.add_subparsers(dest="bridge", required=True, metavar="KIND")
        for kind, text in (
            ("modbus", "poll the Modbus devices of the configuration"),
            ("http", "serve set_ajax_meter / set_ajax_evse"),
            ("ocpp", "the OCPP 1.6J central system for the evse_ocpp devices"),
        ):
            self.commands[f"bridge {kind}"] = kinds.add_parser(kind, help=text, description=text)
            _add_settings(
                self.commands[f"bridge {kind}"],
                BRIDGE_SETTINGS[kind],
                _BRIDGE_HELP,
                _BRIDGE_REQUIRED,
            )

    def parse(self, argv: Sequence[str] | None) -> argparse.Namespace:
        args, extras = self.top.parse_known_args(argv)
        if extras:
            self.command_parser(args).unknown(extras)
        return args

    def command_parser(self, args: argparse.Namespace) -> OneLineParser:
        key = f"bridge {args.bridge}" if args.command == "bridge" else args.command
        return self.commands.get(key, self.top)


# -- settings errors as one line ------------------------------------------------------------


def settings_error(
    exc: ValidationError, overrides: Mapping[str, Any], config_file: Path | None
) -> CliError:
    """Each problem with where its value came from (flag, environment, file), joined."""
    return CliError("; ".join(_one_problem(e, overrides, config_file) for e in exc.errors()))


def _one_problem(
    error: ErrorDetails, overrides: Mapping[str, Any], config_file: Path | None
) -> str:
    message = error["msg"].removeprefix("Value error, ")
    if not error["loc"]:
        return message  # a rule across settings; the message names them
    name = str(error["loc"][0])
    if error["type"] == "extra_forbidden":
        return f"unknown setting {name!r} in {config_file}"
    shown = "(hidden)" if name in _SECRET else repr(error["input"])
    if overrides.get(name) is not None:
        where = f"--{name.replace('_', '-')} {shown}"
    elif f"CHARGEBUS_{name.upper()}" in os.environ:
        where = f"CHARGEBUS_{name.upper()}={shown}"
    else:
        where = f"{name} = {shown} in {config_file}"
    return f"bad setting {where}: {message}"


def config_file_error(exc: OSError | tomllib.TOMLDecodeError, config_file: Path) -> CliError:
    if isinstance(exc, tomllib.TOMLDecodeError):
        return CliError(f"config file {config_file} is not valid TOML: {exc}")
    return CliError(f"cannot read config file {config_file}: {exc.strerror or exc}")


def fail(prog: str, message: str) -> int:
    print(f"{prog}: {message}", file=sys.stderr)
    return 2
