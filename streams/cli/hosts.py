"""``mxprobe hosts``: the mail-host table — each host's budget and health."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import click
from rich.table import Table
from rich.text import Text

from streams.cli.options import broker_option, settings_from
from streams.core.host_state import HostState
from streams.core.politeness import Politeness
from streams.errors import ConfigError
from streams.pipeline.runner import read_host_states
from streams.pipeline.topology import Topology
from streams.render import stdout_console

__all__ = ["host_rows", "hosts"]


@click.command()
@broker_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per host.")
def hosts(broker: str | None, as_json: bool) -> None:
    """Print every mail host's budget and health (AIMD factor, breaker, counters).

    Read from the changelog of the workers' mail-host table, so it needs the
    broker they use (--broker / MXPROBE_BROKER) and their MXPROBE_APP_ID.
    Rates are shown with this machine's politeness settings.
    """
    settings = settings_from({}, broker=broker)
    if settings.broker is None:
        raise ConfigError(
            "hosts reads the workers' mail-host table from their broker: give --broker or "
            "MXPROBE_BROKER (the embedded broker of `mxprobe run` lives only while it runs)."
        )
    topic = Topology.from_settings(settings).hosts_changelog.name
    bootstrap = settings.broker.removeprefix("kafka://")
    tansu = settings.broker_kind == "tansu"
    states = asyncio.run(read_host_states(bootstrap, topic, tansu=tansu))
    rows = host_rows(states, settings.politeness(), now=time.time())
    if as_json:
        for row in rows:
            click.echo(json.dumps(row, ensure_ascii=False))
        return
    console = stdout_console()
    if not rows:
        console.print(f"No mail host in {topic} yet: no worker has probed any.")
        return
    console.print(_table(rows))


def host_rows(
    states: dict[str, HostState], politeness: Politeness, *, now: float
) -> list[dict[str, Any]]:
    """One JSON-ready row per host, sorted by name: its state and the rates it gets now."""
    rows = []
    for host in sorted(states):
        state = states[host]
        limits = politeness.limits_for(host)
        paused = state.paused(now)
        rows.append(
            {
                "host": host,
                "provider": politeness.provider_of(host),
                "factor": round(state.factor, 4),
                "rcpt_per_second": round(limits.rcpt_per_second * state.factor, 6),
                "connections_per_minute": round(limits.connections_per_minute * state.factor, 4),
                "state": "paused" if paused else "open",
                "paused_for_s": round(state.paused_until - now, 1) if paused else 0.0,
                "failures": state.failures,
                "throttles": state.throttles,
                "rcpts": state.rcpts,
                "connections": state.connections,
                "last_change": state.last_change,
            }
        )
    return rows


def _table(rows: list[dict[str, Any]]) -> Table:
    table = Table(title="mail hosts", title_justify="left")
    for column in ("host", "provider", "budget", "rcpt/s", "conn/min", "state"):
        table.add_column(column)
    for column in ("failures", "throttles", "rcpts", "conns"):
        table.add_column(column, justify="right")
    table.add_column("last change")
    for row in rows:
        state = row["state"] if row["state"] == "open" else f"paused {row['paused_for_s']:g} s"
        table.add_row(
            Text(row["host"]),
            Text(row["provider"] or "-"),
            f"{row['factor']:.0%}",
            f"{row['rcpt_per_second']:.3g}",
            f"{row['connections_per_minute']:.3g}",
            Text(state, style="red" if row["state"] == "paused" else "green"),
            str(row["failures"]),
            str(row["throttles"]),
            str(row["rcpts"]),
            str(row["connections"]),
            Text(row["last_change"]),
        )
    return table
