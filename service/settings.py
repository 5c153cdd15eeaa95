"""Runtime settings: environment (CHARGEBUS_*), an optional TOML file and CLI flags."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

from pydantic import BaseModel, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from service.auth import MIN_PASSWORD_LENGTH

DEFAULT_EMBEDDED_BROKER_PORT = 1883


class MqttTarget(BaseModel):
    """Where the MQTT broker is, parsed from an mqtt:// or mqtts:// URL."""

    host: str
    port: int
    username: str | None = None
    password: str | None = None
    tls: bool = False

    @classmethod
    def from_url(cls, url: str) -> MqttTarget:
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts", "tcp"):
            # Not the URL itself: it may hold a password, and errors end up in logs.
            raise ValueError(
                f"MQTT URL must start with mqtt:// or mqtts://, not {parts.scheme or 'nothing'}://"
            )
        if not parts.hostname:
            raise ValueError("MQTT URL has no host (mqtt://user:pw@host:port)")
        tls = parts.scheme == "mqtts"
        return cls(
            host=parts.hostname,
            port=parts.port or (8883 if tls else 1883),
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            tls=tls,
        )

    def redacted(self) -> str:
        scheme = "mqtts" if self.tls else "mqtt"
        user = f"{self.username}:***@" if self.username else ""
        return f"{scheme}://{user}{self.host}:{self.port}"


