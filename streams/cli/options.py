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
from streams.core.verdict import Verdict
from streams.settings import Settings, load_settings
from streams.verifier import Verifier

__all__ = [
    "build_verifier",
    "probe_options",
    "read_addresses",
    "settings_from",
    "verify_with_progress",
]

F = TypeVar("F", bound=Callable[..., Any])


def probe_options(func: F) -> F:
    """The probe options shared by every command that verifies addresses.

    Each option is also an environment variable (``MXPROBE_`` + its name);
    options given on the command line win.
    """
    options = [
        click.option(
            "--dns-server",
            "dns_server",
            multiple=True,
            metavar="HOST[:PORT]",
            help="Name server to ask (repeatable). Default: the system resolver. "
            "[env: MXPROBE_DNS_SERVER]",
        ),
        click.option(
            "--smtp-port",
            type=int,
            help="SMTP port of mail hosts. Default 25. [env: MXPROBE_SMTP_PORT]",
        ),
        click.option(
            "--helo",
            metavar="NAME",
            help="EHLO/HELO name. Default: this host's FQDN. [env: MXPROBE_HELO]",
        ),
        click.option(
            "--mail-from",
            metavar="ADDR",
            help="Probe sender used when a host refuses "
            "the null sender <>. [env: MXPROBE_MAIL_FROM]",
        ),
        click.option(
            "--timeout",
            type=float,
            metavar="SECONDS",
            help="Timeout per network phase. Default 10. [env: MXPROBE_TIMEOUT]",
        ),
        click.option(
            "--allow-private-mx",
            is_flag=True,
            default=None,
            help="Probe mail hosts on "
            "loopback/private/reserved addresses. [env: MXPROBE_ALLOW_PRIVATE_MX]",
        ),
        click.option(
            "--allow-tld",
            "allow_tld",
            multiple=True,
            metavar="TLD",
            help="Accept "
            "addresses in this special-use TLD, e.g. test (repeatable). "
            "[env: MXPROBE_ALLOW_TLD]",
        ),
        click.option(
            "--concurrency",
            type=int,
            metavar="N",
            help="Concurrent SMTP sessions. Default 20. [env: MXPROBE_CONCURRENCY]",
        ),
        click.option(
            "--starttls",
            is_flag=True,
            default=None,
            help="Use STARTTLS when offered "
            "(certificates are not validated). [env: MXPROBE_STARTTLS]",
        ),
        click.option(
            "--source-address",
            metavar="IP",
            help="Local address to probe from. [env: MXPROBE_SOURCE_ADDRESS]",
        ),
        click.option(
            "--disposable-domain",
            "disposable_domain",
            multiple=True,
            metavar="DOMAIN",
            help="Treat this domain as disposable, beside the packaged list "
            "(repeatable). [env: MXPROBE_DISPOSABLE_DOMAIN]",
        ),
        click.option(
            "--host-rcpt-per-second",
            type=float,
            metavar="RATE",
            help="Sustained RCPTs per second to one mail host. Default 1. "
            "[env: MXPROBE_HOST_RCPT_PER_SECOND]",
        ),
        click.option(
            "--host-rcpt-burst",
            type=int,
            metavar="N",
            help="RCPTs one mail host may get in a burst. Default 20. "
            "[env: MXPROBE_HOST_RCPT_BURST]",
        ),
        click.option(
            "--host-connections-per-minute",
            type=float,
            metavar="RATE",
            help="New SMTP connections per minute to one mail host. Default 6. "
            "[env: MXPROBE_HOST_CONNECTIONS_PER_MINUTE]",
        ),
        click.option(
            "--host-max-sessions",
            type=int,
            metavar="N",
            help="Concurrent SMTP sessions to one mail host. Default 2. "
            "[env: MXPROBE_HOST_MAX_SESSIONS]",
        ),
        click.option(
            "--politeness-file",
            type=click.Path(dir_okay=False, path_type=Path),
            metavar="FILE",
            help="TOML file of per-provider limits over the packaged ones. "
            "[env: MXPROBE_POLITENESS_FILE]",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def settings_from(options: dict[str, Any], **extra: Any) -> Settings:
    """Settings from the environment with the given command-line options on top."""
    given = {
        key: (value or None) if isinstance(value, tuple) else value
        for key, value in options.items()
    }
    given.update(extra)
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
