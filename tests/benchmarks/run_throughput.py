"""Benchmark: the streaming pipeline (`mxprobe run`'s code path) on the embedded broker.

Starts the sandbox world (in its own process, as `mxprobe sandbox`, so that it
does not compete with the worker for the GIL) and the embedded Tansu broker, runs one
worker in-process exactly as `mxprobe run` does, submits N addresses spread
over the sandbox's fast domains, and waits for every verdict. Reports
addresses/second (first submit to last verdict) and submit-to-verdict latency
(p50/p99 of each verdict's `latency_ms`, i.e. verified_at - submitted_at).

    python tests/benchmarks/run_throughput.py --addresses 5000
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import os
import re
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))

from support import FAST_DOMAINS as FAST

from streams.assembly import verifier_factory
from streams.pipeline.inputs import InputRequest
from streams.pipeline.runner import PipelineRun
from streams.sandbox import load_world
from streams.settings import load_settings


@contextlib.contextmanager
def sandbox_process() -> Iterator[tuple[str, int]]:
    """`mxprobe sandbox` on free ports in a child process: (dns server, smtp port)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "streams", "sandbox", "--dns-port", "0", "--smtp-port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "COLUMNS": "400"},
    )
    try:
        assert process.stdout is not None
        for line in process.stdout:
            found = re.search(r"--dns-server (\S+) --smtp-port (\d+)", line)
            if found:
                yield found[1], int(found[2])
                return
        raise RuntimeError("mxprobe sandbox did not start")
    finally:
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=30)


async def main(count: int, partitions: int) -> None:
    world = load_world()
    users = {d.name: sorted(d.users) or ["alice"] for d in world.domains}
    requests = []
    for i in range(count):
        domain = FAST[i % len(FAST)]
        known = users.get(domain, ["alice"])
        local = known[i % len(known)] if (i // len(FAST)) % 10 == 0 else f"user{i}"
        requests.append(InputRequest(f"{local}@{domain}", str(uuid.uuid4()), "bench", 3600))
    with sandbox_process() as (dns_server, smtp_port):
        settings = load_settings(
            dns_server=(dns_server,),
            smtp_port=smtp_port,
            allow_private_mx=True,
            allow_tld=("test",),
            helo="probe.mxprobe.test",
            mail_from="probe@mxprobe.test",
            timeout=2.0,
            partitions=partitions,
            disposable_domain=world.disposable,
        )
        started = time.perf_counter()
        async with PipelineRun(settings, verifier_factory(settings)) as running:
            ready = time.perf_counter() - started
            first = time.perf_counter()
            records = await running.verify(requests, timeout=600)
            elapsed = time.perf_counter() - first
    latencies = sorted(r.latency_ms for r in records)
    p = statistics.quantiles(latencies, n=100)
    print(f"addresses: {len(records)} over {len(FAST)} domains, {partitions} partitions")
    print(f"worker start (broker + join): {ready:.1f} s")
    print(
        f"first submit to last verdict: {elapsed:.2f} s -> {len(records) / elapsed:.0f} addresses/s"
    )
    print(
        f"submit-to-verdict latency: p50 {p[49]:.0f} ms, p99 {p[98]:.0f} ms, max {latencies[-1]} ms"
    )
    counts = collections.Counter(f"{r.status.value}/{r.reason}" for r in records)
    for key, n in counts.most_common():
        print(f"  {n:6d}  {key}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--addresses", type=int, default=5000)
    parser.add_argument("--partitions", type=int, default=4)
    args = parser.parse_args()
    asyncio.run(main(args.addresses, args.partitions))
