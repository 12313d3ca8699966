"""Settings: environment variables, overrides, and one-sentence errors."""

from __future__ import annotations

import itertools
import math
import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from streams.core.host_state import HostLimits
from streams.core.retry import Cause
from streams.errors import ConfigError
from streams.settings import Settings, load_settings


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
    assert (probe.port, probe.command_timeout, probe.helo, probe.mail_from) == (
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
        # No option sets it: the message names only its variable.
        ({"mx_ttl_floor": 100, "mx_ttl_ceiling": 10}, "setting MXPROBE_MX_TTL_FLOOR:"),
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


# --- politeness and retries ---------------------------------------------------------

#: The attempt limits `--retry-attempts` documents as the defaults.
DOCUMENTED_ATTEMPTS = {
    Cause.GREYLISTED: 4,
    Cause.THROTTLED: 3,
    Cause.TIMEOUT: 2,
    Cause.DNS: 3,
    Cause.TEMPORARY: 2,
    Cause.BUDGET: 100,
}
YAHOO_HOST = "mta5.am0.yahoodns.net"
GOOGLE_HOST = "gmail-smtp-in.l.google.com"
UNLISTED_HOST = "mx.strict.test"


def write_politeness(tmp_path: Path, text: str) -> Path:
    """A politeness file holding ``text``."""
    path = tmp_path / "politeness.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_politeness_and_retry_defaults() -> None:
    """Without environment or options, politeness and retries have the documented defaults."""
    settings = load_settings()
    assert settings.retry_delays == (60.0, 300.0, 900.0, 1800.0)
    assert settings.retry_attempts == {}  # every cause keeps its default limit
    assert settings.retry_max_age == 7200.0
    assert settings.host_rcpt_per_second == 1.0
    assert settings.host_rcpt_burst == 20
    assert settings.host_connections_per_minute == 6.0
    assert settings.host_max_sessions == 2
    assert settings.session_idle == 2.0
    assert settings.politeness_file is None


# (field, environment text, value as an option gives it, the setting that results)
NEW_FIELDS = [
    ("retry_delays", "1, 2 5", "1, 2 5", (1.0, 2.0, 5.0)),
    ("retry_delays", "0.5", (0.5,), (0.5,)),
    (
        "retry_attempts",
        "greylisted=5,timeout=1",
        "greylisted=5,timeout=1",
        {Cause.GREYLISTED: 5, Cause.TIMEOUT: 1},
    ),
    ("retry_max_age", "600", 600.0, 600.0),
    ("host_rcpt_per_second", "2.5", 2.5, 2.5),
    ("host_rcpt_burst", "7", 7, 7),
    ("host_connections_per_minute", "12", 12.0, 12.0),
    ("host_max_sessions", "3", 3, 3),
    ("session_idle", "0", 0.0, 0.0),
    ("session_idle", "0.25", 0.25, 0.25),
    (
        "politeness_file",
        "/etc/mxprobe/p.toml",
        Path("/etc/mxprobe/p.toml"),
        Path("/etc/mxprobe/p.toml"),
    ),
]
#: A valid environment value for each field, unlike every value in NEW_FIELDS.
OTHER_ENV = {
    "retry_delays": "7,8",
    "retry_attempts": "dns=1",
    "retry_max_age": "60",
    "host_rcpt_per_second": "9",
    "host_rcpt_burst": "99",
    "host_connections_per_minute": "1",
    "host_max_sessions": "9",
    "session_idle": "9",
    "politeness_file": "/elsewhere.toml",
}


@pytest.mark.parametrize(("field", "env_text", "option", "expected"), NEW_FIELDS)
def test_new_fields_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, field: str, env_text: str, option: object, expected: object
) -> None:
    """Each politeness and retry field reads MXPROBE_<FIELD>."""
    monkeypatch.setenv(f"MXPROBE_{field.upper()}", env_text)
    assert getattr(load_settings(), field) == expected