class Settings(BaseSettings):
    # env_ignore_empty: docker compose and shells pass unset variables as empty strings, and
    # an empty variable must not override the TOML file.
    model_config = SettingsConfigDict(
        env_prefix="CHARGEBUS_", extra="forbid", env_ignore_empty=True
    )

    mqtt_url: str | None = Field(
        default=None,
        description="the broker's URL, mqtt://user:pw@host:1883 or mqtts://…; unset starts "
        "the embedded broker",
    )
    http_host: str = Field(default="127.0.0.1", description="address the /cnf API listens on")
    http_port: int = Field(
        default=8080, ge=0, le=65535, description="port of the /cnf API (0 = any free one)"
    )
    data_dir: Path = Field(
        default=Path("./data"),
        description="configuration, users, energy counters, admin password hash",
    )
    base_topic: str = Field(default="chargebus", description="root of all MQTT topics")
    admin_password: str | None = Field(
        default=None,
        description="the first admin password, used only while none is stored (unset: "
        "generated and logged at the first start)",
    )
    embedded_broker_host: str = Field(
        default="127.0.0.1", description="address of the embedded broker (without mqtt_url)"
    )
    embedded_broker_port: int = Field(
        default=DEFAULT_EMBEDDED_BROKER_PORT,
        ge=0,
        le=65535,
        description="port of the embedded broker (0 = any free one)",
    )
    diag_log_seconds: float = Field(
        default=300.0, gt=0, description="how long set_diag_logging runs, in seconds"
    )
    max_body_bytes: int = Field(
        default=256 * 1024, gt=0, description="largest request body the admin may send"
    )
    log_level: str = Field(default="INFO", description="DEBUG, INFO, WARNING or ERROR")
    log_format: Literal["text", "json"] = Field(
        default="text", description="log lines as text or as one JSON object each"
    )
    modbus_bridge: bool = Field(
        default=True, description="run the Modbus bridge in this process (off: it runs elsewhere)"
    )
    modbus_bridge_name: str = Field(
        default="modbus", pattern=r"^[A-Za-z0-9_-]{1,64}$", description="the bridge's topic name"
    )
    http_input_remote: bool = Field(
        default=False,
        description="set_ajax_* by `chargebus bridge http` processes sharing the requests over "
        "the bus (the core forwards, the bridges take them)",
    )
    ocpp_bridge: bool = Field(
        default=True,
        description="run the OCPP bridge in this process; it listens once an evse_ocpp device "
        "is configured (off: `chargebus bridge ocpp` runs elsewhere)",
    )
    ocpp_host: str = Field(
        default="127.0.0.1",
        description="address OCPP charge points connect to (0.0.0.0: every interface, as "
        "wallboxes on the network need)",
    )
    ocpp_port: int = Field(
        default=19520, ge=0, le=65535, description="port of the OCPP central system (0 = any)"
    )
    demo_ocpp: bool = Field(
        default=False,
        description="`chargebus demo` adds a simulated OCPP charge point (E3, id DEMO-OCPP)",
    )
    ocpp_tls_cert_file: Path | None = Field(
        default=None, description="certificate (PEM) for wss:// (OCPP security profile 2)"
    )
    ocpp_tls_key_file: Path | None = Field(
        default=None, description="private key of ocpp_tls_cert_file, when kept separately"
    )
    ha_discovery: bool = Field(default=True, description="announce devices to Home Assistant")
    ha_discovery_prefix: str = Field(
        default="homeassistant",
        pattern=r"^[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*$",
        description="Home Assistant's MQTT discovery prefix",
    )
    mqtt_ca_file: Path | None = Field(
        default=None, description="CA certificate(s) to verify an mqtts:// broker by"
    )
    mqtt_cert_file: Path | None = Field(
        default=None, description="client certificate for mqtts:// (PEM, may include the key)"
    )
    mqtt_key_file: Path | None = Field(
        default=None, description="private key of mqtt_cert_file, when kept separately"
    )

    @field_validator("base_topic")
    @classmethod
    def _topic_has_no_wildcards(cls, value: str) -> str:
        if (
            not value
            or any(c in value for c in "+#")
            or value.startswith("/")
            or value.endswith("/")
        ):
            raise ValueError(
                "base_topic must be a non-empty topic without wildcards or edge slashes"
            )
        return value

    @field_validator("admin_password")
    @classmethod
    def _admin_password_long_enough(cls, value: str | None) -> str | None:
        # The same rule as change_admin_pwd: a setting must not allow what the API refuses.
        if value is not None and len(value) < MIN_PASSWORD_LENGTH:
            raise ValueError(f"admin_password needs at least {MIN_PASSWORD_LENGTH} characters")
        return value

    @field_validator("mqtt_url", "admin_password", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        # docker compose and shells pass unset variables as empty strings.
        return None if value == "" else value

    @field_validator("mqtt_url")
    @classmethod
    def _url_parses(cls, value: str | None) -> str | None:
        if value:
            MqttTarget.from_url(value)
        return value or None

    @field_validator("mqtt_ca_file", "mqtt_cert_file", "mqtt_key_file", mode="before")
    @classmethod
    def _empty_path_is_unset(cls, value: object) -> object:
        # An empty string would become Path("."), the current directory.
        return None if value == "" else value

    @field_validator("mqtt_ca_file", "mqtt_cert_file", "mqtt_key_file")
    @classmethod
    def _tls_file_exists(cls, value: Path | None) -> Path | None:
        # Found at start-up, not at the first connect attempt deep in a retry loop.
        if value is not None and not value.is_file():
            raise ValueError(f"no such file: {value}")
        return value

    @model_validator(mode="after")
    def _tls_files_need_mqtts(self) -> Settings:
        given = [
            name
            for name in ("mqtt_ca_file", "mqtt_cert_file", "mqtt_key_file")
            if getattr(self, name) is not None
        ]
        target = self.mqtt_target()
        # Silently ignored TLS files would let a plain-text connection pass for a secure one.
        if given and (target is None or not target.tls):
            raise ValueError(f"{', '.join(given)}: only used with an mqtts:// mqtt_url")
        if self.mqtt_key_file is not None and self.mqtt_cert_file is None:
            raise ValueError("mqtt_key_file needs mqtt_cert_file")
        return self

    def mqtt_target(self) -> MqttTarget | None:
        return MqttTarget.from_url(self.mqtt_url) if self.mqtt_url else None


def load_settings(config_file: Path | None, overrides: dict[str, Any]) -> Settings:
    """Precedence, lowest first: TOML file, environment, CLI flags."""
    file_values: dict[str, Any] = {}
    if config_file is not None:
        with config_file.open("rb") as fh:
            file_values = tomllib.load(fh)
    env_values = Settings().model_dump(exclude_unset=True)
    merged = {**file_values, **env_values, **{k: v for k, v in overrides.items() if v is not None}}
    return Settings.model_validate(merged) if merged else Settings()
