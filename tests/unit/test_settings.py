"""Settings: environment variables, overrides, and one-sentence errors."""

from __future__ import annotations

import pytest

from streams.errors import ConfigError
from streams.settings import load_settings


def test_defaults() -> None:
    """Without environment or options, the documented defaults apply."""
    settings = load_settings()
    assert settings.smtp_port == 25
    assert settings.timeout == 10.0
    assert settings.allow_private_mx is False
    assert settings.dns_server == () and settings.allow_tld == ()
    assert settings.mail_from is None and settings.starttls is False


def test_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every field reads MXPROBE_<NAME>; lists split on commas and spaces."""
    monkeypatch.setenv("MXPROBE_SMTP_PORT", "2525")
    monkeypatch.setenv("MXPROBE_ALLOW_PRIVATE_MX", "1")
    monkeypatch.setenv("MXPROBE_ALLOW_TLD", "test, Example")
    monkeypatch.setenv("MXPROBE_DNS_SERVER", "127.0.0.1:5353 127.0.0.2")
    settings = load_settings()
    assert settings.smtp_port == 2525
    assert settings.allow_private_mx is True
    assert settings.allow_tld == ("test", "example")
    assert settings.resolver_config().name_servers == (("127.0.0.1", 5353), ("127.0.0.2", 53))


def test_options_override_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """A value given explicitly wins over the environment; None means "not given"."""
    monkeypatch.setenv("MXPROBE_TIMEOUT", "3")
    assert load_settings(timeout=7.5).timeout == 7.5
    assert load_settings(timeout=None).timeout == 3.0


def test_sub_configs_carry_the_settings() -> None:
    """Resolver and probe configs are built from the one Settings object."""
    settings = load_settings(timeout=4.0, smtp_port=2525, mail_from="probe@example.com")
    probe = settings.probe_config(default_helo="host.example")
    assert (probe.port, probe.timeout, probe.helo, probe.mail_from) == (
        2525,
        4.0,
        "host.example",
        "probe@example.com",
    )
    assert settings.resolver_config().lifetime == 4.0
    assert load_settings(helo="me.example").probe_config(default_helo="x").helo == "me.example"


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        ({"smtp_port": 0}, "--smtp-port / MXPROBE_SMTP_PORT"),
        ({"smtp_port": 70000}, "--smtp-port"),
        ({"timeout": -1}, "--timeout"),
        ({"concurrency": 0}, "--concurrency"),
        ({"allow_tld": ("local",)}, "cannot be allowed"),
        ({"allow_tld": ("no.dots",)}, "not a top-level domain"),
        ({"dns_server": ("resolver.example",)}, "not an IP address"),
        ({"dns_server": ("127.0.0.1:0",)}, "invalid port"),
        ({"mail_from": "nobody"}, "--mail-from"),
        ({"mx_ttl_floor": 100, "mx_ttl_ceiling": 10}, "mx-ttl-floor"),
    ],
)
def test_invalid_settings_name_the_option(overrides: dict[str, object], words: str) -> None:
    """An invalid value is a ConfigError naming the option/variable and the problem."""
    with pytest.raises(ConfigError) as caught:
        load_settings(**overrides)
    message = str(caught.value)
    assert words in message
    assert message.startswith("Invalid setting") and message.endswith(".")
    assert "\n" not in message


def test_mail_from_may_use_an_allowed_tld() -> None:
    """The probe sender is checked with the same TLD allowances as addresses."""
    assert load_settings(mail_from="probe@mxprobe.test", allow_tld=("test",)).mail_from
    with pytest.raises(ConfigError):
        load_settings(mail_from="probe@mxprobe.test")