@pytest.mark.parametrize(("field", "env_text", "option", "expected"), NEW_FIELDS)
def test_new_fields_from_overrides(
    monkeypatch: pytest.MonkeyPatch, field: str, env_text: str, option: object, expected: object
) -> None:
    """Each politeness and retry field is set by its option, which wins over the environment."""
    monkeypatch.setenv(f"MXPROBE_{field.upper()}", OTHER_ENV[field])
    assert getattr(load_settings(**{field: option}), field) == expected


def test_retry_attempts_in_the_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    """MXPROBE_RETRY_ATTEMPTS overrides the named causes; the others keep their defaults."""
    monkeypatch.setenv("MXPROBE_RETRY_ATTEMPTS", "greylisted=5, timeout = 1")
    attempts = dict(load_settings().retry_policy().attempts)
    assert attempts == {**DOCUMENTED_ATTEMPTS, Cause.GREYLISTED: 5, Cause.TIMEOUT: 1}


# (field, value given as text, words the message must hold besides the option)
INVALID_NEW_VALUES = [
    ("retry_delays", "", "at least one retry delay"),
    ("retry_delays", " , ", "at least one retry delay"),
    ("retry_delays", "-1", "above 0"),
    ("retry_delays", "0,5", "above 0"),
    ("retry_delays", "5,1", "must not decrease"),
    ("retry_delays", "x", "'x' is not a number of seconds"),
    ("retry_delays", "60,5min", "'5min' is not a number of seconds"),
    ("retry_delays", "inf", "above 0"),
    ("retry_delays", "nan", "above 0"),
    ("retry_attempts", "greyed=2", "'greyed' is not a retry cause"),
    ("retry_attempts", "greylisted=-1", "0 or more"),
    ("retry_attempts", "greylisted=1.5", "whole number"),
    ("retry_attempts", "greylisted", "cause=number"),
    ("retry_attempts", "timeout=1,timeout=2", "given twice"),
    ("retry_max_age", "0", "greater than 0"),
    ("retry_max_age", "-5", "greater than 0"),
    ("host_rcpt_per_second", "0", "greater than 0"),
    ("host_rcpt_per_second", "fast", "number"),
    ("host_rcpt_burst", "0", "greater than or equal to 1"),
    ("host_rcpt_burst", "2.5", "integer"),
    ("host_connections_per_minute", "-1", "greater than 0"),
    ("host_max_sessions", "0", "greater than or equal to 1"),
    ("session_idle", "-1", "greater than or equal to 0"),
    ("session_idle", "301", "less than or equal to 300"),
]


def assert_one_sentence(message: str, *words: str) -> None:
    """``message`` is one "Invalid setting …." sentence holding each of ``words``."""
    assert message.startswith("Invalid setting") and message.endswith(".")
    assert "\n" not in message and not message.endswith("..")
    for word in words:
        assert word in message


def option_and_variable(field: str) -> str:
    """How an error names a field: its option and environment variable."""
    return f"--{field.replace('_', '-')} / MXPROBE_{field.upper()}"


@pytest.mark.parametrize(("field", "text", "words"), INVALID_NEW_VALUES)
def test_invalid_new_values_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, field: str, text: str, words: str
) -> None:
    """An invalid MXPROBE_<FIELD> is a ConfigError naming the option, the variable and why."""
    monkeypatch.setenv(f"MXPROBE_{field.upper()}", text)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert_one_sentence(str(caught.value), option_and_variable(field), words)


@pytest.mark.parametrize(("field", "text", "words"), INVALID_NEW_VALUES)
def test_invalid_new_values_from_options(field: str, text: str, words: str) -> None:
    """An invalid option value is a ConfigError naming the option, the variable and why."""
    with pytest.raises(ConfigError) as caught:
        load_settings(**{field: text})
    assert_one_sentence(str(caught.value), option_and_variable(field), words)


