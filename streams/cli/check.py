"""``mxprobe check``: verify addresses directly, without Kafka."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import click
from rich.console import Console

from streams.cli.options import (
    build_verifier,
    probe_options,
    read_addresses,
    settings_from,
    verify_with_progress,
)
from streams.core.verdict import Verdict
from streams.render import stdout_console, summary_table, verdict_json, verdict_table
from streams.settings import Settings

__all__ = ["check", "print_verdicts", "run_check"]


@click.command()
@click.argument("addresses", nargs=-1)
@click.option("--file", "-f", "file", metavar="FILE", help="Read addresses from FILE (- = stdin).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per address.")
@probe_options
def check(addresses: tuple[str, ...], file: str | None, as_json: bool, **options: Any) -> None:
    """Verify ADDRESSES (or those in --file) and print their verdicts.

    Exit status 0 when every address got a verdict, whatever the verdicts are.
    """
    settings = settings_from(options)
    emails = read_addresses(addresses, file)
    if not emails:
        raise click.UsageError("No addresses given: pass ADDRESS arguments or --file FILE.")
    verdicts = run_check(settings, emails)
    print_verdicts(verdicts, as_json=as_json)


def run_check(
    settings: Settings, emails: Sequence[str], *, extra_disposable: Sequence[str] = ()
) -> list[Verdict]:
    """Verify ``emails`` with a fresh verifier, progress on stderr."""
    verifier = build_verifier(settings, extra_disposable=extra_disposable)
    return asyncio.run(verify_with_progress(verifier, emails, Console(stderr=True)))


def print_verdicts(verdicts: Sequence[Verdict], *, as_json: bool) -> None:
    """Verdicts to stdout: JSON lines, or a table followed by a summary."""
    if as_json:
        for verdict in verdicts:
            click.echo(verdict_json(verdict))
        return
    console = stdout_console()
    console.print(verdict_table(verdicts))
    if len(verdicts) > 1:
        console.print(summary_table(verdicts))
