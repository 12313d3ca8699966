"""The streaming commands: ``worker``, ``submit``, ``verdicts``, ``run`` and ``demo``."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import json
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from streams.assembly import verifier_factory
from streams.cli.options import broker_option, probe_options, retry_options, settings_from
from streams.errors import ConfigError
from streams.pipeline.codecs import to_json
from streams.pipeline.inputs import InputRequest, read_requests
from streams.pipeline.records import VerdictRecord
from streams.pipeline.runner import PipelineRun, produce_requests, read_verdicts
from streams.render import stdout_console, summary_table, verdict_table
from streams.settings import Settings

__all__ = ["demo", "run", "submit", "verdicts", "worker"]

F = TypeVar("F", bound=Callable[..., Any])


def record_dict(record: VerdictRecord) -> dict[str, Any]:
    """A verdict record as the JSON object printed by run/verdicts (check's fields and more)."""
    data: dict[str, Any] = json.loads(to_json(record))
    data["normalized"] = data.get("normalized_email")
    return data


max_age_option = click.option(
    "--max-age",
    "max_age",
    type=click.IntRange(0),
    default=86_400,
    show_default=True,
    help="Accept cached facts up to this many seconds old (0: always probe fresh).",
)


def format_options(func: F) -> F:
    """``--json`` and ``--format table|json``: how verdicts are printed."""
    func = click.option(
        "--format",
        "output_format",
        type=click.Choice(["table", "json"]),
        default="table",
        show_default=True,
        help="table for people, json for one JSON object per line (same as --json).",
    )(func)
    return click.option("--json", "as_json", is_flag=True, help="Print one JSON verdict per line.")(
        func
    )


def _read_input(source: str) -> list[str]:
    if source == "-":
        return sys.stdin.read().splitlines(keepends=True)
    try:
        return Path(source).read_text(encoding="utf-8").splitlines(keepends=True)
    except OSError as exc:
        raise click.BadParameter(f"cannot read {source}: {exc.strerror or exc}.") from None
    except UnicodeDecodeError:
        raise click.BadParameter(f"{source} is not UTF-8 text; convert it first.") from None


@click.command()
@broker_option
@probe_options
@retry_options
def worker(broker: str | None, **options: Any) -> None:
    """Run the pipeline worker until Ctrl-C (several workers share partitions)."""
    settings = settings_from(options, broker=broker)
    asyncio.run(_worker(settings))


async def _worker(settings: Settings) -> None:
    console = Console(stderr=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    async with PipelineRun(settings, verifier_factory(settings)) as running:
        # Until here Ctrl-C interrupts the start; from now on it stops the worker
        # cleanly (the batch in flight is finished and committed first).
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        where = running.bootstrap + (" (embedded, memory only)" if running.broker else "")
        console.print(
            f"mxprobe worker: consuming {settings.input_topic} and "
            f"{settings.bulk_topic} on {where}; Ctrl-C stops."
        )
        await stop.wait()
    console.print("mxprobe worker: stopped.")


@click.command()
@click.argument("source", metavar="FILE|-")
@broker_option
@click.option(
    "--source-label",
    "label",
    default="import",
    show_default=True,
    help="The request's source field.",
)
@max_age_option
@click.option("--bulk", is_flag=True, help="Send to the bulk topic (replays and backfills).")
def submit(source: str, broker: str | None, label: str, max_age: int, bulk: bool) -> None:
    """Send addresses from FILE (text, CSV with an email column, or JSON lines) to the input."""
    settings = settings_from({}, broker=broker)
    if settings.broker is None:
        raise ConfigError(
            "submit needs a running broker: give --broker kafka://HOST:PORT or MXPROBE_BROKER "
            "(the embedded broker lives only as long as `mxprobe run`)."
        )
    requests = list(
        read_requests(_read_input(source), source=label, max_age_s=max_age, name=source)
    )
    topic = settings.bulk_topic if bulk else settings.input_topic
    sent = asyncio.run(
        produce_requests(
            settings.broker.removeprefix("kafka://"),
            topic,
            requests,
            allowed_tlds=settings.allow_tld,
        )
    )
    click.echo(f"sent {len(sent)} requests to {topic}")


@click.command()
@broker_option
@click.option("--from-beginning", is_flag=True, help="Start at the oldest verdict.")
@click.option("--follow", is_flag=True, help="Keep waiting for new verdicts.")
def verdicts(broker: str | None, from_beginning: bool, follow: bool) -> None:
    """Print verdicts from the output topic as JSON lines."""
    settings = settings_from({}, broker=broker)
    if settings.broker is None:
        raise ConfigError("verdicts needs a running broker: give --broker or MXPROBE_BROKER.")
    asyncio.run(_print_verdicts(settings, from_beginning=from_beginning, follow=follow))


async def _print_verdicts(settings: Settings, *, from_beginning: bool, follow: bool) -> None:
    assert settings.broker is not None
    stream = read_verdicts(
        settings.broker.removeprefix("kafka://"),
        settings.verdict_topic,
        from_beginning=from_beginning,
        idle_ms=1000,
    )
    try:
        while True:
            try:
                record = await asyncio.wait_for(anext(stream), None if follow else 2.0)
            except (TimeoutError, StopAsyncIteration):
                return
            click.echo(json.dumps(record_dict(record), ensure_ascii=False))
    finally:
        await stream.aclose()


@click.command()
@click.argument("source", metavar="FILE|-")
@broker_option
@format_options
@click.option(
    "--output",
    "-o",
    "output",
    metavar="FILE",
    help="Also write the verdicts to FILE (.csv for CSV, else JSON lines).",
)
@max_age_option
@probe_options
@retry_options
def run(
    source: str,
    broker: str | None,
    as_json: bool,
    output_format: str,
    output: str | None,
    max_age: int,
    **options: Any,
) -> None:
    """The whole job: broker, worker, submit FILE, wait for every verdict, print them."""
    settings = settings_from(options, broker=broker)
    requests = list(
        read_requests(_read_input(source), source="import", max_age_s=max_age, name=source)
    )
    records = asyncio.run(_run(settings, requests, extra_disposable=()))
    _report(records, as_json=as_json or output_format == "json", output=output)


async def _run(
    settings: Settings, requests: Sequence[InputRequest], *, extra_disposable: Sequence[str]
) -> list[VerdictRecord]:
    console = Console(stderr=True)
    make = verifier_factory(settings, extra_disposable=extra_disposable)
    with contextlib.ExitStack() as stack:
        progress: Progress | None = None
        if console.is_terminal:
            progress = stack.enter_context(
                Progress(
                    TextColumn("{task.description}"),
                    BarColumn(),
                    MofNCompleteColumn(),
                    TimeElapsedColumn(),
                    console=console,
                    transient=True,
                )
            )
        starting = progress.add_task("starting", total=None) if progress else None
        async with PipelineRun(settings, make) as running:
            if progress is not None and starting is not None:
                progress.remove_task(starting)
                task = progress.add_task("verdicts", total=len(requests))
                records = await running.verify(
                    requests, on_verdict=lambda _: progress.advance(task)
                )
            else:
                records = await running.verify(requests)
            if running.dead_lettered:
                console.print(
                    f"[yellow]{len(running.dead_lettered)} requests got no verdict: their events "
                    f"went to the dead-letter topic {settings.dlq_topic}.[/]"
                )
            return records
    raise AssertionError("unreachable")


def _report(records: Sequence[VerdictRecord], *, as_json: bool, output: str | None) -> None:
    if output:
        _write_output(records, Path(output))
    if as_json:
        for record in records:
            click.echo(json.dumps(record_dict(record), ensure_ascii=False))
        return
    console = stdout_console()
    verdicts = [record.to_verdict() for record in records]
    console.print(verdict_table(verdicts))
    console.print(summary_table(verdicts))


def _write_output(records: Sequence[VerdictRecord], path: Path) -> None:
    rows = [record_dict(record) for record in records]
    with path.open("w", encoding="utf-8", newline="") as handle:
        if path.suffix.lower() == ".csv":
            flat = [_flatten(row) for row in rows]
            columns = list(dict.fromkeys(key for row in flat for key in row))
            writer = csv.DictWriter(handle, fieldnames=columns)
            writer.writeheader()
            writer.writerows(flat)
        else:
            for row in rows:
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")


def _flatten(row: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in row.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


#: Retry tiers of seconds for the demo: greylisting (5 s in the sandbox) is
#: resolved on the second retry; hosts that time out or throttle get one retry.
DEMO_RETRIES: dict[str, Any] = {
    "retry_delays": (2.0, 4.0),
    "retry_attempts": "timeout=1,dns=1,throttled=1,temporary=1",
}


@click.command()
@format_options
def demo(as_json: bool, output_format: str) -> None:
    """`run` over the sandbox mail world on the embedded broker; prints every verdict."""
    from streams.cli.sandbox import demo_settings
    from streams.sandbox import Sandbox, load_world

    world = load_world()

    async def main() -> list[VerdictRecord]:
        async with Sandbox(world, dns_port=0, smtp_port=0) as sandbox:
            settings = demo_settings(sandbox, dict(DEMO_RETRIES))
            requests = [
                InputRequest(e.address, f"demo-{i}", "demo", 0)
                for i, e in enumerate(world.expectations)
            ]
            return await _run(settings, requests, extra_disposable=world.disposable)

    records = asyncio.run(main())
    _report(records, as_json=as_json or output_format == "json", output=None)
    # The pipeline retries greylisting through its retry tiers: such addresses
    # end with the answer the retry gets.
    expected = {e.address: e.after_retry or f"{e.status}/{e.reason}" for e in world.expectations}
    wrong = [r.email for r in records if f"{r.status.value}/{r.reason}" != expected[r.email]]
    if wrong:
        raise click.ClickException(f"Unexpected verdicts for: {', '.join(wrong)}.")
    Console(stderr=True).print(f"{len(records)} of {len(records)} verdicts as expected.")