def test_infinite_retry_max_age_is_a_config_error() -> None:
    """--retry-max-age inf is refused when the settings are read, not later by the pipeline."""
    with pytest.raises(ConfigError) as caught:
        load_settings(retry_max_age=math.inf).retry_policy()
    assert_one_sentence(str(caught.value), option_and_variable("retry_max_age"))


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (None, "No such file"),  # no file at the path
        ("directory", "Is a directory"),
        (b"\xff\xfe[[provider]]", "cannot read"),
        ("[[provider]\nname = 'x'\n", "not valid TOML"),
        ("rcpt_per_second = 1\n", "unknown top-level key 'rcpt_per_second'"),
        (
            "[[provider]]\nname = 'Ours'\nhosts = ['mx.ours.test']\nrcpt_per_day = 5\n",
            "unknown key 'rcpt_per_day'",
        ),
        ("[[provider]]\nhosts = ['mx.ours.test']\n", "has no name"),
        ("[[provider]]\nname = 'Ours'\nhosts = ['mx.ours.test']\nrcpt_burst = 0\n", "rcpt_burst"),
        ("[[provider]]\nname = 'Ours'\nhosts = ['http://x']\n", "host pattern"),
    ],
)
@pytest.mark.parametrize("source", ["environment", "option"])
def test_invalid_politeness_files(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    content: str | bytes | None,
    words: str,
    source: str,
) -> None:
    """A politeness file that cannot be read or is invalid is a ConfigError naming the option."""
    path = tmp_path / "politeness.toml"
    if content == "directory":
        path.mkdir()
    elif isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content, encoding="utf-8")
    if source == "environment":
        monkeypatch.setenv("MXPROBE_POLITENESS_FILE", str(path))
        settings = load_settings()
    else:
        settings = load_settings(politeness_file=path)
    for build in (settings.politeness, settings.verifier_config):
        with pytest.raises(ConfigError) as caught:
            build()
        assert_one_sentence(str(caught.value), option_and_variable("politeness_file"), words)


def test_host_limits_follow_the_settings() -> None:
    """host_limits() carries the per-host options and the recipients per session."""
    settings = load_settings(
        host_rcpt_per_second=2.5,
        host_rcpt_burst=7,
        host_connections_per_minute=12.0,
        host_max_sessions=3,
        max_rcpt_per_session=40,
    )
    limits = settings.host_limits()
    assert (
        limits.rcpt_per_second,
        limits.rcpt_burst,
        limits.connections_per_minute,
        limits.max_sessions,
        limits.rcpt_per_session,
    ) == (2.5, 7, 12.0, 3, 40)


def test_default_host_limits() -> None:
    """Without options a host gets 1 RCPT/s, a burst of 20, 6 connections/min, 2 sessions, 50."""
    limits = load_settings().host_limits()
    assert limits == HostLimits(
        rcpt_per_second=1.0,
        rcpt_burst=20,
        connections_per_minute=6.0,
        max_sessions=2,
        rcpt_per_session=50,
    )


def test_retry_policy_follows_the_settings() -> None:
    """retry_policy() has the delays, attempt limits and maximum age the settings give."""
    policy = load_settings(
        retry_delays="1,2 5", retry_attempts="dns=0,budget=7", retry_max_age=90.0
    ).retry_policy()
    assert policy.delays == (1.0, 2.0, 5.0)
    assert dict(policy.attempts) == {**DOCUMENTED_ATTEMPTS, Cause.DNS: 0, Cause.BUDGET: 7}
    assert policy.max_age == 90.0


def test_default_retry_policy() -> None:
    """Without options the tiers are 1, 5, 15 and 30 minutes, for at most two hours."""
    policy = load_settings().retry_policy()
    assert policy.delays == (60.0, 300.0, 900.0, 1800.0)
    assert dict(policy.attempts) == DOCUMENTED_ATTEMPTS
    assert policy.max_age == 7200.0


def test_packaged_rules_without_a_politeness_file() -> None:
    """Yahoo's exchangers get at most 200 RCPTs an hour; unlisted hosts get the host options."""
    settings = load_settings(host_max_sessions=3)
    politeness = settings.politeness()
    yahoo = politeness.limits_for(YAHOO_HOST)
    assert yahoo.ceiling(3600) == pytest.approx(200)
    assert politeness.provider_of(YAHOO_HOST) == "Yahoo / AOL"
    assert politeness.limits_for(UNLISTED_HOST) == settings.host_limits()
    assert politeness.provider_of(UNLISTED_HOST) is None


