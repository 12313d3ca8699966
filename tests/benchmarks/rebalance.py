"""Benchmark: how long the consumer group of `mxprobe worker` processes takes to settle.

For each broker (the embedded Tansu, and Apache Kafka from its Maven jars as
the tests run it), with the sandbox mail world in a thread, starts worker
processes (`python -m streams worker`, configured by MXPROBE_* variables as a
deployment would be) in a consumer group of their own and times, from the
event to the broker's answer "Stable, with N members" (DescribeGroups, polled
every 0.1 s):

- cold start: a first worker starts (topics created, group formed): 1 member;
- join: a second worker joins a group of 1: 2 members;
- SIGTERM: one of 2 workers is stopped cleanly: 1 member;
- SIGKILL: one of 2 workers is killed: 1 member (the broker evicts it after
  the session timeout, 10 s in mxprobe);
- join, retry held: a second worker joins while the first holds a greylisted
  retry event in a 20 s tier (as tests/integration/test_workers.py's
  test_a_held_retry_does_not_stall_a_rebalance_and_is_not_lost); the verdict
  must still arrive, deliverable/accepted, and not before it is due (each
  run in a sandbox of its own, where alice@greylist.test is not yet let through).

Each run has its own group and topics. MXPROBE_PROCESSING_GUARANTEE is passed
on to the workers when it is set here. Every process started is stopped at
the end, also on Ctrl-C or an error.

    python tests/benchmarks/rebalance.py                        # both brokers, 3 runs
    python tests/benchmarks/rebalance.py --broker kafka --runs 5 --json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NoReturn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))

from broker import RunningBroker
from support import SandboxThread

from streams.apache_kafka import KafkaNode, kafka_version
from streams.embedded import EmbeddedBroker
from streams.pipeline.inputs import InputRequest
from streams.pipeline.kafka_admin import group_state
from streams.pipeline.records import VerdictRecord
from streams.pipeline.runner import produce_requests, read_verdicts
from streams.processes import die_with_parent_hook
from streams.sandbox import load_world

BROKERS = ("tansu", "kafka")
COLD, JOIN, TERM, KILL, HELD = (
    "cold start (0 -> 1)",
    "join (1 -> 2)",
    "SIGTERM (2 -> 1)",
    "SIGKILL (2 -> 1)",
    "join, retry held (1 -> 2)",
)
SCENARIOS = (COLD, JOIN, TERM, KILL, HELD)

#: Seconds between two DescribeGroups; and the longest wait for any one settling.
POLL = 0.1
SETTLE_TIMEOUT = 90.0
#: The held-retry scenario: the tier's delay, and the wait before the second worker.
HELD_DELAY = 20.0
HELD_WAIT = 3.0
#: Variables of this environment passed on to the workers when set.
PASSED_ON = ("MXPROBE_PROCESSING_GUARANTEE",)
READY_LINE = "mxprobe worker: consuming"


@dataclass(frozen=True, slots=True)
class Sample:
    """One measurement: seconds until the group settled, or why it did not."""

    broker: str
    scenario: str
    run: int
    seconds: float | None
    error: str = ""
    verdict: str = ""  # held retry: the verdict's status/reason
    answered_s: float | None = None  # held retry: seconds from submit to verdict
    exited_s: float | None = None  # SIGTERM: seconds until the stopped worker exited
    exit_status: int | None = None  # SIGTERM: its exit status (0: a clean stop)

    @property
    def verdict_ok(self) -> bool:
        """Held retry: the verdict arrived as expected, and not before it was due."""
        return (
            self.verdict == "deliverable/accepted"
            and self.answered_s is not None
            and self.answered_s >= HELD_DELAY
        )


class Worker:
    """One `mxprobe worker` process; its stderr goes to a file (a pipe could fill up)."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.log = log
        self.exited_after: float | None = None
        with log.open("wb") as err:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "streams", "worker"],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
                start_new_session=True,  # Ctrl-C reaches this script, which stops it
                preexec_fn=die_with_parent_hook(),
            )

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    def ready(self) -> bool:
        """The worker has its partitions and consumes (it says so on stderr)."""
        return READY_LINE in self.log.read_text("utf-8", errors="replace")

    def tail(self, lines: int = 6) -> str:
        text = self.log.read_text("utf-8", errors="replace").strip().splitlines()
        return " | ".join(text[-lines:]) or "(nothing on stderr)"

    def signal(self, signum: int) -> None:
        if self.running:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signum)

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM (a clean stop), then SIGKILL after ``timeout``."""
        self.signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class Workers:
    """Every worker this script starts, so that all are stopped whatever happens."""

    def __init__(self, directory: Path) -> None:
        self._directory = directory
        self._all: list[Worker] = []

    def start(self, env: dict[str, str]) -> Worker:
        worker = Worker(env, self._directory / f"worker-{len(self._all)}.err")
        self._all.append(worker)
        return worker

    def stop_all(self) -> None:
        for worker in self._all:
            worker.signal(signal.SIGTERM)
        deadline = time.monotonic() + 30
        for worker in self._all:
            try:
                worker.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                worker.process.kill()
                worker.process.wait()


class Failed(Exception):
    """A scenario did not settle (the message says what happened)."""


def worker_env(
    sb: SandboxThread, broker: EmbeddedBroker | RunningBroker, app: str, **extra: str
) -> dict[str, str]:
    """This process's environment without MXPROBE_*, then the app's MXPROBE_* settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MXPROBE_")}
    env.update(sb.app_env(broker, app), MXPROBE_PARTITIONS="4", COLUMNS="400")
    env.update({k: os.environ[k] for k in PASSED_ON if os.environ.get(k)})
    env.update(extra)
    return env


