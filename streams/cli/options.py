"""Options and wiring shared by the commands that verify addresses."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from streams.assembly import build_verifier
from streams.core.retry import DEFAULT_ATTEMPTS, format_attempts
from streams.core.verdict import Verdict
from streams.settings import Settings, load_settings
from streams.verifier import Verifier

__all__ = [
    "SettingOption",
    "broker_option",
    "build_verifier",
    "probe_options",
    "read_addresses",
    "retry_options",
    "sandbox_probe_options",
    "setting_option",
    "settings_from",
    "verify_with_progress",
]

F = TypeVar("F", bound=Callable[..., Any])


class SettingOption(click.Option):
    """A command-line option for one field of :class:`~streams.settings.Settings`.

    Its help, its default and its environment variable are the field's own
    (one definition, shown by click with ``show_default`` and
    ``show_envvar``). Click neither reads the variable nor fills in the
    default: Settings does both, the one parser of every setting, so an
    option given on the command line wins over the environment, and the
    environment over the default. An option not given is None.
    """

    def __init__(self, param_decls: Sequence[str] | None = None, **attrs: Any) -> None:
        setting: str = attrs.pop("setting")
        field = Settings.model_fields[setting]
        attrs.setdefault("help", field.description)
        attrs.setdefault("envvar", f"MXPROBE_{setting.upper()}")
        attrs.setdefault("show_envvar", True)
        shown = attrs.pop("shown_default", field.default)
        self._shown_default = None if attrs.get("is_flag") else _default_text(shown)
        if self._shown_default is not None:
            attrs.setdefault("show_default", True)
        super().__init__(param_decls or [f"--{setting.replace('_', '-')}", setting], **attrs)

    def get_default(self, ctx: click.Context, call: bool = True) -> Any:
        """Settings' default for the help text; None as the value (Settings applies it)."""
        return None if call else self._shown_default

    def resolve_envvar_value(self, ctx: click.Context) -> str | None:
        """None: the environment is read by Settings, not here."""
        return None


def setting_option(setting: str, *param_decls: str, **attrs: Any) -> Callable[[F], F]:
    """A :class:`SettingOption` for the Settings field ``setting`` (``--field-name``)."""
    return click.option(*param_decls, cls=SettingOption, setting=setting, **attrs)


def _default_text(value: Any) -> str | None:
    """How a Settings default reads in help (lists as the env var writes them)."""
    if value is None or value == () or value == {}:
        return None
    if isinstance(value, tuple | list):
        return ",".join(_number(item) for item in value)
    return _number(value)


def _number(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _options(func: F, options: Sequence[Callable[[F], F]]) -> F:
    for option in reversed(options):
        func = option(func)
    return func


def broker_option(func: F) -> F:
    """``--broker URL`` (``MXPROBE_BROKER``); unset means the embedded broker."""
    return setting_option("broker", metavar="URL")(func)


def probe_options(func: F) -> F:
    """The probe options shared by every command that verifies addresses."""
    return _options(func, _probe_options())


def sandbox_probe_options(func: F) -> F:
    """The probe options of ``mxprobe sandbox``: where to probe is the sandbox's own."""
    return _options(func, _probe_options(without={"dns_server", "smtp_port"}))


def _probe_options(*, without: frozenset[str] | set[str] = frozenset()) -> list[Callable[[F], F]]:
    seconds = {"type": float, "metavar": "SECONDS"}
    options: dict[str, dict[str, Any]] = {
        "dns_server": {"multiple": True, "metavar": "HOST[:PORT]"},
        "smtp_port": {"type": int, "metavar": "PORT"},
        "helo": {"metavar": "NAME"},
        "mail_from": {"metavar": "ADDR"},
        "timeout": seconds,
        "connect_timeout": seconds,
        "banner_timeout": seconds,
        "command_timeout": seconds,
        "dns_timeout": seconds,
        "allow_private_mx": {"is_flag": True, "default": None},
        "allow_tld": {"multiple": True, "metavar": "TLD"},
        "concurrency": {"type": int, "metavar": "N"},
        "starttls": {"is_flag": True, "default": None},
        "source_address": {"metavar": "IP"},
        "disposable_domain": {"multiple": True, "metavar": "DOMAIN"},
        "host_rcpt_per_second": {"type": float, "metavar": "RATE"},
        "host_rcpt_burst": {"type": int, "metavar": "N"},
        "host_connections_per_minute": {"type": float, "metavar": "RATE"},
        "host_max_sessions": {"type": int, "metavar": "N"},
        "politeness_file": {
            "type": click.Path(dir_okay=False, path_type=Path),
            "metavar": "FILE",
        },
    }
    return [setting_option(name, **attrs) for name, attrs in options.items() if name not in without]


def retry_options(func: F) -> F:
    """The options of the retry tiers and idle sessions (worker and run)."""
    return _options(
        func,
        [
            setting_option("retry_delays", metavar="S,S,..."),
            setting_option(
                "retry_attempts",
                metavar="CAUSE=N,...",
                shown_default=format_attempts(DEFAULT_ATTEMPTS),
            ),
            setting_option("retry_max_age", type=float, metavar="SECONDS"),
            setting_option("session_idle", type=float, metavar="SECONDS"),
        ],
    )


def settings_from(options: dict[str, Any], **extra: Any) -> Settings:
    """Settings from the environment, with the options given on the command line on top.

    Options not given are None (or empty), and left to the environment and
    then to Settings' own defaults.
    """
    given = {
        key: (value or None) if isinstance(value, tuple) else value
        for key, value in {**options, **extra}.items()
    }
    return load_settings(**given)


def read_addresses(arguments: Sequence[str], file: str | None) -> list[str]:
    """Addresses from arguments and a file (one per line; blank lines and # comments skipped)."""
    addresses = list(arguments)
    if file is not None:
        try:
            text = sys.stdin.read() if file == "-" else Path(file).read_text(encoding="utf-8")
        except OSError as exc:
            raise click.BadParameter(
                f"cannot read {file}: {exc.strerror or exc}; check the path.", param_hint="--file"
            ) from None
        except UnicodeDecodeError:
            raise click.BadParameter(
                f"{file} is not UTF-8 text; convert it to UTF-8 first.", param_hint="--file"
            ) from None
        addresses.extend(
            line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")
        )
    return addresses


async def verify_with_progress(
    verifier: Verifier, addresses: Sequence[str], console: Console
) -> list[Verdict]:
    """Verify ``addresses``, showing a progress bar when the console is a terminal."""
    try:
        if not console.is_terminal or len(addresses) < 2:
            return await verifier.verify_many(addresses)
        columns = (TextColumn("verifying"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*columns, console=console, transient=True) as progress:
            task = progress.add_task("verify", total=len(set(addresses)))
            return await verifier.verify_many(
                addresses, on_verdict=lambda _: progress.advance(task)
            )
    finally:
        await verifier.aclose()