def test_a_user_rule_overrides_the_packaged_one(tmp_path: Path) -> None:
    """A rule in --politeness-file wins over the packaged rule for the same hosts."""
    path = write_politeness(
        tmp_path,
        "[[provider]]\n"
        'name = "Our Yahoo deal"\n'
        'hosts = ["*.yahoodns.net"]\n'
        "rcpt_per_minute = 30\n"
        "rcpt_burst = 4\n",
    )
    politeness = load_settings(politeness_file=path, host_max_sessions=3).politeness()
    yahoo = politeness.limits_for(YAHOO_HOST)
    assert yahoo.rcpt_per_second == pytest.approx(0.5)
    assert yahoo.rcpt_burst == 4
    assert yahoo.max_sessions == 3  # not in the rule: from the settings
    assert politeness.provider_of(YAHOO_HOST) == "Our Yahoo deal"
    assert politeness.provider_of(GOOGLE_HOST) == "Google"  # other packaged rules stay


def test_a_user_rule_may_be_looser_than_the_defaults(tmp_path: Path) -> None:
    """A user rule applies as written, even above the default per-host limits."""
    path = write_politeness(
        tmp_path,
        '[[provider]]\nname = "Our relay"\nhosts = ["mx.ours.test"]\nrcpt_per_second = 50\n',
    )
    politeness = load_settings(politeness_file=path).politeness()
    assert politeness.limits_for("MX.Ours.Test.").rcpt_per_second == 50.0
    assert politeness.limits_for(UNLISTED_HOST).rcpt_per_second == 1.0


def test_lower_defaults_slow_the_packaged_providers() -> None:
    """A packaged rule is never looser than the host options: lowering them slows Yahoo too."""
    politeness = load_settings(host_rcpt_per_second=0.01, host_rcpt_burst=2).politeness()
    yahoo = politeness.limits_for(YAHOO_HOST)
    assert (yahoo.rcpt_per_second, yahoo.rcpt_burst) == (0.01, 2)


def test_politeness_file_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """MXPROBE_POLITENESS_FILE is read like --politeness-file."""
    path = write_politeness(
        tmp_path, '[[provider]]\nname = "Ours"\nhosts = ["*.ours.test"]\nmax_sessions = 1\n'
    )
    monkeypatch.setenv("MXPROBE_POLITENESS_FILE", str(path))
    politeness = load_settings().politeness()
    assert politeness.provider_of("mx1.ours.test") == "Ours"
    assert politeness.limits_for("mx1.ours.test").max_sessions == 1


DELAYS = st.lists(
    st.floats(min_value=0.001, max_value=1e6, allow_nan=False, allow_infinity=False),
    min_size=1,
    max_size=6,
)
SEPARATORS = st.sampled_from([",", " ", ", ", " ,\t", "  "])


@hypothesis_settings(max_examples=60)
@given(DELAYS, SEPARATORS)
def test_any_increasing_delays_are_read_back(delays: list[float], separator: str) -> None:
    """Positive, non-decreasing delays written with commas or blanks are the tiers' delays."""
    ordered = sorted(delays)
    settings = load_settings(retry_delays=separator.join(repr(d) for d in ordered))
    assert settings.retry_delays == tuple(ordered)
    assert settings.retry_policy().delays == tuple(ordered)


@hypothesis_settings(max_examples=60)
@given(DELAYS.filter(lambda ds: any(b < a for a, b in itertools.pairwise(ds))))
def test_any_decreasing_delays_are_refused(delays: list[float]) -> None:
    """Delays that decrease anywhere are a ConfigError naming --retry-delays."""
    with pytest.raises(ConfigError) as caught:
        load_settings(retry_delays=",".join(repr(d) for d in delays))
    assert_one_sentence(str(caught.value), option_and_variable("retry_delays"), "must not decrease")


@hypothesis_settings(max_examples=60)
@given(st.dictionaries(st.sampled_from(list(Cause)), st.integers(min_value=0, max_value=10_000)))
def test_any_attempt_limits_are_read_back(limits: dict[Cause, int]) -> None:
    """cause=N entries set those causes' limits; the other causes keep the defaults."""
    text = ",".join(f"{cause.value}={limit}" for cause, limit in limits.items())
    attempts = dict(load_settings(retry_attempts=text).retry_policy().attempts)
    assert attempts == {**DOCUMENTED_ATTEMPTS, **limits}


