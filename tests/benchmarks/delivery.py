"""Measurement: delivery when a worker is SIGKILLed mid-run, per broker and guarantee.

For each broker (the embedded Tansu, Apache Kafka from its Maven jars) and
each processing guarantee it has (Tansu: at_least_once; Kafka: at_least_once
and exactly_once), and each run: two ``mxprobe worker`` processes share a
group, N sandbox requests are submitted, one worker is SIGKILLed at a random
point while verdicts are coming and a replacement is started at once. Then
the verdict topic is read whole, ``read_committed`` and
``read_uncommitted``, and compared with what was submitted:

    submitted / distinct verdicts / missing / duplicate ids (read_committed,
    read_uncommitted) / non-identical duplicates (read_committed) / dead letters

    python tests/benchmarks/delivery.py --requests 5000 --runs 3 [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))

from broker import RunningBroker
from support import FAST_DOMAINS, SandboxThread

from streams.apache_kafka import KafkaNode, kafka_version
from streams.embedded import EmbeddedBroker
from streams.pipeline.inputs import InputRequest
from streams.pipeline.kafka_admin import group_state
from streams.pipeline.records import VerdictRecord
from streams.pipeline.runner import produce_requests, read_dead_letters, read_verdicts
from streams.sandbox import load_world

DOMAINS = FAST_DOMAINS[:10]


@dataclass
class Row:
    broker: str
    guarantee: str
    run: int
    submitted: int
    distinct: int
    missing: int
    duplicates_committed: int
    duplicates_uncommitted: int
    non_identical: int
    dead_letters: int
    killed_after_s: float
    verdicts_before_kill: int
    seconds: float


def worker(env: dict[str, str]) -> subprocess.Popen[bytes]:
    logs = os.environ.get("DELIVERY_LOGS")  # a directory for the workers' stderr
    err: Any = subprocess.DEVNULL
    if logs:
        err = open(Path(logs) / f"worker-{time.monotonic_ns()}.log", "wb")  # noqa: SIM115
    return subprocess.Popen(
        [sys.executable, "-m", "streams", "worker"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=err,
        start_new_session=True,
    )


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def wait_members(bootstrap: str, group: str, count: int, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state, members = await group_state(bootstrap, group)
        if members == count and state == "Stable":
            return
        await asyncio.sleep(0.3)
    raise RuntimeError(f"group {group} never had {count} members")


async def read_all(broker: RunningBroker, topic: str, *, committed: bool) -> list[VerdictRecord]:
    """Every verdict on ``topic``, up to its end (``committed``: its last stable offset)."""
    stream = read_verdicts(
        broker.bootstrap, topic, committed=committed, to_end=True, tansu=broker.kind == "tansu"
    )
    async with contextlib.aclosing(stream):
        return [record async for record in stream]


async def count_letters(bootstrap: str, topic: str, idle: float = 2.0) -> int:
    ids: list[str] = []
    letters = read_dead_letters(bootstrap, topic)

    async def run() -> None:
        async for request_id in letters:
            ids.append(request_id)

    task = asyncio.ensure_future(run())
    await asyncio.sleep(idle)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await letters.aclose()
    return len(ids)


async def one_run(
    sb: SandboxThread, broker: RunningBroker, guarantee: str, run: int, count: int
) -> Row:
    app = f"d{uuid.uuid4().hex[:8]}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MXPROBE_")}
    env.update(sb.app_env(broker, app), MXPROBE_PARTITIONS="4")
    env["MXPROBE_PROCESSING_GUARANTEE"] = guarantee
    topic = f"{app}.verdicts"
    requests = [
        InputRequest(f"user{i}@{DOMAINS[i % len(DOMAINS)]}", str(uuid.uuid4()), "bench", 3600)
        for i in range(count)
    ]
    wanted = {r.request_id for r in requests}
    workers = [worker(env), worker(env)]
    started = time.monotonic()
    try:
        await wait_members(broker.bootstrap, app, 2)
        seen: set[str] = set()
        stream = read_verdicts(broker.bootstrap, topic, committed=False, idle_ms=100)

        async def follow() -> None:
            async for record in stream:
                seen.add(record.request_id)

        follower = asyncio.ensure_future(follow())
        submit = time.monotonic()
        await produce_requests(
            broker.bootstrap, f"{app}.addresses", requests, allowed_tlds=("test",)
        )
        # Kill while verdicts are coming: once a random share of them is out.
        share = random.uniform(0.1, 0.6)
        while len(seen) < share * count and time.monotonic() - submit < 60:
            await asyncio.sleep(0.01)
        killed_after = time.monotonic() - submit
        before = len(seen)
        os.killpg(workers[0].pid, signal.SIGKILL)
        workers[0].wait()
        workers.append(worker(env))
        deadline = time.monotonic() + 240
        while not wanted <= seen and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        follower.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await follower
        await stream.aclose()
        await asyncio.sleep(3)  # duplicates of a re-processed batch come late
        committed = await read_all(broker, topic, committed=True)
        uncommitted = await read_all(broker, topic, committed=False)
        letters = await count_letters(broker.bootstrap, f"{app}.dlq")
    finally:
        for process in workers:
            stop(process)
    by_id: dict[str, list[VerdictRecord]] = {}
    for record in committed:
        by_id.setdefault(record.request_id, []).append(record)
    if os.environ.get("SHOW_DUPLICATES"):
        for rs in by_id.values():
            if len(rs) > 1:
                for r in rs:
                    print(
                        "  dup",
                        r.request_id[:8],
                        r.email,
                        r.status.value,
                        r.reason,
                        r.verified_at,
                        r.evidence.attempts,
                        file=sys.stderr,
                    )
    ids_uncommitted: dict[str, int] = {}
    for record in uncommitted:
        ids_uncommitted[record.request_id] = ids_uncommitted.get(record.request_id, 0) + 1
    return Row(
        broker=broker.kind,
        guarantee=guarantee,
        run=run,
        submitted=count,
        distinct=len(wanted & by_id.keys()),
        missing=len(wanted - by_id.keys()),
        duplicates_committed=sum(1 for rs in by_id.values() if len(rs) > 1),
        duplicates_uncommitted=sum(1 for n in ids_uncommitted.values() if n > 1),
        non_identical=sum(1 for rs in by_id.values() if any(r != rs[0] for r in rs)),
        dead_letters=letters,
        killed_after_s=round(killed_after, 2),
        verdicts_before_kill=before,
        seconds=round(time.monotonic() - started, 1),
    )


@contextlib.contextmanager
def brokers(which: list[str]) -> Iterator[list[RunningBroker]]:
    with contextlib.ExitStack() as stack:
        running = []
        for kind in which:
            if kind == "tansu":
                tansu = stack.enter_context(EmbeddedBroker())
                running.append(RunningBroker(tansu.url, "tansu"))
            else:
                node = stack.enter_context(KafkaNode())
                running.append(RunningBroker(node.url, "kafka"))
        yield running


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--broker", choices=["tansu", "kafka"], action="append")
    parser.add_argument("--guarantee", choices=["at_least_once", "exactly_once"], action="append")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rows: list[Row] = []
    with SandboxThread(load_world()) as sb, brokers(args.broker or ["tansu", "kafka"]) as running:
        for broker in running:
            guarantees = (
                ["at_least_once"] if broker.kind == "tansu" else ["at_least_once", "exactly_once"]
            )
            for guarantee in args.guarantee or guarantees:
                if broker.kind == "tansu" and guarantee == "exactly_once":
                    continue
                for run in range(1, args.runs + 1):
                    row = asyncio.run(one_run(sb, broker, guarantee, run, args.requests))
                    rows.append(row)
                    if args.json:
                        print(json.dumps(asdict(row)), flush=True)
                    else:
                        print(row, flush=True)
    if not args.json:
        print(f"\nApache Kafka {kafka_version()}; 2 workers, one SIGKILLed and replaced.")
        print(
            "| broker | guarantee | run | submitted | distinct | missing | dup ids (rc) "
            "| dup ids (ru) | non-identical (rc) | DLQ | killed after |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        for r in rows:
            print(
                f"| {r.broker} | {r.guarantee} | {r.run} | {r.submitted} | {r.distinct} "
                f"| {r.missing} | {r.duplicates_committed} | {r.duplicates_uncommitted} "
                f"| {r.non_identical} | {r.dead_letters} "
                f"| {r.killed_after_s} s ({r.verdicts_before_kill} verdicts) |"
            )


if __name__ == "__main__":
    main()
