"""Settings: MQTT URLs, CHARGEBUS_* environment, TOML file < env < CLI precedence."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from service.settings import MqttTarget, Settings, load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith("CHARGEBUS_"):
            monkeypatch.delenv(name)


# -- MqttTarget -----------------------------------------------------------------------------


def test_mqtt_url_with_credentials() -> None:
    target = MqttTarget.from_url("mqtt://user:pw@broker.local:1884")
    assert (target.host, target.port, target.username, target.password, target.tls) == (
        "broker.local", 1884, "user", "pw", False,
    )


def test_mqtt_default_port() -> None:
    target = MqttTarget.from_url("mqtt://broker")
    assert target.port == 1883
    assert target.username is None
    assert target.password is None


def test_mqtts_default_port_and_tls() -> None:
    target = MqttTarget.from_url("mqtts://broker")
    assert target.port == 8883
    assert target.tls is True


def test_mqtt_url_percent_encoded_credentials() -> None:
    target = MqttTarget.from_url("mqtt://us%40er:p%3Aw%2F@h:1")
    assert target.username == "us@er"
    assert target.password == "p:w/"


@pytest.mark.parametrize(
    "url", ["http://broker:1883", "broker:1883", "ws://broker", "mqtt://", "mqtt://:1883", ""]
)
def test_bad_mqtt_urls(url: str) -> None:
    with pytest.raises(ValueError):
        MqttTarget.from_url(url)


def test_redacted_hides_password() -> None:
    redacted = MqttTarget.from_url("mqtts://user:topsecret@h:1").redacted()
    assert "topsecret" not in redacted
    assert redacted == "mqtts://user:***@h:1"
    assert MqttTarget.from_url("mqtt://h").redacted() == "mqtt://h:1883"


# -- Settings -------------------------------------------------------------------------------


def test_defaults() -> None:
    settings = Settings()
    assert settings.mqtt_url is None
    assert settings.mqtt_target() is None
    assert settings.http_port == 8080
    assert settings.base_topic == "chargebus"
    assert settings.admin_password is None


def test_env_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHARGEBUS_HTTP_PORT", "9090")
    monkeypatch.setenv("CHARGEBUS_MQTT_URL", "mqtt://u:p@envhost:1999")
    monkeypatch.setenv("CHARGEBUS_BASE_TOPIC", "site/cb")
    monkeypatch.setenv("HTTP_PORT", "1")  # without the prefix: not ours
    settings = Settings()
    assert settings.http_port == 9090
    assert settings.base_topic == "site/cb"
    target = settings.mqtt_target()
    assert target is not None
    assert (target.host, target.port, target.username) == ("envhost", 1999, "u")


@pytest.mark.parametrize("name", ["CHARGEBUS_MQTT_URL", "CHARGEBUS_ADMIN_PASSWORD"])
def test_empty_env_is_unset(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    monkeypatch.setenv(name, "")
    settings = Settings()
    assert settings.mqtt_url is None
    assert settings.admin_password is None


def test_env_bad_url_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHARGEBUS_MQTT_URL", "http://x")
    with pytest.raises(ValidationError):
        Settings()


@pytest.mark.parametrize("topic", ["a/+/b", "a/#", "#", "", "/a", "a/"])
def test_bad_base_topic_refused(topic: str) -> None:
    with pytest.raises(ValidationError, match="base_topic"):
        Settings(base_topic=topic)


@pytest.mark.parametrize("port", [-1, 65536])
def test_port_range(port: int) -> None:
    with pytest.raises(ValidationError):
        Settings(http_port=port)


def toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "chargebus.toml"
    path.write_text(text)
    return path


def test_load_settings_without_anything() -> None:
    assert load_settings(None, {}) == Settings()


def test_load_settings_file(tmp_path: Path) -> None:
    path = toml(tmp_path, 'http_port = 1111\nbase_topic = "file/topic"\ndata_dir = "/srv/cb"\n')
    settings = load_settings(path, {})
    assert settings.http_port == 1111
    assert settings.base_topic == "file/topic"
    assert settings.data_dir == Path("/srv/cb")


def test_precedence_file_env_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = toml(tmp_path, 'http_port = 1111\nhttp_host = "0.0.0.0"\nlog_level = "DEBUG"\n')
    monkeypatch.setenv("CHARGEBUS_HTTP_PORT", "2222")
    monkeypatch.setenv("CHARGEBUS_LOG_LEVEL", "WARNING")
    settings = load_settings(path, {"http_port": 3333, "log_level": None})
    assert settings.http_port == 3333  # CLI beats env and file
    assert settings.log_level == "WARNING"  # env beats file; a None flag is no override
    assert settings.http_host == "0.0.0.0"  # file beats default
    assert load_settings(path, {}).http_port == 2222
    monkeypatch.delenv("CHARGEBUS_HTTP_PORT")
    assert load_settings(path, {}).http_port == 1111


def test_load_settings_refuses_unknown_file_key(tmp_path: Path) -> None:
    with pytest.raises(ValidationError):
        load_settings(toml(tmp_path, "no_such_setting = 1\n"), {})


def test_load_settings_refuses_bad_topic_from_file(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="base_topic"):
        load_settings(toml(tmp_path, 'base_topic = "a/#"\n'), {})


def test_load_settings_refuses_bad_topic_from_cli() -> None:
    with pytest.raises(ValidationError, match="base_topic"):
        load_settings(None, {"base_topic": "x/+"})


def test_empty_env_does_not_override_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHARGEBUS_MQTT_URL", "")
    settings = load_settings(toml(tmp_path, 'mqtt_url = "mqtt://filehost:1884"\n'), {})
    assert settings.mqtt_url == "mqtt://filehost:1884"


def test_a_too_short_admin_password_is_refused_like_change_admin_pwd_does() -> None:
    with pytest.raises(ValidationError, match="at least 4 characters"):
        Settings(admin_password="abc")
    assert Settings(admin_password="abcd").admin_password == "abcd"
