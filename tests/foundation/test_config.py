from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from payrescue.config import ConfigError, Settings, load_settings

SECRET = "x" * 40


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("PAYRESCUE_"):
            monkeypatch.delenv(name)


def test_demo_mode_needs_no_secret_and_uses_sqlite_in_the_data_dir(tmp_path: Path) -> None:
    settings = load_settings(demo=True, data_dir=tmp_path)
    assert settings.effective_database_url == (
        f"sqlite+aiosqlite:///{(tmp_path / 'payrescue.sqlite3').resolve()}"
    )
    assert settings.business_timezone == "Europe/Berlin"
    assert len(settings.secret) >= 32


def test_secret_key_is_required_outside_demo_mode() -> None:
    with pytest.raises(ConfigError, match=r"^PAYRESCUE_SECRET_KEY: required outside demo mode"):
        load_settings()


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("PAYRESCUE_PORT", "eighty", "PAYRESCUE_PORT: Input should be a valid integer"),
        ("PAYRESCUE_PORT", "70000", "PAYRESCUE_PORT: Input should be less than or equal to 65535"),
        ("PAYRESCUE_DEFAULT_LANGUAGE", "fr", "PAYRESCUE_DEFAULT_LANGUAGE: Input should be 'de' or"),
        ("PAYRESCUE_BUSINESS_TIMEZONE", "Mars/Olympus", "expected an IANA time zone"),
        ("PAYRESCUE_BUSINESS_HOURS", "always", "expected days and hours such as"),
        ("PAYRESCUE_QUIET_HOURS", "9pm-8am", "expected HH:MM-HH:MM"),
        ("PAYRESCUE_PUBLIC_BASE_URL", "not a url", "PAYRESCUE_PUBLIC_BASE_URL: "),
    ],
)
def test_a_wrong_value_is_named_in_one_line(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, expected: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as raised:
        load_settings(secret_key=SECRET)
    message = str(raised.value)
    assert expected in message
    assert "\n" not in message


def test_toml_file_is_read_and_environment_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "payrescue.toml"
    config.write_text(f'secret_key = "{SECRET}"\nport = 9000\ndefault_language = "de"\n')
    monkeypatch.setenv("PAYRESCUE_PORT", "9100")
    settings = load_settings(config)
    assert settings.port == 9100
    assert settings.default_language == "de"


def test_unknown_setting_in_toml_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "payrescue.toml"
    config.write_text(f'secret_key = "{SECRET}"\nprot = 9000\n')
    with pytest.raises(ConfigError, match="PAYRESCUE_PROT: unknown setting"):
        load_settings(config)


def test_missing_config_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load_settings(tmp_path / "nope.toml")


def test_secret_values_are_never_echoed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PAYRESCUE_SECRET_KEY", "too-short-but-secret")
    with pytest.raises(ConfigError) as raised:
        load_settings()
    assert "too-short-but-secret" not in str(raised.value)


def test_start_up_with_a_bad_value_prints_one_line_and_no_traceback(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "PAYRESCUE_PORT": "eighty", "PAYRESCUE_SECRET_KEY": SECRET}
    result = subprocess.run(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "payrescue.cli", "run"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60, check=False,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "payrescue: configuration error: PAYRESCUE_PORT: Input should be a valid integer, "
        "unable to parse string as an integer (got 'eighty')"
    ]


@pytest.mark.parametrize("blank", ["", "  \t"], ids=["empty", "blank"])
@pytest.mark.parametrize("name", sorted(set(Settings.model_fields) - {"secret_key"}))
def test_a_blank_setting_means_unset(monkeypatch: pytest.MonkeyPatch, name: str,
                                     blank: str) -> None:
    # `PAYRESCUE_BOT_TOKEN=` in a .env file, or a compose file passing on an unset variable
    monkeypatch.setenv(f"PAYRESCUE_{name.upper()}", blank)
    settings = load_settings(secret_key=SECRET)
    assert getattr(settings, name) == Settings.model_fields[name].get_default(
        call_default_factory=True)


@pytest.mark.parametrize("blank", ["", "   "])
def test_a_blank_secret_key_is_missing(monkeypatch: pytest.MonkeyPatch, blank: str) -> None:
    monkeypatch.setenv("PAYRESCUE_SECRET_KEY", blank)
    with pytest.raises(ConfigError, match=r"^PAYRESCUE_SECRET_KEY: required outside demo"):
        load_settings()


def test_values_are_trimmed_and_a_blank_toml_value_is_unset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "payrescue.toml"
    config.write_text(f'secret_key = "{SECRET}"\nbot_username = ""\nport = " 9000 "\n')
    monkeypatch.setenv("PAYRESCUE_BOT_TOKEN", " 123456:ABC-def\n")
    settings = load_settings(config)
    assert settings.bot_token is not None
    assert settings.bot_token.get_secret_value() == "123456:ABC-def"
    assert settings.bot_username is None
    assert settings.port == 9000


def test_db_upgrade_style_settings_need_no_key_but_cannot_sign() -> None:
    settings = load_settings(need_secret=False)
    with pytest.raises(ConfigError, match="PAYRESCUE_SECRET_KEY"):
        settings.secret  # noqa: B018 - the property is what a signing command would call