async def settled(
    bootstrap: str,
    group: str,
    members: int,
    watched: Sequence[Worker],
    since: float,
    leaving: Worker | None = None,
) -> float:
    """Seconds from ``since`` until ``group`` is Stable with ``members`` members.

    ``leaving`` (a worker being stopped) gets its ``exited_after``: seconds from
    ``since`` until it was seen to have exited.
    """
    deadline = since + SETTLE_TIMEOUT
    seen = ("", -1)
    while time.monotonic() < deadline:
        if leaving is not None and leaving.exited_after is None and not leaving.running:
            leaving.exited_after = time.monotonic() - since
        with contextlib.suppress(Exception):  # the coordinator may not answer yet
            seen = await group_state(bootstrap, group)
            if seen == ("Stable", members):
                return round(time.monotonic() - since, 3)
        for worker in watched:
            if not worker.running:
                raise Failed(f"a worker exited ({worker.process.returncode}): {worker.tail()}")
        await asyncio.sleep(POLL)
    raise Failed(
        f"not Stable with {members} members within {SETTLE_TIMEOUT:g} s "
        f"(last seen: {seen[0] or 'no group'}, {seen[1]} members)"
    )


async def until_ready(worker: Worker, timeout: float = 60.0) -> None:
    """Wait until ``worker`` consumes: before that, SIGTERM would not stop it cleanly."""
    deadline = time.monotonic() + timeout
    while not worker.ready():
        if not worker.running:
            raise Failed(f"a worker exited ({worker.process.returncode}): {worker.tail()}")
        if time.monotonic() > deadline:
            raise Failed(f"a worker did not start consuming within {timeout:g} s")
        await asyncio.sleep(POLL)


async def membership(
    name: str, run: int, bootstrap: str, env: dict[str, str], workers: Workers
) -> list[Sample]:
    """Cold start, join, SIGTERM and SIGKILL, one after the other in one group."""
    group = env["MXPROBE_APP_ID"]
    samples: list[Sample] = []
    started: list[Worker] = []
    scenario = COLD
    try:
        since = time.monotonic()
        first = workers.start(env)
        started.append(first)
        samples.append(Sample(name, COLD, run, await settled(bootstrap, group, 1, [first], since)))
        await until_ready(first)

        scenario = JOIN
        since = time.monotonic()
        second = workers.start(env)
        started.append(second)
        took = await settled(bootstrap, group, 2, [first, second], since)
        samples.append(Sample(name, JOIN, run, took))
        await until_ready(second)

        scenario = TERM
        since = time.monotonic()
        first.signal(signal.SIGTERM)
        took = await settled(bootstrap, group, 1, [second], since, leaving=first)
        while first.exited_after is None and time.monotonic() < since + 60:
            if not first.running:
                first.exited_after = time.monotonic() - since
            await asyncio.sleep(POLL)
        exited = None if first.exited_after is None else round(first.exited_after, 2)
        status = first.process.poll()
        samples.append(Sample(name, TERM, run, took, exited_s=exited, exit_status=status))

        scenario = KILL  # two workers again (not timed), then one is killed
        third = workers.start(env)
        started.append(third)
        await settled(bootstrap, group, 2, [second, third], time.monotonic())
        await until_ready(third)
        since = time.monotonic()
        second.signal(signal.SIGKILL)
        samples.append(Sample(name, KILL, run, await settled(bootstrap, group, 1, [third], since)))
    except Failed as exc:
        samples.append(Sample(name, scenario, run, None, error=str(exc)))
    finally:
        for worker in started:
            worker.stop()
    return samples


