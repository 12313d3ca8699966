"""Benchmark: the full pipeline's politeness, counted by the mail hosts themselves.

Generates a workload (N addresses over M domains on K mail hosts,
:func:`streams.sandbox.workload.workload`), serves it from a sandbox in its
own thread (not in the pipeline's event loop), runs the whole pipeline on the
embedded broker in-process (``PipelineRun``: intake, resolve, probe, retry
tiers) with the politeness limits given here, submits every address at once
and waits for every verdict. Then it reports, per mail host, what the host
saw (RCPTs, sessions, connections, QUITs, 421s) and the peak rates in sliding
windows against mxprobe's budget ceiling (burst + rate x window), beside
throughput, latency and mxprobe's own counters.

Exit status: 0 when every host stayed within its budget (RCPT and connection
peaks, concurrent sessions) and no 421 was sent, 1 when not, 2 when the run
could not finish.

    python tests/benchmarks/politeness_bench.py                  # 5,000 / 20 / 4
    python tests/benchmarks/politeness_bench.py --addresses 1000 --json
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import functools
import json
import math
import resource
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))

from support import SandboxThread

from streams.assembly import sandbox_settings, verifier_factory
from streams.core.host_state import HostLimits, HostState
from streams.pipeline.inputs import InputRequest
from streams.pipeline.records import AddressRequest, VerdictRecord
from streams.pipeline.runner import PipelineRun
from streams.sandbox import Host, Sandbox, World
from streams.sandbox.workload import RateLimit, parse_mix, workload
from streams.settings import Settings

#: Retry tiers short enough for a benchmark; budget deferrals are due when the
#: budget allows, whatever the tier.
RETRY_DELAYS = (0.5, 1.0)
RETRY_ATTEMPTS = "budget=1000"

#: Sliding windows (seconds) of the RCPT and connection peaks.
RCPT_WINDOWS = (1.0, 10.0)
CONNECTION_WINDOW = 60.0

#: The window of a "rate_limit" host in the mix: the host allows what the budget allows.
RATE_LIMIT_WINDOW = 10.0


@dataclass(frozen=True, slots=True)
class Peak:
    """The most events a host saw in any sliding window, and the budget's ceiling there."""

    window: float
    seen: int
    ceiling: float

    @property
    def within(self) -> bool:
        """Whether the host saw no more than the budget allows."""
        return self.seen <= self.ceiling


@dataclass(frozen=True, slots=True)
class HostReport:
    """What one mail host saw (server-side counters) and mxprobe's state for it."""

    name: str
    behaviour: str
    rcpts: int
    sessions: int
    connections: int
    quits: int
    rset: int
    replies_421: int
    max_concurrent: int  # connections open at once
    max_sessions: int  # the budget's cap on concurrent sessions to the host
    rcpt_peaks: tuple[Peak, ...]
    connection_peak: Peak
    factor: float | None  # mxprobe's AIMD factor for the host at the end (None: no state)
    throttles: int

    @property
    def rcpts_per_session(self) -> float:
        """RCPT commands per SMTP session (EHLO/HELO) the host saw."""
        return self.rcpts / self.sessions if self.sessions else 0.0

    @property
    def within_budget(self) -> bool:
        """No peak above its ceiling, no more sessions at once than allowed, no 421 sent."""
        peaks = (*self.rcpt_peaks, self.connection_peak)
        return (
            all(peak.within for peak in peaks)
            and self.max_concurrent <= self.max_sessions
            and self.replies_421 == 0
        )


@dataclass(slots=True)
class BenchResult:
    """Everything one run measured."""

    addresses: int
    domains: int
    hosts: int
    settings: dict[str, Any]
    worker_start_s: float = 0.0
    wall_s: float = 0.0
    cpu_s: float = 0.0
    peak_rss_mb: float = 0.0
    latency_ms: dict[str, int] = field(default_factory=dict)
    verdicts: dict[str, int] = field(default_factory=dict)
    unexpected: dict[str, int] = field(default_factory=dict)  # "expected -> got": count
    dns_queries: int = 0
    mxprobe: dict[str, int] = field(default_factory=dict)
    host_reports: list[HostReport] = field(default_factory=list)

    @property
    def addresses_per_second(self) -> float:
        """Addresses verified per second, first submit to last verdict."""
        return self.addresses / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def within_budget(self) -> bool:
        """Every host stayed within its budget and got no 421."""
        return all(report.within_budget for report in self.host_reports)


