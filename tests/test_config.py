"""Configuration precedence (defaults < file < DISKNAME_* < flags) and its errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from diskname.config import ConfigError, resolve, show
from diskname.engine.config import EngineConfig


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "diskname.toml"
    path.write_text(text)
    return path


def test_defaults_when_nothing_is_given() -> None:
    assert resolve(EngineConfig, "engine") == EngineConfig()


def test_file_then_environment_then_flags(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        'refresh_interval = 7\nhttp_port = 9000\n[engine]\napi_token = "from-file"\n'
        "[host]\nlisten_port = 1\n",
    )
    env = {"DISKNAME_HTTP_PORT": "9100", "DISKNAME_API_TOKEN": "from-env", "HOME": "/x"}
    cfg = resolve(EngineConfig, "engine", file=path, env=env, flags={"http_port": 9200})
    assert cfg.refresh_interval == 7.0  # file only
    assert cfg.api_token == "from-env"  # env beats file
    assert cfg.http_port == 9200  # flag beats env
    only_file = resolve(EngineConfig, "engine", file=path)
    assert (only_file.http_port, only_file.api_token) == (9000, "from-file")


def test_booleans_and_paths_from_the_environment() -> None:
    env = {"DISKNAME_EVENTS": "off", "DISKNAME_STATE_DIR": "/var/lib/diskname"}
    cfg = resolve(EngineConfig, "engine", env=env)
    assert cfg.events is False
    assert cfg.state_dir == Path("/var/lib/diskname")


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("colour = 'blue'\n", ["unknown key 'colour'", "engine"]),
        ("http_port = 'eighty'\n", ["http_port", "'eighty'", "expected int"]),
        ("refresh_interval = true\n", ["refresh_interval", "expected float"]),
        ("http_port = \n", ["not valid TOML"]),
    ],
)
def test_file_errors_name_the_file_the_key_and_the_expectation(
    tmp_path: Path, text: str, words: list[str]
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        resolve(EngineConfig, "engine", file=path)
    message = str(info.value)
    assert str(path) in message
    for word in words:
        assert word in message


def test_bad_environment_value_names_the_variable() -> None:
    with pytest.raises(ConfigError, match="environment: DISKNAME_HTTP_PORT"):
        resolve(EngineConfig, "engine", env={"DISKNAME_HTTP_PORT": "x"})


def test_show_masks_secrets() -> None:
    cfg = EngineConfig(api_token="s3cret", dsn="postgresql://app:pw@db:5432/diskname")
    shown = show(cfg)
    assert shown["api_token"] == "***"
    assert shown["dsn"] == "postgresql://app:***@db:5432/diskname"
    assert "s3cret" not in orjson.dumps(shown).decode()
    no_password = "postgresql://app@db/diskname"
    assert show(EngineConfig(dsn=no_password))["dsn"] == no_password


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "diskname", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )


def test_config_show_command(tmp_path: Path) -> None:
    path = write(tmp_path, "[engine]\nrefresh_interval = 2.5\napi_token = 'tok'\n")
    out = run_cli(
        "config",
        "--show",
        "engine",
        "--config",
        str(path),
        env={"PATH": "/usr/bin:/bin", "DISKNAME_HTTP_PORT": "8181"},
    )
    assert out.returncode == 0, out.stderr
    shown = orjson.loads(out.stdout)
    assert shown["refresh_interval"] == 2.5
    assert shown["http_port"] == 8181
    assert shown["api_token"] == "***"


def test_cli_reports_a_bad_file_and_exits_2(tmp_path: Path) -> None:
    path = write(tmp_path, "nonsense = 1\n")
    out = run_cli("engine", "--config", str(path))
    assert out.returncode == 2
    assert "unknown key 'nonsense'" in out.stderr and str(path) in out.stderr


def test_version() -> None:
    out = run_cli("--version")
    assert out.returncode == 0 and out.stdout.startswith("diskname ")


def test_a_setting_that_cannot_work_is_reported_without_a_traceback() -> None:
    out = run_cli("agent", "--source", "sim", "--connect", "unix:/nonexistent/chan")
    assert out.returncode == 2
    assert out.stderr.strip() == "diskname: --source sim needs --sim-hw unix:PATH"