async def held_retry(
    name: str, run: int, broker: EmbeddedBroker | RunningBroker, workers: Workers
) -> Sample:
    """A second worker joins while the first holds a retry event due in 20 s.

    The run has a sandbox of its own: greylisting lets a (client, sender,
    recipient) triplet through for good once it passed, so in a shared sandbox
    only the first run's probe would be greylisted.
    """
    with SandboxThread(load_world()) as sb:
        return await _held_retry(name, run, sb, broker, workers)


async def _held_retry(
    name: str, run: int, sb: SandboxThread, broker: EmbeddedBroker | RunningBroker, workers: Workers
) -> Sample:
    app = f"rbh{uuid.uuid4().hex[:8]}"
    env = worker_env(
        sb,
        broker,
        app,
        MXPROBE_RETRY_DELAYS=f"{HELD_DELAY:g}",
        MXPROBE_RETRY_ATTEMPTS="greylisted=1",
    )
    started: list[Worker] = []
    try:
        first = workers.start(env)
        started.append(first)
        await settled(broker.bootstrap, app, 1, [first], time.monotonic())
        await until_ready(first)
        request = InputRequest("alice@greylist.test", str(uuid.uuid4()), "bench", 0)
        await produce_requests(
            broker.bootstrap, f"{app}.addresses", [request], allowed_tlds=("test",)
        )
        submitted = time.monotonic()
        await asyncio.sleep(HELD_WAIT)  # probed, greylisted, held in the 20 s tier
        since = time.monotonic()
        second = workers.start(env)
        started.append(second)
        took = await settled(broker.bootstrap, app, 2, [first, second], since)
        got = await first_verdict(broker.bootstrap, f"{app}.verdicts", request.request_id, 60)
        if got is None:
            return Sample(name, HELD, run, took, error="no verdict within 60 s")
        answered = time.monotonic() - submitted
        verdict = f"{got.status.value}/{got.reason}"
        return Sample(name, HELD, run, took, verdict=verdict, answered_s=round(answered, 2))
    except Failed as exc:
        return Sample(name, HELD, run, None, error=str(exc))
    finally:
        for worker in started:
            worker.stop()


async def first_verdict(
    bootstrap: str, topic: str, request_id: str, timeout: float
) -> VerdictRecord | None:
    """The first verdict for ``request_id`` on ``topic``, or None after ``timeout``."""
    stream = read_verdicts(bootstrap, topic)

    async def find() -> VerdictRecord:
        async for record in stream:
            if record.request_id == request_id:
                return record
        raise Failed("the verdict stream ended")

    try:
        return await asyncio.wait_for(find(), timeout)
    except TimeoutError:
        return None
    finally:
        await stream.aclose()


async def measure(
    name: str,
    broker: EmbeddedBroker | RunningBroker,
    sb: SandboxThread,
    runs: int,
    directory: Path,
) -> list[Sample]:
    """Every scenario ``runs`` times on one broker; the workers are stopped at the end."""
    workers = Workers(directory)
    samples: list[Sample] = []
    try:
        for run in range(1, runs + 1):
            env = worker_env(sb, broker, f"rb{uuid.uuid4().hex[:8]}")
            these = await membership(name, run, broker.bootstrap, env, workers)
            these.append(await held_retry(name, run, broker, workers))
            for sample in these:
                print(f"  {name} run {run}: {describe(sample)}", file=sys.stderr, flush=True)
            samples += these
    finally:
        workers.stop_all()
    return samples


def describe(sample: Sample) -> str:
    if sample.seconds is None:
        return f"{sample.scenario}: FAILED, {sample.error}"
    extra = ""
    if sample.exited_s is not None:
        extra = f"; the stopped worker exited after {sample.exited_s:.1f} s"
        extra += f" with status {sample.exit_status}"
    if sample.scenario == HELD:
        extra = f"; verdict {sample.verdict or sample.error}"
        extra += "" if sample.answered_s is None else f" after {sample.answered_s:.1f} s"
    return f"{sample.scenario}: {sample.seconds:.2f} s{extra}"


@contextlib.contextmanager
def running_broker(name: str) -> Iterator[EmbeddedBroker | RunningBroker]:
    """The broker ``name``, started on free loopback ports and stopped afterwards."""
    if name == "tansu":
        with EmbeddedBroker() as tansu:
            print(f"Tansu on {tansu.bootstrap} (pid {tansu.pid})", file=sys.stderr)
            yield tansu
    else:
        with KafkaNode() as node:
            print(
                f"Apache Kafka {kafka_version()} on {node.bootstrap} (pid {node.pid})",
                file=sys.stderr,
            )
            yield RunningBroker(node.url, "kafka")