def test_to_env_gives_the_same_settings_back(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings written as MXPROBE_* variables read back equal (a child worker's settings)."""
    given = load_settings(
        dns_server=("127.0.0.1:53", "[::1]:5353"),
        allow_private_mx=True,
        allow_tld=("test",),
        retry_delays=(1.5, 3.0),
        retry_attempts="greylisted=5",
        mail_from="probe@example.com",
        broker="kafka://127.0.0.1:9092",
        host_rcpt_per_second=2.5,
    )
    for key in [k for k in os.environ if k.startswith("MXPROBE_")]:
        monkeypatch.delenv(key)
    for key, value in given.to_env().items():
        monkeypatch.setenv(key, value)
    assert load_settings() == given


# ---------------------------------------------------------------- per-phase timeouts

PHASES = ("connect_timeout", "banner_timeout", "command_timeout", "dns_timeout")


def phase_timeouts(settings: Settings) -> dict[str, float]:
    """The deadline each phase gets, as the probe and the resolver see it."""
    probe, resolver = settings.probe_config(default_helo="host.example"), settings.resolver_config()
    return {
        "connect_timeout": probe.connect_timeout,
        "banner_timeout": probe.banner_timeout,
        "command_timeout": probe.command_timeout,
        "dns_timeout": resolver.lifetime,
    }


def test_every_phase_takes_timeout_by_default() -> None:
    """Without phase timeouts, --timeout (10 s unless given) is every phase's deadline."""
    assert phase_timeouts(load_settings()) == dict.fromkeys(PHASES, 10.0)
    assert phase_timeouts(load_settings(timeout=4.5)) == dict.fromkeys(PHASES, 4.5)


@pytest.mark.parametrize("phase", PHASES)
def test_a_phase_timeout_from_the_environment_sets_that_phase_only(
    monkeypatch: pytest.MonkeyPatch, phase: str
) -> None:
    """MXPROBE_<PHASE>_TIMEOUT sets its own phase; the others keep MXPROBE_TIMEOUT."""
    monkeypatch.setenv("MXPROBE_TIMEOUT", "7")
    monkeypatch.setenv(f"MXPROBE_{phase.upper()}", "2.5")
    settings = load_settings()
    assert getattr(settings, phase) == 2.5
    assert phase_timeouts(settings) == {**dict.fromkeys(PHASES, 7.0), phase: 2.5}


@pytest.mark.parametrize("phase", PHASES)
def test_a_phase_timeout_option_wins_over_timeout(phase: str) -> None:
    """A phase timeout given with --timeout keeps its own value."""
    settings = load_settings(timeout=30.0, **{phase: 0.5})
    assert phase_timeouts(settings)[phase] == 0.5
    assert settings.timeout == 30.0


@pytest.mark.parametrize("phase", PHASES)
@pytest.mark.parametrize("value", ["0", "-1", "601", "soon"])
def test_an_invalid_phase_timeout_names_its_variable(
    monkeypatch: pytest.MonkeyPatch, phase: str, value: str
) -> None:
    """A phase timeout must be above 0 and at most 600 seconds, as timeout itself."""
    monkeypatch.setenv(f"MXPROBE_{phase.upper()}", value)
    with pytest.raises(ConfigError, match=f"MXPROBE_{phase.upper()}"):
        load_settings()


def test_unset_phase_timeouts_stay_unset_in_a_child_worker() -> None:
    """to_env() passes timeout, not copies of it, so a child derives the same phases."""
    env = load_settings(timeout=3.0, banner_timeout=1.0).to_env()
    assert env["MXPROBE_TIMEOUT"] == "3.0" and env["MXPROBE_BANNER_TIMEOUT"] == "1.0"
    assert "MXPROBE_CONNECT_TIMEOUT" not in env and "MXPROBE_DNS_TIMEOUT" not in env
