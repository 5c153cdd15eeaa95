"""The command line as a user meets it: help with defaults, each command only with its own
options, and every mistake as one line that names the problem and the fix, exit code 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.cli import main
from service.settings import Settings


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        code = main(list(argv))
    except SystemExit as exc:  # argparse's --help and usage errors
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    code, out, err = run_cli(capsys, *argv)
    assert (code, out) == (2, "")
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err and "https://" not in err
    return lines[0]


def test_the_top_level_help_has_no_placeholders(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "--help")
    assert code == 0
    assert "{" not in out and "}" not in out
    assert "DATA_DIR/demo" in out


def test_run_help_gives_each_setting_its_default_and_variable(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, _ = run_cli(capsys, "run", "--help")
    assert code == 0
    text = " ".join(out.split())  # argparse wraps lines
    assert "(default: 8080; env CHARGEBUS_HTTP_PORT)" in text
    assert "(default: data; env CHARGEBUS_DATA_DIR)" in text
    assert "(default: true; env CHARGEBUS_MODBUS_BRIDGE)" in text
    for name in Settings.model_fields:
        assert f"env CHARGEBUS_{name.upper()})" in text, name
    assert "unset starts the embedded broker" in text


def test_a_bridge_lists_only_what_a_bridge_uses(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "bridge", "modbus", "--help")
    assert code == 0
    text = " ".join(out.split())
    assert "--mqtt-url" in text and "(required; env CHARGEBUS_MQTT_URL)" in text
    assert "--modbus-bridge-name" in text
    # A bridge has no broker, /cnf API or data of its own.
    for other in ("embedded", "--http-port", "--data-dir", "--admin-password", "--ha-discovery"):
        assert other not in text, other
    code, out, _ = run_cli(capsys, "bridge", "http", "--help")
    assert code == 0 and "--http-port" in out and "--embedded-broker-port" not in out


def test_a_bad_number_is_one_line_without_a_web_link(capsys: pytest.CaptureFixture[str]) -> None:
    line = one_line_error(capsys, "run", "--http-port", "abc")
    assert line.startswith("chargebus run: bad setting --http-port 'abc': ")
    assert "valid integer" in line and line.endswith("(see chargebus run --help)")


def test_a_bad_environment_variable_is_named(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHARGEBUS_HTTP_PORT", "70000")
    line = one_line_error(capsys, "run")
    assert "bad setting CHARGEBUS_HTTP_PORT='70000': " in line and "65535" in line


def test_a_secret_is_not_echoed(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    line = one_line_error(capsys, "run", "--admin-password", "ab")
    assert "bad setting --admin-password (hidden): admin_password needs at least 4" in line
    assert "'ab'" not in line
    line = one_line_error(capsys, "run", "--mqtt-url", "http://core:s3cret-pw@broker:1883")
    assert "bad setting --mqtt-url (hidden): MQTT URL must start with mqtt://" in line
    assert "s3cret-pw" not in line


def test_a_mistyped_option_gets_the_commands_usage_and_a_suggestion(
    capsys: pytest.CaptureFixture[str],
) -> None:
    line = one_line_error(capsys, "run", "--http-prot", "8081")
    assert line == (
        "chargebus run: unknown option --http-prot (did you mean --http-port?) "
        "(see chargebus run --help)"
    )
    line = one_line_error(capsys, "bridge", "modbus", "--http-port", "1")
    assert line.startswith("chargebus bridge modbus: unknown option --http-port")


def test_other_usage_errors_are_one_line_too(capsys: pytest.CaptureFixture[str]) -> None:
    assert "required: COMMAND" in one_line_error(capsys)
    assert one_line_error(capsys, "sim", "--port", "x").startswith(
        "chargebus sim: argument --port: invalid int value: 'x'"
    )
    assert "unexpected argument 'extra'" in one_line_error(capsys, "run", "extra")


def test_a_bad_config_file_is_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    missing = f"{tmp_path}/missing.toml"
    assert f"cannot read config file {missing}: No such file" in one_line_error(
        capsys, "run", "--config", missing
    )
    broken = tmp_path / "broken.toml"
    broken.write_text("http_port = \n")
    assert "is not valid TOML" in one_line_error(capsys, "run", "--config", str(broken))
    unknown = tmp_path / "unknown.toml"
    unknown.write_text("colour = 'red'\nhttp_port = 'x'\n")
    line = one_line_error(capsys, "run", "--config", str(unknown))
    assert f"unknown setting 'colour' in {unknown}" in line
    assert f"bad setting http_port = 'x' in {unknown}" in line


def test_a_data_dir_that_is_a_file_is_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    a_file = tmp_path / "file"
    a_file.write_text("")
    line = one_line_error(capsys, "run", "--data-dir", str(a_file))
    assert f"data dir {a_file} is a file, not a directory: choose another with --data-dir" in line
    line = one_line_error(capsys, "demo", "--data-dir", str(a_file / "below"))
    assert f"data dir {a_file}/below/demo cannot be created (Not a directory)" in line
