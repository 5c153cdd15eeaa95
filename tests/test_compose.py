"""docker-compose.yml, Dockerfile, .env.example and mosquitto/ agree with each other.

No Docker is needed: the files are parsed, interpolated as compose does it (with .env.example)
and cross-checked. Where `docker compose` is installed, `docker compose config -q` runs as well
(it needs no engine); elsewhere that one test is skipped.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]

from tests.compose_interpolation import (
    InterpolationError,
    interpolate,
    interpolate_tree,
    read_env_file,
)

REPO = Path(__file__).resolve().parents[1]
COMPOSE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "Dockerfile"
ENV_EXAMPLE = REPO / ".env.example"
MOSQUITTO_CONF = REPO / "mosquitto" / "mosquitto.conf"
ACL = REPO / "mosquitto" / "acl"
PASSWD = "mosquitto/passwd"
PASSWD_RECIPE = REPO / "scripts" / "make-broker-passwd.sh"
LOOPBACK = "127.0.0.1"


# -- pure helpers ----------------------------------------------------------------------------


def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose["services"]
    return found


def bind_mounts(service: dict[str, Any]) -> list[tuple[str, str]]:
    """(host path, container path) of each bind mount; named volumes are left out."""
    mounts: list[tuple[str, str]] = []
    for volume in service.get("volumes", []):
        if isinstance(volume, str):
            source, target = volume.split(":")[:2]
            # Short syntax: a path starts with . / or ~; anything else names a volume.
            if source.startswith((".", "/", "~")):
                mounts.append((source, target))
        elif volume.get("type") == "bind":
            mounts.append((volume["source"], volume["target"]))
    return mounts


def published_host_ips(service: dict[str, Any]) -> list[str]:
    """The host address of each published port ("" when none is given = all interfaces)."""
    ips: list[str] = []
    for port in service.get("ports", []):
        if isinstance(port, dict):
            ips.append(str(port.get("host_ip", "")))
            continue
        parts = str(port).split(":")
        ips.append(parts[0] if len(parts) == 3 else "")
    return ips


def referenced_env_vars(compose_text: str) -> set[str]:
    """Names used as ${NAME}, ${NAME:-default}, ${NAME:?message} in the compose file
    ($${...} is a literal dollar sign, not a variable)."""
    return set(re.findall(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)", compose_text))


def documented_env_vars(env_example_text: str) -> set[str]:
    return set(re.findall(r"^([A-Za-z_][A-Za-z0-9_]*)=", env_example_text, re.MULTILINE))


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    joined = re.sub(r"\\\n", " ", text)
    instructions: list[tuple[str, str]] = []
    for line in joined.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        keyword, _, rest = stripped.partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
    return instructions


def conf_value(conf_text: str, key: str) -> str:
    values = re.findall(rf"^{key}\s+(\S+)\s*$", conf_text, re.MULTILINE)
    assert len(values) == 1, f"{key} should be set exactly once in mosquitto.conf: {values}"
    return str(values[0])


def acl_users(acl_text: str) -> set[str]:
    return set(re.findall(r"^user\s+(\S+)\s*$", acl_text, re.MULTILINE))


def url_users(service: dict[str, Any]) -> set[str]:
    url = str(service.get("environment", {}).get("CHARGEBUS_MQTT_URL", ""))
    return set(re.findall(r"^mqtts?://([^:@/]+)[:@]", url))


# -- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose_text() -> str:
    return COMPOSE.read_text()


@pytest.fixture(scope="module")
def compose(compose_text: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(compose_text)
    return loaded


# -- the checks ------------------------------------------------------------------------------


def test_every_service_has_an_image_or_a_build(compose: dict[str, Any]) -> None:
    missing = [
        name for name, s in services(compose).items() if not (s.get("image") or s.get("build"))
    ]
    assert missing == []


def test_bind_mounted_host_paths_exist(compose: dict[str, Any]) -> None:
    absent = []
    for name, service in services(compose).items():
        for source, _target in bind_mounts(service):
            relative = os.path.normpath(source)
            if relative == PASSWD:
                # Made by the recipe, never committed (it holds this installation's hashes).
                assert PASSWD_RECIPE.is_file() and os.access(PASSWD_RECIPE, os.X_OK)
                continue
            if not (REPO / relative).exists():
                absent.append(f"{name}: {source}")
    assert absent == []


def test_the_password_file_is_not_committed() -> None:
    ignored = (REPO / ".gitignore").read_text().splitlines()
    assert f"/{PASSWD}" in ignored or PASSWD in ignored


def test_published_ports_are_bound_to_loopback(compose: dict[str, Any]) -> None:
    exposed = {
        name: ips
        for name, s in services(compose).items()
        if (ips := published_host_ips(s)) and any(ip != LOOPBACK for ip in ips)
    }
    assert exposed == {}
    assert published_host_ips(services(compose)["chargebus"]) == [LOOPBACK]
    assert published_host_ips(services(compose)["mosquitto"]) == [LOOPBACK]


def test_chargebus_has_a_health_check_and_runs_as_non_root(compose: dict[str, Any]) -> None:
    instructions = dockerfile_instructions(DOCKERFILE.read_text())
    healthchecks = [args for keyword, args in instructions if keyword == "HEALTHCHECK"]
    assert len(healthchecks) == 1 and "/cnf?cmd=get_params" in healthchecks[0]
    assert not healthchecks[0].upper().startswith("NONE")
    users = [args for keyword, args in instructions if keyword == "USER"]
    assert users, "the Dockerfile has no USER: chargebus would run as root"
    assert users[-1].split(":")[0] not in ("root", "0")
    service = services(compose)["chargebus"]
    assert service.get("build"), "chargebus is built from this repository's Dockerfile"
    assert not service.get("healthcheck", {}).get("disable", False)
    assert service.get("user") in (None, "")


def test_the_broker_is_secured_by_the_mounted_files(compose: dict[str, Any]) -> None:
    conf = MOSQUITTO_CONF.read_text()
    assert conf_value(conf, "allow_anonymous") == "false"
    targets = {target for _source, target in bind_mounts(services(compose)["mosquitto"])}
    assert conf_value(conf, "password_file") in targets
    assert conf_value(conf, "acl_file") in targets
    assert "/mosquitto/config/mosquitto.conf" in targets
    assert services(compose)["mosquitto"]["image"].startswith("eclipse-mosquitto:2")


def test_mqtt_logins_exist_in_the_acl(compose: dict[str, Any]) -> None:
    users = set().union(*(url_users(s) for s in services(compose).values()))
    assert users == {"chargebus-core", "bridge-modbus"}
    assert users <= acl_users(ACL.read_text())
    # The ACL names the default base topic literally.
    for name in ("chargebus", "bridge"):
        env = services(compose)[name].get("environment", {})
        assert env.get("CHARGEBUS_BASE_TOPIC", "chargebus") == "chargebus"


def test_the_demo_profile_has_simulator_and_bridge(compose: dict[str, Any]) -> None:
    demo = {name for name, s in services(compose).items() if "demo" in s.get("profiles", [])}
    assert demo == {"sim"}
    sim_command = services(compose)["sim"]["command"]
    assert sim_command[:3] == ["sim", "--host", "0.0.0.0"]
    # The simulator configures its devices into chargebus, at the address the bridge uses.
    assert sim_command[sim_command.index("--advertise") + 1] == "sim"
    assert sim_command[sim_command.index("--configure") + 1] == "http://chargebus:8080/cnf"
    assert services(compose)["bridge"]["command"] == ["bridge", "modbus"]
    # Exactly one Modbus bridge: the core does not poll in-process as well.
    assert services(compose)["chargebus"]["environment"]["CHARGEBUS_MODBUS_BRIDGE"] == "false"
    assert "profiles" not in services(compose)["bridge"]
    # Neither serves the HTTP API the image's health check asks.
    assert services(compose)["sim"]["healthcheck"]["disable"] is True
    assert services(compose)["bridge"]["healthcheck"]["disable"] is True
    # The core and the broker run without a profile, so a plain `up` starts them.
    assert "profiles" not in services(compose)["chargebus"]
    assert "profiles" not in services(compose)["mosquitto"]


def test_referenced_env_vars_are_documented(compose_text: str) -> None:
    referenced = referenced_env_vars(compose_text)
    assert "CHARGEBUS_CORE_MQTT_PASSWORD" in referenced
    assert referenced - documented_env_vars(ENV_EXAMPLE.read_text()) == set()


def test_every_service_interpolates_with_the_env_example(compose: dict[str, Any]) -> None:
    """`cp .env.example .env; docker compose up` must get past interpolation: compose fills
    in every service, those of profiles not asked for too, before it filters by profile."""
    env = read_env_file(ENV_EXAMPLE.read_text())
    problems = {}
    for name, service in services(compose).items():
        try:
            interpolate_tree(service, env)
        except InterpolationError as exc:
            problems[name] = str(exc)
    assert problems == {}
    filled = interpolate_tree(compose, env)
    # Empty in .env.example: chargebus generates one; the demo's simulator says what is missing.
    assert services(filled)["chargebus"]["environment"]["CHARGEBUS_ADMIN_PASSWORD"] == ""
    assert services(filled)["sim"]["environment"]["CHARGEBUS_ADMIN_PASSWORD"] == ""
    core_url = services(filled)["chargebus"]["environment"]["CHARGEBUS_MQTT_URL"]
    assert core_url == "mqtt://chargebus-core:change-me-core@mosquitto:1883"


def test_the_core_password_is_still_required(compose: dict[str, Any]) -> None:
    # Without it chargebus could not log in to the broker: compose must stop and say so.
    env = read_env_file(ENV_EXAMPLE.read_text())
    del env["CHARGEBUS_CORE_MQTT_PASSWORD"]
    with pytest.raises(InterpolationError, match="CHARGEBUS_CORE_MQTT_PASSWORD"):
        interpolate_tree(services(compose)["chargebus"], env)


def test_the_env_file_is_not_committed() -> None:
    # .env holds the real passwords (the top of docker-compose.yml says to create it).
    ignored = (REPO / ".gitignore").read_text().splitlines()
    assert "/.env" in ignored or ".env" in ignored
    assert ".env.example" not in ignored


def docker_compose_answers() -> bool:
    """`docker compose config` needs the compose plugin, not a running engine."""
    docker = shutil.which("docker")
    if docker is None:
        return False
    try:
        done = subprocess.run(
            [docker, "compose", "version"], capture_output=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def test_docker_compose_accepts_the_file(compose: dict[str, Any]) -> None:
    # `config -q` validates against compose's own schema, with .env.example as the .env and
    # every profile on; the interpolation check above covers machines without compose.
    if not docker_compose_answers():
        pytest.skip("`docker compose` is not installed: the file is not validated by compose")
    profiles = sorted({p for s in services(compose).values() for p in s.get("profiles", [])})
    env = {
        k: v for k, v in os.environ.items()
        if k not in documented_env_vars(ENV_EXAMPLE.read_text())
    }  # fmt: skip
    command = [
        "docker", "compose", "-f", str(COMPOSE), "--env-file", str(ENV_EXAMPLE),
        *(arg for p in profiles for arg in ("--profile", p)), "config", "-q",
    ]  # fmt: skip
    done = subprocess.run(
        command,
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr


def test_interpolation_follows_compose() -> None:
    env = {"SET": "v", "EMPTY": ""}
    cases = {
        "$SET ${SET} $$SET $${SET}": "v v $SET ${SET}",
        "${UNSET} ${EMPTY}": " ",
        "${UNSET:-d} ${EMPTY:-d} ${SET:-d}": "d d v",
        "${UNSET-d} ${EMPTY-d} ${SET-d}": "d  v",
        "${UNSET:+r} ${EMPTY:+r} ${SET:+r}": "  r",
        "${UNSET+r} ${EMPTY+r} ${SET+r}": " r r",
        "${UNSET:-${SET}x}": "vx",
        "${EMPTY?m} ${SET:?m}": " v",
        "a $ b": "a $ b",
    }
    assert {text: interpolate(text, env) for text in cases} == cases
    for failing in ("${UNSET:?m}", "${EMPTY:?m}", "${UNSET?m}", "${SET", "${1A}", "${SET!x}"):
        with pytest.raises(InterpolationError):
            interpolate(failing, env)
    assert read_env_file(
        "# c\nA=1\nexport B = two \nC='x # y'\nD=\"q\"\nE=val # note\nF=\n"
    ) == {"A": "1", "B": "two", "C": "x # y", "D": "q", "E": "val", "F": ""}


# -- the helpers themselves ------------------------------------------------------------------


def test_helpers_read_both_compose_syntaxes() -> None:
    service = {
        "ports": ["8080:8080", "127.0.0.1:1883:1883", {"target": 1, "host_ip": "0.0.0.0"}],
        "volumes": ["data:/data", "./a:/a:ro", {"type": "bind", "source": "./b", "target": "/b"}],
    }
    assert published_host_ips(service) == ["", "127.0.0.1", "0.0.0.0"]
    assert bind_mounts(service) == [("./a", "/a"), ("./b", "/b")]
    assert referenced_env_vars("a: ${X:-1} ${Y:?m} $${Z} ${W}") == {"X", "Y", "W"}


def test_each_bridge_login_reports_only_devices_it_names() -> None:
    """A bridge login that could publish any device's state could fake a grid reading
    (docs/security.md): every bridge block lists its state topics one by one."""
    blocks = re.split(r"^user\s+", ACL.read_text(), flags=re.MULTILINE)[1:]
    bridges = {b.split()[0]: b for b in blocks if b.startswith("bridge-")}
    assert "bridge-modbus" in bridges
    for login, block in bridges.items():
        writes = re.findall(r"^topic write (\S+)$", block, re.MULTILINE)
        states = [t for t in writes if t.endswith("/state")]
        assert states, login
        assert all("+" not in t and "#" not in t for t in states), (login, states)
        assert not any(t.endswith("/command") or t.endswith("/set") for t in writes), login
        var = f"CHARGEBUS_BRIDGE_{login.removeprefix('bridge-').replace('-', '_').upper()}"
        assert f"{var}_MQTT_PASSWORD" in documented_env_vars(ENV_EXAMPLE.read_text())
