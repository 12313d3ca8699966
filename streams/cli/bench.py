"""``mxprobe bench``: throughput, latency and cost of the pipeline over a sandbox workload."""

from __future__ import annotations

import json
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from streams.bench import BenchPlan, BenchReport, run_bench
from streams.cli.options import broker_option
from streams.render import stdout_console
from streams.sandbox.workload import parse_mix

__all__ = ["bench"]


def _mix(_: click.Context, __: click.Parameter, value: str | None) -> dict[str, float] | None:
    try:
        return parse_mix(value or "")
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@click.command()
@click.option("--addresses", type=click.IntRange(1), default=1000, show_default=True)
@click.option("--domains", type=click.IntRange(1), default=20, show_default=True)
@click.option("--hosts", type=click.IntRange(1), default=4, show_default=True, help="Mail hosts.")
@click.option(
    "--mix",
    callback=_mix,
    metavar="BEHAVIOUR=SHARE,...",
    help="Behaviours of the mail hosts, e.g. strict=0.75,catch_all=0.25 (default: all strict).",
)
@click.option(
    "--known-share",
    type=click.FloatRange(0, 1),
    default=0.1,
    show_default=True,
    help="Share of the addresses that are known users.",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--core-only", is_flag=True, help="Verify through the Verifier alone, without Kafka.")
@click.option(
    "--workers",
    type=click.IntRange(1, 16),
    default=1,
    show_default=True,
    help="Workers in the group: 1 runs in this process; more run as `mxprobe worker` "
    "processes (this one submits and collects).",
)
@click.option("--no-warm", is_flag=True, help="Do not warm the domain tables first.")
@click.option(
    "--partitions", type=click.IntRange(1, 64), help="Partitions of every topic (default 4)."
)
@broker_option
@click.option("--json", "as_json", is_flag=True, help="Print the figures as one JSON object.")
def bench(
    addresses: int,
    domains: int,
    hosts: int,
    mix: dict[str, float] | None,
    known_share: float,
    seed: int,
    core_only: bool,
    workers: int,
    no_warm: bool,
    partitions: int | None,
    broker: str | None,
    as_json: bool,
) -> None:
    """Measure mxprobe over a generated sandbox workload (N addresses, M domains, K hosts).

    The sandbox runs in a process of its own; the pipeline (embedded broker
    unless --broker) or, with --core-only, the Verifier alone runs here.
    Politeness limits are raised for the benchmark. The domain tables are
    warmed first, then every address is submitted at once.
    """
    plan = BenchPlan(
        addresses=addresses,
        domains=domains,
        hosts=hosts,
        mix=mix,
        known_share=known_share,
        seed=seed,
        core_only=core_only,
        workers=workers,
        warm=not no_warm,
    )
    overrides: dict[str, Any] = {}
    if broker:
        overrides["broker"] = broker
    if partitions:
        overrides["partitions"] = partitions
    console = Console(stderr=True)
    if console.is_terminal:
        columns = (TextColumn("verdicts"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*columns, console=console, transient=True) as progress:
            task = progress.add_task("bench", total=addresses)
            report = run_bench(plan, overrides, on_verdict=lambda: progress.advance(task))
    else:
        report = run_bench(plan, overrides)
    if as_json:
        click.echo(json.dumps(report.to_dict()))
        return
    stdout_console().print(report_table(report))


def report_table(report: BenchReport) -> Table:
    """The figures of a run for people."""
    table = Table(
        title=f"mxprobe bench: {report.mode}, {report.addresses} addresses over "
        f"{report.domains} domains on {report.hosts} mail hosts",
        title_justify="left",
        show_header=False,
    )
    table.add_column("figure")
    table.add_column("value", justify="right")
    latency = report.latency_ms
    rows = [
        ("addresses / second", f"{report.addresses_per_second:,.0f}"),
        ("wall (first submit → last verdict)", f"{report.wall_seconds:.2f} s"),
        (
            "latency p50 / p95 / p99",
            f"{latency['p50']:,.0f} / {latency['p95']:,.0f} / {latency['p99']:,.0f} ms",
        ),
        ("CPU per 1,000 addresses (workers)", f"{report.cpu_seconds_per_1000:.2f} s"),
        ("peak RSS", f"{report.peak_rss_mb:.0f} MB"),
        ("SMTP sessions", f"{report.smtp_sessions:,}"),
        ("RCPTs per session", f"{report.rcpts_per_session:.1f}"),
        ("DNS queries per address", f"{report.dns_queries_per_address:.3f}"),
        ("sandbox CPU (other process)", f"{report.sandbox_cpu_seconds:.2f} s"),
    ]
    if report.mode == "pipeline":
        rows.append(("worker processes", str(report.workers)))
        rows.append(("broker + workers start", f"{report.start_seconds:.1f} s"))
    for status, count in report.verdicts.items():
        rows.append((f"verdicts {status}", f"{count:,}"))
    for name, value in rows:
        table.add_row(name, value)
    return table