def percentile(values: Sequence[int], p: float) -> int:
    """The nearest-rank ``p``-th percentile of ``values`` (not empty)."""
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def bench_settings(sb: SandboxThread, args: argparse.Namespace) -> Settings:
    """Settings that reach the sandbox, with the politeness limits of the command line."""
    sandbox = sb.sandbox
    return sandbox_settings(
        sandbox.world,
        sandbox.dns_server,
        sandbox.smtp_port,
        {
            "timeout": 2.0,
            "host_rcpt_per_second": args.rcpt_per_second,
            "host_rcpt_burst": args.burst,
            "host_connections_per_minute": args.connections_per_minute,
            "host_max_sessions": args.host_sessions,
            "max_rcpt_per_session": args.rcpt_per_session,
            "retry_delays": RETRY_DELAYS,
            "retry_attempts": RETRY_ATTEMPTS,
            "partitions": args.partitions,
        },
    )


def host_report(
    sandbox: Sandbox, host: Host, limits: HostLimits, state: HostState | None
) -> HostReport:
    """Peaks against the budget's ceilings; run on the sandbox's loop (it owns the counters)."""
    stats = sandbox.stats(host.name)
    rcpt_peaks = tuple(
        Peak(window, stats.peak("rcpt_times", window), limits.ceiling(window))
        for window in RCPT_WINDOWS
    )
    connection_ceiling = (
        limits.connection_burst + limits.connections_per_minute * CONNECTION_WINDOW / 60.0
    )
    return HostReport(
        name=host.name,
        behaviour=host.behaviour.value,
        rcpts=stats.rcpts,
        sessions=stats.sessions,
        connections=stats.connections,
        quits=stats.quits,
        rset=stats.rset,
        replies_421=stats.replies_421,
        max_concurrent=stats.max_concurrent,
        max_sessions=limits.max_sessions,
        rcpt_peaks=rcpt_peaks,
        connection_peak=Peak(
            CONNECTION_WINDOW,
            stats.peak("connection_times", CONNECTION_WINDOW),
            connection_ceiling,
        ),
        factor=None if state is None else state.factor,
        throttles=0 if state is None else state.throttles,
    )


def unexpected_verdicts(world: World, records: Sequence[VerdictRecord]) -> dict[str, int]:
    """Verdicts that differ from the world's expectation, counted as "expected -> got"."""
    expected = {e.address: e for e in world.expectations}
    misses: collections.Counter[str] = collections.Counter()
    for record in records:
        expectation = expected[record.email]
        got = f"{record.status.value}/{record.reason}"
        final = expectation.after_retry or f"{expectation.status}/{expectation.reason}"
        if got != final:
            misses[f"{final} -> {got}"] += 1
    return dict(misses.most_common())


def rate_limit_for(args: argparse.Namespace) -> RateLimit:
    """A "rate_limit" host that allows exactly mxprobe's budget over RATE_LIMIT_WINDOW."""
    limits = HostLimits(
        rcpt_per_second=args.rcpt_per_second,
        rcpt_burst=args.burst,
        connections_per_minute=args.connections_per_minute,
    )
    window = RATE_LIMIT_WINDOW
    return RateLimit(
        max_rcpt=math.floor(limits.ceiling(window)),
        max_connections=math.floor(
            limits.connection_burst + limits.connections_per_minute * window / 60.0
        ),
        window=window,
    )


async def run(args: argparse.Namespace) -> BenchResult:
    """Serve the workload, verify every address through the pipeline, and measure."""
    world, emails = workload(
        args.addresses,
        args.domains,
        args.hosts,
        mix=parse_mix(args.mix),
        known_share=args.known_share,
        seed=args.seed,
        rate_limit=rate_limit_for(args),
    )
    requests = [InputRequest(email, str(uuid.uuid4()), "bench", 3600) for email in emails]
    with SandboxThread(world) as sb:
        settings = bench_settings(sb, args)
        result = BenchResult(
            addresses=len(requests),
            domains=args.domains,
            hosts=args.hosts,
            settings=settings_summary(settings),
        )
        records, states = await verify_all(settings, requests, args.timeout, result)
        # After the worker stopped, so its idle sessions have been closed with QUIT.
        politeness = settings.politeness()
        result.host_reports = [
            sb.call(
                functools.partial(
                    host_report,
                    sb.sandbox,
                    host,
                    politeness.limits_for(host.name),
                    states.get(host.name),
                )
            )
            for host in world.hosts
        ]
        result.dns_queries = sum(sb.call(sb.sandbox.dns_queries).values())
    summarise(result, world, records)
    return result


