"""``mxprobe bench``: the pipeline measured the way users judge it.

A generated workload (N addresses over M sandbox domains on K mail hosts,
:func:`streams.sandbox.workload.workload`) is served by a sandbox in a
process of its own (so that its CPU is not the pipeline's), and verified
either through the whole pipeline — embedded broker (or a configured one),
a worker in this process — or, with ``core_only``, through the
:class:`~streams.verifier.Verifier` alone, to show what Kafka costs.

The domain tables are warmed first (one address per domain: routes,
catch-all facts and idle sessions), then the measured pass submits every
address at once. Figures: addresses per second (first submit to last
verdict), submit-to-verdict latency percentiles, CPU seconds of this
process per 1,000 addresses, peak RSS, SMTP sessions and RCPTs per session
and DNS queries per address (counted by the sandbox's servers).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import resource
import signal
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from streams.assembly import build_verifier, sandbox_settings, verifier_factory
from streams.errors import MxprobeError
from streams.pipeline.inputs import InputRequest
from streams.pipeline.kafka_admin import group_state
from streams.sandbox import Sandbox
from streams.sandbox.workload import workload
from streams.settings import Settings

__all__ = ["BenchPlan", "BenchReport", "run_bench"]

#: Budgets far above what the sandbox needs: the benchmark measures mxprobe,
#: not its politeness (`tests/benchmarks/politeness_bench.py` measures that).
RAISED_LIMITS: Mapping[str, Any] = {
    "host_rcpt_per_second": 10_000.0,
    "host_rcpt_burst": 100_000,
    "host_connections_per_minute": 100_000.0,
    "host_max_sessions": 4,
    "retry_delays": (0.5, 1.0),
}


@dataclass(frozen=True, slots=True)
class BenchPlan:
    """What to run: the workload and the mode."""

    addresses: int = 1000
    domains: int = 20
    hosts: int = 4
    mix: Mapping[str, float] | None = None  # behaviour → share of the hosts (default all strict)
    known_share: float = 0.1
    seed: int = 0
    core_only: bool = False
    workers: int = 1  # 1: a worker in this process; more: that many worker processes
    warm: bool = True  # warm the domain tables before the measured pass
    timeout: float = 600.0  # seconds for every verdict of the measured pass


@dataclass(slots=True)
class BenchReport:
    """The figures of one run (``to_dict`` is the ``--json`` form)."""

    mode: str
    addresses: int
    domains: int
    hosts: int
    wall_seconds: float
    addresses_per_second: float
    latency_ms: dict[str, float]
    cpu_seconds: float
    cpu_seconds_per_1000: float
    peak_rss_mb: float
    smtp_sessions: int
    rcpts: int
    rcpts_per_session: float
    dns_queries: int
    dns_queries_per_address: float
    sandbox_cpu_seconds: float
    verdicts: dict[str, int] = field(default_factory=dict)
    start_seconds: float = 0.0  # broker and worker start (pipeline mode)
    workers: int = 1

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)


def run_bench(
    plan: BenchPlan,
    settings: Mapping[str, Any] | None = None,
    *,
    on_verdict: Callable[[], None] | None = None,
) -> BenchReport:
    """Run ``plan`` against a sandbox in a child process and measure it.

    Args:
        plan: the workload and mode.
        settings: setting overrides on top of the benchmark's (e.g. ``broker``).
        on_verdict: called for each verdict of the measured pass (progress).

    Raises:
        MxprobeError: the workload is invalid, the sandbox cannot start, the
            verdicts do not all arrive within ``plan.timeout``, or the
            pipeline fails.
    """
    try:
        world, emails = workload(
            plan.addresses,
            plan.domains,
            plan.hosts,
            mix=plan.mix,
            known_share=plan.known_share,
            seed=plan.seed,
        )
    except ValueError as exc:
        raise MxprobeError(str(exc)) from None
    warm = [f"warm@{domain.name}" for domain in world.domains] if plan.warm else []
    with _SandboxProcess(plan) as sandbox:
        config = sandbox_settings(
            world,
            sandbox.dns_server,
            sandbox.smtp_port,
            {"timeout": 5.0, **RAISED_LIMITS, **(settings or {})},
        )
        runner = _core if plan.core_only else _pipeline
        measured = asyncio.run(runner(config, warm, emails, sandbox, plan, on_verdict))
        served = sandbox.stats()
    return _report(plan, measured, served)


@dataclass(slots=True)
class _Measured:
    wall: float
    latencies_ms: list[float]
    cpu: float
    verdicts: Counter[str]
    start: float = 0.0


async def _core(
    settings: Settings,
    warm: list[str],
    emails: list[str],
    sandbox: _SandboxProcess,
    plan: BenchPlan,
    on_verdict: Callable[[], None] | None,
) -> _Measured:
    verifier = build_verifier(settings)
    try:
        if warm:
            await verifier.verify_many(warm)
        sandbox.reset()
        latencies: list[float] = []
        cpu = _cpu()
        started = time.monotonic()

        def seen(_: object) -> None:
            latencies.append((time.monotonic() - started) * 1000)
            if on_verdict is not None:
                on_verdict()

        try:
            verdicts = await asyncio.wait_for(
                verifier.verify_many(emails, on_verdict=seen), plan.timeout
            )
        except TimeoutError:
            raise _late(plan, "the sandbox's hosts may be too slow") from None
        wall = time.monotonic() - started
        cpu = _cpu() - cpu
    finally:
        await verifier.aclose()
    counts = Counter(f"{v.status.value}/{v.reason.value}" for v in verdicts)
    return _Measured(wall, latencies, cpu, counts)


async def _pipeline(
    settings: Settings,
    warm: list[str],
    emails: list[str],
    sandbox: _SandboxProcess,
    plan: BenchPlan,
    on_verdict: Callable[[], None] | None,
) -> _Measured:
    from streams.pipeline.runner import PipelineRun

    begun = time.monotonic()
    # One worker runs in this process; with more, all run as processes of
    # their own, so that this one (which submits and collects) is not also
    # the slowest worker of the group.
    in_process = plan.workers == 1
    async with PipelineRun(
        settings, verifier_factory(settings), start_worker=in_process
    ) as running:
        workers = _Workers(settings, running, 0 if in_process else plan.workers)
        try:
            await workers.start()
            start = time.monotonic() - begun
            stopped = "a worker may have stopped or fallen behind (`mxprobe worker` shows its log)"
            try:
                if warm:
                    await running.verify(_requests(warm, "warm"), timeout=plan.timeout)
                sandbox.reset()
                cpu = _cpu() + workers.cpu()
                started = time.monotonic()
                records = await running.verify(
                    _requests(emails, "bench"),
                    timeout=plan.timeout,
                    on_verdict=(lambda _: on_verdict()) if on_verdict is not None else None,
                )
            except TimeoutError:
                raise _late(plan, stopped) from None
            wall = time.monotonic() - started
            cpu = _cpu() + workers.cpu() - cpu
        finally:
            workers.stop()
    counts = Counter(f"{r.status.value}/{r.reason}" for r in records)
    if len(records) < len(emails):
        counts["dead-lettered"] = len(emails) - len(records)
    return _Measured(wall, [float(r.latency_ms) for r in records], cpu, counts, start)


def _late(plan: BenchPlan, why: str) -> MxprobeError:
    return MxprobeError(
        f"Not every verdict arrived within {plan.timeout:g} s: {why}; try fewer --addresses."
    )


def _requests(emails: list[str], prefix: str) -> list[InputRequest]:
    # max_age_s: cached facts of the warm-up count (warm domain tables).
    return [InputRequest(e, f"{prefix}-{i}", "bench", 86_400) for i, e in enumerate(emails)]


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _report(plan: BenchPlan, measured: _Measured, served: Mapping[str, Any]) -> BenchReport:
    n = plan.addresses
    latencies = sorted(measured.latencies_ms)
    sessions = int(served["sessions"])
    rcpts = int(served["rcpts"])
    return BenchReport(
        mode="core" if plan.core_only else "pipeline",
        addresses=n,
        domains=plan.domains,
        hosts=plan.hosts,
        wall_seconds=round(measured.wall, 3),
        addresses_per_second=round(n / measured.wall, 1) if measured.wall > 0 else 0.0,
        latency_ms={
            "p50": _percentile(latencies, 50),
            "p95": _percentile(latencies, 95),
            "p99": _percentile(latencies, 99),
            "max": round(latencies[-1], 1) if latencies else 0.0,
        },
        cpu_seconds=round(measured.cpu, 3),
        cpu_seconds_per_1000=round(measured.cpu * 1000 / n, 3),
        peak_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        smtp_sessions=sessions,
        rcpts=rcpts,
        rcpts_per_session=round(rcpts / sessions, 1) if sessions else 0.0,
        dns_queries=int(served["dns_queries"]),
        dns_queries_per_address=round(int(served["dns_queries"]) / n, 4),
        sandbox_cpu_seconds=round(float(served["cpu"]), 3),
        verdicts=dict(measured.verdicts.most_common()),
        start_seconds=round(measured.start, 2),
        workers=1 if plan.core_only else plan.workers,
    )


def _percentile(ordered: list[float], pct: int) -> float:
    if not ordered:
        return 0.0
    if len(ordered) == 1:
        return round(ordered[0], 1)
    return round(statistics.quantiles(ordered, n=100, method="inclusive")[pct - 1], 1)


class _Workers:
    """``mxprobe worker`` processes beside this process's own worker, in its group."""

    def __init__(self, settings: Settings, running: Any, count: int) -> None:
        self._count = count
        self._running = running
        env = {k: v for k, v in os.environ.items() if not k.startswith("MXPROBE_")}
        env.update(settings.to_env())
        env["MXPROBE_BROKER"] = f"kafka://{running.bootstrap}"
        # This process's embedded broker is Tansu: the workers must know it.
        env["MXPROBE_BROKER_KIND"] = "tansu" if running.on_tansu else "kafka"
        self._env = env
        self._processes: list[subprocess.Popen[bytes]] = []

    async def start(self) -> None:
        """Start the workers and wait until the group has them all, and is stable."""
        if self._count <= 0:
            return
        for _ in range(self._count):
            self._processes.append(
                subprocess.Popen(
                    [sys.executable, "-m", "streams", "worker"],
                    env=self._env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        deadline = time.monotonic() + 120
        group = self._running.settings.app_id
        while time.monotonic() < deadline:
            await asyncio.sleep(0.5)
            if any(p.poll() is not None for p in self._processes):
                raise MxprobeError("A benchmark worker exited at start; run `mxprobe worker`.")
            state, members = await group_state(self._running.bootstrap, group)
            if state == "Stable" and members == self._count:
                await asyncio.sleep(1.0)  # the workers finish taking their partitions
                return
        raise MxprobeError("The benchmark workers did not join the group within 120 s.")

    def cpu(self) -> float:
        """CPU seconds the workers used so far (Linux /proc; 0 elsewhere)."""
        total = 0.0
        ticks = os.sysconf("SC_CLK_TCK")
        for process in self._processes:
            try:
                fields = Path(f"/proc/{process.pid}/stat").read_text().rpartition(")")[2].split()
            except OSError:
                continue
            total += (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
        return total

    def stop(self) -> None:
        for process in self._processes:
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
        for process in self._processes:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()


class _SandboxProcess:
    """The workload's sandbox served by a child process, driven over a pipe."""

    def __init__(self, plan: BenchPlan) -> None:
        self._plan = plan
        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        self._process = context.Process(
            target=_serve,
            args=(child, plan.addresses, plan.domains, plan.hosts, plan.mix, plan.seed),
            name="mxprobe bench sandbox",
            daemon=True,
        )
        self.dns_server = ""
        self.smtp_port = 0

    def __enter__(self) -> _SandboxProcess:
        self._process.start()
        if not self._conn.poll(60):
            self._process.kill()
            raise MxprobeError("The benchmark's sandbox did not start within 60 s.")
        answer = self._conn.recv()
        if isinstance(answer, str):  # the child's error, as a sentence
            self._process.join(5)
            raise MxprobeError(answer)
        self.dns_server, self.smtp_port = answer
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._process.is_alive():
            self._ask("stop")
            self._process.join(10)
        if self._process.is_alive():
            self._process.kill()

    def reset(self) -> None:
        """Zero the servers' counters (before the measured pass)."""
        self._ask("reset")

    def stats(self) -> dict[str, Any]:
        """Sessions, RCPTs and DNS queries since the last reset, and the child's CPU."""
        answer = self._ask("stats")
        assert isinstance(answer, dict)
        return answer

    def _ask(self, command: str) -> object:
        self._conn.send(command)
        return self._conn.recv()


def _serve(
    conn: Connection,
    addresses: int,
    domains: int,
    hosts: int,
    mix: Mapping[str, float] | None,
    seed: int,
) -> None:
    """The child process: build the same world, serve it, answer the parent's commands."""
    world, _ = workload(addresses, domains, hosts, mix=mix, seed=seed)

    async def main() -> None:
        try:
            sandbox = Sandbox(world, dns_port=0, smtp_port=0)
            await sandbox.start()
        except MxprobeError as exc:
            conn.send(str(exc))
            return
        try:
            conn.send((sandbox.dns_server, sandbox.smtp_port))
            loop = asyncio.get_running_loop()
            since = _cpu()
            while True:
                command = await loop.run_in_executor(None, conn.recv)
                if command == "stop":
                    conn.send(True)
                    return
                if command == "reset":
                    sandbox.reset_stats()
                    since = _cpu()
                    conn.send(True)
                elif command == "stats":
                    conn.send(_served(sandbox, since))
        finally:
            await sandbox.stop()

    asyncio.run(main())


def _served(sandbox: Sandbox, since: float) -> dict[str, Any]:
    """What the servers counted since the last reset, and the CPU they used."""
    stats = [sandbox.stats(host.name) for host in sandbox.world.hosts]
    return {
        "sessions": sum(s.sessions for s in stats),
        "rcpts": sum(s.rcpts for s in stats),
        "dns_queries": sum(sandbox.dns_queries().values()),
        "cpu": _cpu() - since,
    }
