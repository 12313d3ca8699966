"""Command-line options are made from Settings fields: one definition, one default, one parser."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner

from streams.cli import cli
from streams.cli.options import SettingOption, probe_options, retry_options, settings_from
from streams.core.retry import DEFAULT_ATTEMPTS, Cause
from streams.settings import ENV_ONLY, Settings, where


def setting_options() -> dict[str, list[tuple[str, SettingOption]]]:
    """Every SettingOption of every mxprobe command, by the setting it sets."""
    found: dict[str, list[tuple[str, SettingOption]]] = {}
    assert isinstance(cli, click.Group)
    for name, command in cli.commands.items():
        for param in command.params:
            if isinstance(param, SettingOption):
                assert param.name is not None
                found.setdefault(param.name, []).append((name, param))
    return found


def test_every_setting_has_an_option_or_is_env_only() -> None:
    """Each field is set by an option of some command, unless it is listed as env-only."""
    options = setting_options()
    fields = set(Settings.model_fields)
    assert fields - ENV_ONLY == set(options)
    assert not ENV_ONLY & set(options)
    assert fields >= ENV_ONLY


def test_an_option_is_named_after_its_field() -> None:
    """--field-name, as error messages (settings.where) name it."""
    for setting, uses in setting_options().items():
        for _, option in uses:
            assert option.opts == [f"--{setting.replace('_', '-')}"]
            assert where(setting).startswith(option.opts[0] + " / ")


def test_env_only_settings_are_named_by_their_variable() -> None:
    """A setting without an option is named by its variable alone."""
    assert where("partitions") == "MXPROBE_PARTITIONS"
    assert where("smtp_port") == "--smtp-port / MXPROBE_SMTP_PORT"


@pytest.mark.parametrize(
    ("command", "shown"),
    [
        ("check", ["[env var: MXPROBE_SMTP_PORT; default: 25]", "MXPROBE_TIMEOUT; default: 10]"]),
        ("check", ["MXPROBE_HOST_RCPT_BURST; default:", "MXPROBE_DNS_TIMEOUT]"]),
        ("worker", ["MXPROBE_RETRY_DELAYS; default: 60,300,900,1800]", "MXPROBE_BROKER]"]),
    ],
)
def test_help_shows_each_settings_variable_and_default(command: str, shown: list[str]) -> None:
    """--help shows the variable and the default that Settings defines (no copy in help texts)."""
    result = CliRunner().invoke(cli, [command, "--help"], terminal_width=400)
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    for words in shown:
        assert words in text


def test_help_shows_the_default_attempt_limits_from_the_core() -> None:
    """--retry-attempts shows every cause's default limit, as core.retry defines it."""
    result = CliRunner().invoke(cli, ["worker", "--help"], terminal_width=400)
    text = " ".join(result.output.split())
    for cause, limit in DEFAULT_ATTEMPTS.items():
        assert f"{cause.value}={limit}" in text


@click.command()
@probe_options
@retry_options
def show(**options: Any) -> None:
    """Print the settings the options and the environment give."""
    settings = settings_from(options)
    click.echo(f"{settings.smtp_port} {settings.timeout} {settings.retry_attempts}")


def run_show(*args: str, env: dict[str, str] | None = None) -> str:
    result = CliRunner().invoke(show, list(args), env=env or {})
    assert result.exit_code == 0, result.output
    return result.output.strip()


def test_without_options_or_environment_the_settings_defaults_apply() -> None:
    """An option not given is left to Settings: its default."""
    assert run_show() == "25 10.0 {}"


def test_the_environment_applies_when_no_option_is_given() -> None:
    """MXPROBE_<FIELD> is read (by Settings) when the option is absent."""
    env = {"MXPROBE_SMTP_PORT": "2526", "MXPROBE_RETRY_ATTEMPTS": "dns=1"}
    assert run_show(env=env) == f"2526 10.0 { {Cause.DNS: 1} }"


def test_an_option_wins_over_the_environment() -> None:
    """The command line beats MXPROBE_<FIELD>."""
    env = {"MXPROBE_SMTP_PORT": "2526", "MXPROBE_TIMEOUT": "3"}
    assert run_show("--smtp-port", "2600", env=env) == "2600 3.0 {}"


def test_a_bad_environment_value_is_the_settings_error() -> None:
    """Click does not parse MXPROBE_* itself: the one parser (Settings) names the problem."""
    result = CliRunner().invoke(show, [], env={"MXPROBE_SMTP_PORT": "many"})
    assert "Invalid setting --smtp-port / MXPROBE_SMTP_PORT" in str(result.exception)


README = Path(__file__).resolve().parents[2] / "README.md"
_ROW = re.compile(r"^\| (?:`(--[a-z-]+)[^`]*`)? *\| `(MXPROBE_[A-Z_]+)[^`]*` \| ([^|]+) \|", re.M)


def readme_rows() -> list[tuple[str | None, str, str]]:
    """(option, variable, default) of each row of the README's option tables."""
    return [(m[1], m[2], m[3].strip()) for m in _ROW.finditer(README.read_text("utf-8"))]


def test_the_readme_tables_name_real_settings_with_their_defaults() -> None:
    """Each documented option and variable is a setting, and a numeric default is its own."""
    rows = readme_rows()
    assert len(rows) >= 25  # the options table was found, every row of it
    for option, variable, default in rows:
        field = variable.removeprefix("MXPROBE_").lower()
        assert field in Settings.model_fields, variable
        assert where(field) == (f"{option} / {variable}" if option else variable)
        if re.fullmatch(r"[0-9.]+", default):
            assert float(default) == Settings.model_fields[field].default, variable
