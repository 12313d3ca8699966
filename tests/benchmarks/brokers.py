"""Benchmark: `mxprobe bench` on each broker, with the broker's own CPU.

Starts the embedded Tansu and a single-node Apache Kafka (as the tests do),
runs ``mxprobe bench --broker URL --addresses N --workers W --json`` against
each, and reads the broker process's CPU time (``/proc/PID/stat``) around
each run. Prints one row per broker and worker count: addresses/s, latency
p50/p99, the workers' CPU per 1,000 addresses, the broker's CPU per 1,000.

    python tests/benchmarks/brokers.py --addresses 10000 --workers 1 --workers 2
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator

from streams.apache_kafka import KafkaNode, kafka_version
from streams.embedded import EmbeddedBroker

_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU of ``pid`` and its waited-for children, in seconds."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        fields = stat.read().rpartition(")")[2].split()
    utime, stime, cutime, cstime = (int(f) for f in fields[11:15])
    return (utime + stime + cutime + cstime) / _TICKS


@contextlib.contextmanager
def broker(kind: str) -> Iterator[tuple[str, int]]:
    """(URL, pid) of a running broker of ``kind``."""
    if kind == "tansu":
        with EmbeddedBroker() as tansu:
            assert tansu.pid is not None
            yield tansu.url, tansu.pid
    else:
        with KafkaNode(heap="1g") as node:
            assert node.pid is not None
            yield node.url, node.pid


def run(url: str, kind: str, addresses: int, workers: int) -> dict[str, object]:
    env = dict(os.environ)
    env["MXPROBE_BROKER_KIND"] = kind
    # Topics of its own: the benchmark's request ids repeat from run to run.
    app = f"bench{uuid.uuid4().hex[:8]}"
    env.update(
        MXPROBE_APP_ID=app,
        MXPROBE_INPUT_TOPIC=f"{app}.addresses",
        MXPROBE_BULK_TOPIC=f"{app}.bulk",
        MXPROBE_VERDICT_TOPIC=f"{app}.verdicts",
        MXPROBE_DLQ_TOPIC=f"{app}.dlq",
    )
    command = [sys.executable, "-m", "streams", "bench", "--broker", url]
    command += ["--addresses", str(addresses), "--workers", str(workers), "--json"]
    out = subprocess.run(command, env=env, check=True, capture_output=True, text=True).stdout
    result: dict[str, object] = json.loads(out.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--addresses", type=int, default=10_000)
    parser.add_argument("--workers", type=int, action="append")
    parser.add_argument("--broker", choices=["tansu", "kafka"], action="append")
    args = parser.parse_args()
    rows = []
    for kind in args.broker or ["tansu", "kafka"]:
        with broker(kind) as (url, pid):
            for workers in args.workers or [1, 2]:
                before = cpu_seconds(pid)
                result = run(url, kind, args.addresses, workers)
                broker_cpu = cpu_seconds(pid) - before
                latency = result["latency_ms"]
                assert isinstance(latency, dict)
                rows.append(
                    (
                        kind if kind == "tansu" else f"kafka {kafka_version()}",
                        workers,
                        result["addresses_per_second"],
                        latency["p50"] / 1000,
                        latency["p99"] / 1000,
                        result["cpu_seconds_per_1000"],
                        broker_cpu * 1000 / args.addresses,
                    )
                )
                print(
                    json.dumps(
                        {
                            "broker": kind,
                            "workers": workers,
                            **result,
                            "broker_cpu_seconds": round(broker_cpu, 2),
                        }
                    ),
                    flush=True,
                )
    print(f"\n{args.addresses} addresses, 20 domains on 4 hosts, warm tables")
    print(
        "| broker | workers | addresses/s | latency p50 / p99 | workers' CPU s per 1,000 "
        "| broker's CPU s per 1,000 |"
    )
    print("|---|---|---|---|---|---|")
    for name, workers, rate, p50, p99, cpu, bcpu in rows:
        print(
            f"| {name} | {workers} | {rate:,.0f} | {p50:.1f} / {p99:.1f} s | {cpu:.2f} "
            f"| {bcpu:.2f} |"
        )


if __name__ == "__main__":
    main()