async def verify_all(
    settings: Settings, requests: Sequence[InputRequest], timeout: float, result: BenchResult
) -> tuple[list[VerdictRecord], dict[str, HostState]]:
    """Run the pipeline on the embedded broker for ``requests``: their verdicts, and
    mxprobe's state of each mail host; timings and counters go into ``result``.

    Raises:
        RuntimeError: some request got no verdict (it was dead-lettered).
    """
    times: dict[str, float] = {}

    def sent(_: AddressRequest) -> None:
        times.setdefault("first_submit", time.perf_counter())

    def arrived(_: VerdictRecord) -> None:
        times["last_verdict"] = time.perf_counter()

    cpu = time.process_time()
    async with PipelineRun(settings, verifier_factory(settings)) as running:
        result.worker_start_s = running.started_in
        records = await running.verify(requests, timeout=timeout, on_sent=sent, on_verdict=arrived)
        pipeline = running.pipeline
        assert pipeline is not None
        states = dict(pipeline.host_states)
    result.cpu_s = time.process_time() - cpu
    if len(records) != len(requests):
        raise RuntimeError(
            f"Only {len(records)} of {len(requests)} addresses got a verdict "
            f"({len(running.dead_lettered)} went to the dead-letter topic); see the log."
        )
    result.wall_s = times["last_verdict"] - times["first_submit"]
    result.mxprobe = {
        "retries_scheduled": pipeline.outputs.retries_scheduled,
        "retries_released": pipeline.outputs.retries_released,
        "sessions_opened": pipeline.verifier.sessions_opened,
        "connections_opened": pipeline.verifier.connections_opened,
        "dead_letters": pipeline.outputs.dead_letters,
    }
    return records, states


def summarise(result: BenchResult, world: World, records: Sequence[VerdictRecord]) -> None:
    """Latency percentiles, verdict counts and surprises, and peak memory, into ``result``."""
    latencies = [record.latency_ms for record in records]
    result.latency_ms = {
        "p50": percentile(latencies, 50),
        "p95": percentile(latencies, 95),
        "p99": percentile(latencies, 99),
        "max": max(latencies),
    }
    counts = collections.Counter(f"{r.status.value}/{r.reason}" for r in records)
    result.verdicts = dict(counts.most_common())
    result.unexpected = unexpected_verdicts(world, records)
    result.peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def settings_summary(settings: Settings) -> dict[str, Any]:
    """The settings that shape politeness, as reported."""
    return {
        "host_rcpt_per_second": settings.host_rcpt_per_second,
        "host_rcpt_burst": settings.host_rcpt_burst,
        "host_connections_per_minute": settings.host_connections_per_minute,
        "connection_burst": settings.host_limits().connection_burst,
        "host_max_sessions": settings.host_max_sessions,
        "max_rcpt_per_session": settings.max_rcpt_per_session,
        "session_idle": settings.session_idle,
        "retry_delays": list(settings.retry_delays),
        "retry_attempts": settings.retry_attempts,
        "partitions": settings.partitions,
    }


def to_json(result: BenchResult) -> dict[str, Any]:
    """The result as JSON-ready data (``addresses_per_second`` and ``latency_ms`` with
    ``p50``/``p95``/``p99`` are the keys ``mxprobe bench --json`` prints too)."""
    return {
        "addresses": result.addresses,
        "domains": result.domains,
        "hosts": result.hosts,
        "settings": result.settings,
        "worker_start_seconds": round(result.worker_start_s, 3),
        "wall_seconds": round(result.wall_s, 3),
        "addresses_per_second": round(result.addresses_per_second, 1),
        "latency_ms": result.latency_ms,
        "cpu_seconds": round(result.cpu_s, 2),
        "peak_rss_mb": round(result.peak_rss_mb, 1),
        "dns_queries": result.dns_queries,
        "verdicts": result.verdicts,
        "unexpected_verdicts": result.unexpected,
        "mxprobe": result.mxprobe,
        "mail_hosts": [
            {
                **asdict(report),
                "rcpt_peaks": [{**asdict(p), "within": p.within} for p in report.rcpt_peaks],
                "connection_peak": {
                    **asdict(report.connection_peak),
                    "within": report.connection_peak.within,
                },
                "rcpts_per_session": round(report.rcpts_per_session, 2),
                "within_budget": report.within_budget,
            }
            for report in result.host_reports
        ],
        "within_budget": result.within_budget,
    }


