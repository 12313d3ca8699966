"""``mxprobe sandbox``: run the sandbox mail world, or verify it end to end (``--demo``)."""

from __future__ import annotations

import asyncio
import shlex
from collections.abc import Sequence
from typing import Any

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from streams.assembly import SANDBOX_HELO, sandbox_settings
from streams.cli.options import build_verifier, sandbox_probe_options, verify_with_progress
from streams.core.verdict import Verdict
from streams.render import STATUS_STYLES, evidence_text, flag_text, stdout_console, verdict_json
from streams.sandbox import Sandbox, World, load_world
from streams.settings import Settings

__all__ = ["demo_settings", "sandbox"]

#: EHLO name the demo uses (the sandbox does not care; a real host would).
DEMO_HELO = SANDBOX_HELO


@click.command()
@click.option(
    "--world",
    "world_path",
    metavar="FILE|NAME",
    help="World file (TOML), or a packaged world: hostile (hostile SMTP peers), "
    "hostile_dns (hostile DNS). Default: the packaged world.",
)
@click.option(
    "--dns-port",
    type=click.IntRange(0, 65535),
    help="DNS port (0 = any free port). Default: the world's.",
)
@click.option(
    "--demo",
    is_flag=True,
    help="Verify every address of the world against it, "
    "compare with the expected verdicts, and exit.",
)
@click.option(
    "--smtp-port",
    type=click.IntRange(0, 65535),
    help="SMTP port every sandbox host listens on (0 = any free port). Default: the world's.",
)
@click.option("--json", "as_json", is_flag=True, help="With --demo: print JSON verdicts.")
@sandbox_probe_options
def sandbox(
    world_path: str | None,
    dns_port: int | None,
    smtp_port: int | None,
    demo: bool,
    as_json: bool,
    **options: Any,
) -> None:
    """Run the sandbox mail world in the foreground (Ctrl-C stops it).

    It prints its domains, its addresses with the verdict each should get, and
    the `mxprobe check` command that verifies them. With --demo it runs that
    check itself and exits 0 when every verdict is as expected. --smtp-port
    sets the port every sandbox host listens on (0 = any free port).
    """
    world = load_world(world_path)
    runner = Sandbox(world, dns_port=dns_port, smtp_port=smtp_port)
    console = stdout_console()
    if demo:
        ok = asyncio.run(_demo(runner, options, console, as_json=as_json))
        if not ok:
            raise click.ClickException("Some verdicts differ from the world's expectations.")
        return
    asyncio.run(_serve(runner, console))


def demo_settings(runner: Sandbox, options: dict[str, Any] | None = None) -> Settings:
    """Probe settings that reach ``runner``'s world, under any options the user gave."""
    return sandbox_settings(runner.world, runner.dns_server, runner.smtp_port, options)


def check_command(runner: Sandbox) -> str:
    """The `mxprobe check` command line that verifies every address of the world."""
    world = runner.world
    parts = [
        "mxprobe",
        "check",
        "--dns-server",
        runner.dns_server,
        "--smtp-port",
        str(runner.smtp_port),
        "--allow-private-mx",
    ]
    for zone in world.dns.zones:
        parts += ["--allow-tld", zone]
    parts += [
        "--mail-from",
        world.probe.mail_from,
        "--helo",
        DEMO_HELO,
        "--timeout",
        f"{world.probe.timeout:g}",
    ]
    for domain in world.disposable:
        parts += ["--disposable-domain", domain]
    parts += [e.address for e in world.expectations]
    return shlex.join(parts)


async def _serve(runner: Sandbox, console: Console) -> None:
    async with runner:
        console.print(_world_table(runner.world))
        console.print(_expectation_table(runner.world))
        console.print(
            f"DNS server: [bold]{runner.dns_server}[/] (UDP and TCP); "
            f"SMTP port: [bold]{runner.smtp_port}[/] on every host address."
        )
        console.print("Verify every address with:")
        console.print(check_command(runner), soft_wrap=True, markup=False, highlight=False)
        console.print("Press Ctrl-C to stop.")
        await asyncio.Event().wait()


async def _demo(
    runner: Sandbox, options: dict[str, Any], console: Console, *, as_json: bool
) -> bool:
    async with runner:
        settings = demo_settings(runner, options)
        verifier = build_verifier(settings, extra_disposable=runner.world.disposable)
        emails = [e.address for e in runner.world.expectations]
        verdicts = await verify_with_progress(verifier, emails, Console(stderr=True))
    expected = {e.address: f"{e.status}/{e.reason}" for e in runner.world.expectations}
    matches = [f"{v.status.value}/{v.reason.value}" == expected[v.email] for v in verdicts]
    if as_json:
        for verdict in verdicts:
            click.echo(verdict_json(verdict))
    else:
        console.print(_demo_table(verdicts, expected))
        console.print(f"{sum(matches)} of {len(matches)} verdicts as expected.")
    return all(matches)


def _demo_table(verdicts: Sequence[Verdict], expected: dict[str, str]) -> Table:
    table = Table(title="mxprobe against the sandbox world", header_style="bold")
    for column in ("address", "status", "reason", "conf", "flags", "evidence", "expected"):
        table.add_column(column, overflow="fold")
    for verdict in verdicts:
        got = f"{verdict.status.value}/{verdict.reason.value}"
        want = expected[verdict.email]
        table.add_row(
            Text(verdict.email),
            Text(verdict.status.value, style=STATUS_STYLES[verdict.status]),
            verdict.reason.value,
            f"{verdict.confidence:.2f}",
            flag_text(verdict),
            Text(evidence_text(verdict)),
            Text("✓" if got == want else f"✗ {want}", style="green" if got == want else "red"),
        )
    return table


def _world_table(world: World) -> Table:
    table = Table(title="Sandbox domains", header_style="bold")
    for column in ("domain", "mail hosts", "behaviour", "users"):
        table.add_column(column, overflow="fold")
    for domain in world.domains:
        if domain.null_mx:
            hosts, behaviours = "MX 0 . (null MX)", "-"
        elif domain.mx:
            # An MX may name a domain entry (a CNAME, a name without a host).
            refs = [world.mail_host(ref.host) for ref in domain.mx]
            hosts = ", ".join(
                f"{ref.preference} {ref.host} {h.address if h else '-'}"
                for ref, h in zip(domain.mx, refs, strict=True)
            )
            behaviours = ", ".join(h.behaviour.value if h else "-" for h in refs)
        elif domain.a:
            hosts, behaviours = f"A {', '.join(domain.a)} (implicit MX)", "-"
        else:
            hosts, behaviours = "none", "-"
        if domain.servfail:
            behaviours = "DNS SERVFAIL"
        table.add_row(
            Text(domain.name), Text(hosts), behaviours, Text(", ".join(sorted(domain.users)))
        )
    return table


def _expectation_table(world: World) -> Table:
    table = Table(title="Addresses and the verdicts they should get", header_style="bold")
    for column in ("address", "expected", "after a retry", "shows"):
        table.add_column(column, overflow="fold")
    for e in world.expectations:
        table.add_row(
            Text(e.address),
            f"{e.status}/{e.reason}",
            e.after_retry or "",
            Text(e.note or e.behaviour),
        )
    return table
