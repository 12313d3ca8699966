"""`mxprobe bench`: a generated sandbox workload, measured through the pipeline or the core."""

from __future__ import annotations

import json

import pytest
from support import mxprobe

from streams.bench import BenchPlan, run_bench
from streams.errors import MxprobeError

pytestmark = pytest.mark.integration

KEYS = {
    "mode",
    "addresses",
    "domains",
    "hosts",
    "wall_seconds",
    "addresses_per_second",
    "latency_ms",
    "cpu_seconds",
    "cpu_seconds_per_1000",
    "peak_rss_mb",
    "smtp_sessions",
    "rcpts",
    "rcpts_per_session",
    "dns_queries",
    "dns_queries_per_address",
    "sandbox_cpu_seconds",
    "verdicts",
    "start_seconds",
    "workers",
}


def bench(*args: str) -> dict[str, object]:
    result = mxprobe("bench", "--json", *args, timeout=180)
    assert result.returncode == 0, result.stderr
    report: dict[str, object] = json.loads(result.stdout.strip().splitlines()[-1])
    return report


@pytest.mark.parametrize("mode", ["pipeline", "core"])
def test_bench_reports_every_figure(mode: str) -> None:
    """300 addresses over 6 domains on 3 hosts: every verdict as the workload says,
    counted by the sandbox's servers (warm tables: no DNS, no catch-all probe)."""
    extra = ["--core-only"] if mode == "core" else []
    report = bench("--addresses", "300", "--domains", "6", "--hosts", "3", *extra)
    assert set(report) == KEYS
    assert report["mode"] == mode
    assert report["verdicts"] == {
        "undeliverable/mailbox_not_found": 270,
        "deliverable/accepted": 30,
    }
    assert report["rcpts"] == 300  # warm: the catch-all facts are known already
    assert report["dns_queries"] == 0  # warm: every route is cached
    sessions = report["smtp_sessions"]
    assert isinstance(sessions, int) and 3 <= sessions <= 300 // 50 + 3
    latency = report["latency_ms"]
    assert isinstance(latency, dict)
    assert 0 < latency["p50"] <= latency["p95"] <= latency["p99"] <= latency["max"]
    rate = report["addresses_per_second"]
    wall = report["wall_seconds"]
    assert isinstance(rate, float) and isinstance(wall, float)
    assert rate == pytest.approx(300 / wall, rel=0.01)
    assert report["cpu_seconds_per_1000"] > 0 and report["peak_rss_mb"] > 10


def test_bench_without_warm_up_resolves_and_probes_each_domain() -> None:
    """Cold tables: every domain is resolved and probed for catch-all once."""
    report = bench(
        "--addresses", "60", "--domains", "6", "--hosts", "3", "--core-only", "--no-warm"
    )
    assert report["rcpts"] == 60 + 6  # one catch-all probe per domain
    assert report["dns_queries"] >= 6 * 2  # an MX and an A query per domain at least


def test_bench_table_and_errors() -> None:
    """The table names each figure; an impossible workload is one sentence, exit 2."""
    table = mxprobe("bench", "--addresses", "40", "--domains", "2", "--hosts", "2", "--core-only")
    assert table.returncode == 0, table.stderr
    for words in ("addresses / second", "latency p50 / p95 / p99", "RCPTs per session"):
        assert words in table.stdout
    bad = mxprobe("bench", "--addresses", "10", "--domains", "1", "--hosts", "4")
    assert bad.returncode == 2
    assert bad.stderr.startswith("Error: ") and bad.stderr.count("\n") == 1
    assert "Traceback" not in bad.stderr


def test_bench_with_two_worker_processes() -> None:
    """--workers 2: two `mxprobe worker` processes share the group; every verdict arrives."""
    report = bench("--addresses", "200", "--domains", "4", "--hosts", "2", "--workers", "2")
    assert report["workers"] == 2
    assert report["verdicts"] == {
        "undeliverable/mailbox_not_found": 180,
        "deliverable/accepted": 20,
    }
    assert report["cpu_seconds_per_1000"] > 0  # the worker processes' CPU is counted


def test_verdicts_late_past_the_timeout_are_an_error_not_a_crash() -> None:
    """Verdicts that do not all arrive in time: an MxprobeError naming what to do."""
    plan = BenchPlan(addresses=40, domains=2, hosts=2, core_only=True, timeout=0.001)
    with pytest.raises(
        MxprobeError, match=r"Not every verdict arrived within 0.001 s: .*fewer --addresses"
    ):
        run_bench(plan)