def render(result: BenchResult) -> str:
    """The result as a plain-text table."""
    s = result.settings
    lat = result.latency_ms
    lines = [
        f"workload: {result.addresses} addresses, {result.domains} domains, "
        f"{result.hosts} mail hosts",
        f"budget per host: {s['host_rcpt_per_second']:g} RCPT/s, burst {s['host_rcpt_burst']}; "
        f"{s['host_connections_per_minute']:g} connections/min, burst {s['connection_burst']}; "
        f"{s['host_max_sessions']} sessions, {s['max_rcpt_per_session']} RCPTs/session",
        f"worker start: {result.worker_start_s:.1f} s",
        f"wall (first submit -> last verdict): {result.wall_s:.2f} s  "
        f"-> {result.addresses_per_second:.0f} addresses/s",
        f"latency ms: p50 {lat['p50']}  p95 {lat['p95']}  p99 {lat['p99']}  max {lat['max']}",
        f"process CPU: {result.cpu_s:.1f} s (worker + sandbox thread), "
        f"peak RSS {result.peak_rss_mb:.0f} MB, DNS queries {result.dns_queries}",
        "verdicts:",
        *(f"  {n:7d}  {key}" for key, n in result.verdicts.items()),
        "unexpected verdicts: "
        + (", ".join(f"{n} x {k}" for k, n in result.unexpected.items()) or "none"),
        "mxprobe: " + ", ".join(f"{k} {v}" for k, v in result.mxprobe.items()),
        "",
        _host_table(result.host_reports),
        "",
        "every host within budget, no 421: " + ("yes" if result.within_budget else "NO"),
    ]
    return "\n".join(lines)


def _host_table(reports: Sequence[HostReport]) -> str:
    windows = [f"{p.window:g}s" for p in reports[0].rcpt_peaks] if reports else []
    header = [
        "host",
        "behaviour",
        "RCPTs",
        "sessions",
        "conns",
        "RCPT/sess",
        "QUITs",
        "421s",
        "conc / max",
        *(f"peak {w} / ceil" for w in windows),
        f"conns {CONNECTION_WINDOW:g}s / ceil",
        "factor",
    ]
    rows = [header]
    for r in reports:
        rows.append(
            [
                r.name,
                r.behaviour,
                str(r.rcpts),
                str(r.sessions),
                str(r.connections),
                f"{r.rcpts_per_session:.1f}",
                str(r.quits),
                str(r.replies_421),
                f"{r.max_concurrent} / {r.max_sessions}"
                + ("" if r.max_concurrent <= r.max_sessions else " !"),
                *(_peak(p) for p in r.rcpt_peaks),
                _peak(r.connection_peak),
                "-" if r.factor is None else f"{r.factor:.2f}",
            ]
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join(
        "  ".join(
            cell.rjust(width) if i > 1 else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    )


def _peak(peak: Peak) -> str:
    mark = "" if peak.within else " !"
    return f"{peak.seen} / {peak.ceiling:g}{mark}"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--addresses", type=int, default=5000)
    parser.add_argument("--domains", type=int, default=20)
    parser.add_argument("--hosts", type=int, default=4)
    parser.add_argument("--rcpt-per-second", type=float, default=100.0)
    parser.add_argument("--burst", type=int, default=100, help="RCPT burst per host")
    parser.add_argument("--connections-per-minute", type=float, default=60.0)
    parser.add_argument("--host-sessions", type=int, default=2)
    parser.add_argument("--rcpt-per-session", type=int, default=50)
    parser.add_argument(
        "--mix", default="", help="behaviour=share of the hosts, e.g. strict=0.5,greylist=0.5"
    )
    parser.add_argument("--known-share", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds for every verdict")
    parser.add_argument("--json", action="store_true", help="print JSON instead of the table")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; the exit status says whether every host's budget held."""
    args = parse_args(argv)
    try:
        result = asyncio.run(run(args))
    except TimeoutError:
        print(
            f"politeness_bench: not every verdict arrived within {args.timeout:g} s; "
            "raise --timeout or lower --addresses.",
            file=sys.stderr,
        )
        return 2
    except (ValueError, RuntimeError) as exc:
        print(f"politeness_bench: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(to_json(result), indent=2) if args.json else render(result))
    return 0 if result.within_budget else 1


if __name__ == "__main__":
    sys.exit(main())