def summary(samples: Sequence[Sample]) -> list[dict[str, Any]]:
    """Per broker and scenario: runs, min/median/max seconds, and the held verdicts."""
    rows: list[dict[str, Any]] = []
    for name in dict.fromkeys(s.broker for s in samples):
        for scenario in SCENARIOS:
            mine = [s for s in samples if s.broker == name and s.scenario == scenario]
            if not mine:
                continue
            times = [s.seconds for s in mine if s.seconds is not None]
            row: dict[str, Any] = {
                "broker": name,
                "scenario": scenario,
                "runs": len(mine),
                "settled": len(times),
                "min_s": round(min(times), 2) if times else None,
                "median_s": round(statistics.median(times), 2) if times else None,
                "max_s": round(max(times), 2) if times else None,
            }
            exited = [s.exited_s for s in mine if s.exited_s is not None]
            if exited:
                row["exited_s"] = [min(exited), max(exited)]
                row["exit_statuses"] = sorted({s.exit_status for s in mine}, key=str)
            if scenario == HELD:
                row["verdicts_ok"] = sum(s.verdict_ok for s in mine)
                answered = [s.answered_s for s in mine if s.answered_s is not None]
                row["answered_s"] = [min(answered), max(answered)] if answered else None
            rows.append(row)
    return rows


def render(rows: Sequence[dict[str, Any]]) -> str:
    """The summary as a plain-text table."""

    def seconds(value: float | None) -> str:
        return "-" if value is None else f"{value:.1f}"

    header = ["broker", "scenario", "runs", "min s", "median s", "max s", "note"]
    table = [header]
    for row in rows:
        note = "" if row["settled"] == row["runs"] else f"{row['runs'] - row['settled']} failed"
        if "exited_s" in row:
            low, high = row["exited_s"]
            statuses = "/".join(str(status) for status in row["exit_statuses"])
            exits = f"stopped worker exits after {low:.1f}-{high:.1f} s, status {statuses}"
            note = ", ".join(part for part in (note, exits) if part)
        if "verdicts_ok" in row:
            answered = row["answered_s"]
            note = ", ".join(
                part
                for part in (
                    note,
                    f"verdict ok {row['verdicts_ok']}/{row['runs']}",
                    "" if not answered else f"after {answered[0]:.1f}-{answered[1]:.1f} s",
                )
                if part
            )
        table.append(
            [
                row["broker"],
                row["scenario"],
                str(row["runs"]),
                seconds(row["min_s"]),
                seconds(row["median_s"]),
                seconds(row["max_s"]),
                note,
            ]
        )
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    return "\n".join(
        "  ".join(
            cell.rjust(width) if 2 <= i <= 5 else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(line, widths, strict=True))
        ).rstrip()
        for line in table
    )


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--broker",
        action="append",
        choices=BROKERS,
        help="a broker to measure (repeatable; default: both)",
    )
    parser.add_argument("--runs", type=int, default=3, help="runs of every scenario")
    parser.add_argument("--json", action="store_true", help="print JSON instead of the table")
    return parser.parse_args(argv)


def _interrupted(signum: int, frame: object) -> NoReturn:
    raise KeyboardInterrupt  # SIGTERM stops this script as Ctrl-C does: cleanly


def main(argv: Sequence[str] | None = None) -> int:
    """Measure, print the figures; 0 when every scenario settled (and verdicts arrived)."""
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupted)
    samples: list[Sample] = []
    try:
        with SandboxThread(load_world()) as sb, tempfile.TemporaryDirectory() as tmp:
            for name in args.broker or BROKERS:
                with running_broker(name) as broker:
                    directory = Path(tmp) / name
                    directory.mkdir()
                    samples += asyncio.run(measure(name, broker, sb, args.runs, directory))
    except KeyboardInterrupt:
        print("rebalance: interrupted; every process it started is stopped.", file=sys.stderr)
        return 130
    rows = summary(samples)
    if args.json:
        document = {
            "cpus": os.cpu_count(),
            "kafka_version": kafka_version(),
            "processing_guarantee": os.environ.get("MXPROBE_PROCESSING_GUARANTEE") or None,
            "summary": rows,
            "samples": [asdict(s) for s in samples],
        }
        print(json.dumps(document, indent=2))
    else:
        print(f"{os.cpu_count()} CPUs; Apache Kafka {kafka_version()}; {args.runs} runs")
        print(render(rows))
        for sample in samples:
            if sample.error:
                print(f"{sample.broker} run {sample.run}: {describe(sample)}")
    failed = any(s.seconds is None or (s.scenario == HELD and not s.verdict_ok) for s in samples)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
