"""`mxprobe broker` as a user runs it: a real broker process, real clients, real signals."""

from __future__ import annotations

import asyncio
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from broker import unique_topic
from support import clean_env, mxprobe

from streams.loopback import LOOPBACK, free_port
from streams.pipeline.kafka_admin import create_topics
from streams.pipeline.topology import TopicSpec

pytestmark = pytest.mark.integration

READY_TIMEOUT = {"tansu": 30.0, "kafka": 120.0}  # Kafka may fetch its jars the first time
READY_LINES = {"tansu": 3, "kafka": 2}  # the URL, then the export lines


class BrokerCommand:
    """A running `python -m streams broker …`, its stdout read line by line in a thread."""

    def __init__(self, *args: str, ignore_sigint: bool = False) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streams", "broker", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            env=clean_env(),
            preexec_fn=_ignore_sigint if ignore_sigint else None,
        )
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.stdout: list[str] = []

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def wait_ready(self, kind: str = "tansu") -> str:
        """Read the lines it prints once ready (the URL and exports); return the URL."""
        timeout = READY_TIMEOUT[kind]
        deadline = time.monotonic() + timeout
        while len(self.stdout) < READY_LINES[kind]:
            try:
                line = self._lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                pytest.fail(f"mxprobe broker printed no URL in {timeout:g} s: {self.stdout}")
            if line is None:
                pytest.fail(f"mxprobe broker exited before it was ready: {self.finish()}")
            self.stdout.append(line)
        return self.stdout[0]

    def stop(self, signum: signal.Signals) -> tuple[int, str]:
        """Send ``signum``; the exit status and stderr once it has exited."""
        self.proc.send_signal(signum)
        return self.proc.wait(timeout=60), self.finish()

    def finish(self) -> str:
        """Its stderr, once it has exited (killed if it had not after 60 s)."""
        try:
            _, stderr = self.proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, stderr = self.proc.communicate()
        return stderr

    def children(self) -> list[int]:
        """Process ids of its child processes (the broker)."""
        found = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rpartition(")")[2].split()
            except OSError:
                continue
            if int(fields[1]) == self.proc.pid:
                found.append(int(stat.parent.name))
        return found


def _ignore_sigint() -> None:
    """In the child: SIGINT ignored, as a non-interactive shell starts a command with `&`."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@pytest.fixture
def run_broker() -> Iterator[Callable[..., BrokerCommand]]:
    """Start `mxprobe broker` with these arguments; whatever is left running is stopped."""
    started: list[BrokerCommand] = []

    def start(*args: str, ignore_sigint: bool = False) -> BrokerCommand:
        command = BrokerCommand(*args, ignore_sigint=ignore_sigint)
        started.append(command)
        return command

    yield start
    for command in started:
        if command.proc.poll() is None:
            command.proc.terminate()
        command.finish()


async def round_trip(bootstrap: str) -> None:
    """A Kafka client produces a record to a new topic there and reads it back."""
    topic = unique_topic("broker-cli")
    await create_topics(bootstrap, [TopicSpec(topic, 1, 1)])
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        sent = await producer.send_and_wait(topic, b"hello", key=b"k")
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        partition = TopicPartition(topic, sent.partition)
        consumer.assign([partition])
        consumer.seek(partition, sent.offset)
        record = await asyncio.wait_for(consumer.getone(), 20)
    finally:
        await consumer.stop()
    assert (record.key, record.value) == (b"k", b"hello")


def port_of(url: str) -> int:
    assert url.startswith(f"kafka://{LOOPBACK}:"), url
    return int(url.rpartition(":")[2])


def assert_closed(port: int) -> None:
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((LOOPBACK, port), timeout=2).close()


@pytest.mark.parametrize("ignore_sigint", [False, True], ids=["foreground", "sigint-ignored"])
async def test_tansu_serves_clients_until_sigint(
    run_broker: Callable[..., BrokerCommand], ignore_sigint: bool
) -> None:
    """The default broker prints its URL and exports, serves a client, and Ctrl-C ends it (0)."""
    command = run_broker(ignore_sigint=ignore_sigint)
    url = command.wait_ready()
    assert command.stdout == [
        url,
        f"export MXPROBE_BROKER={url}",
        "export MXPROBE_BROKER_KIND=tansu",
    ]
    await round_trip(url.removeprefix("kafka://"))
    status, stderr = command.stop(signal.SIGINT)
    assert status == 0, stderr
    assert "Ctrl-C stops it." in stderr
    assert "Traceback" not in stderr
    assert_closed(port_of(url))


async def test_tansu_on_a_given_port_until_sigterm(
    run_broker: Callable[..., BrokerCommand],
) -> None:
    """--port PORT listens there; SIGTERM stops it cleanly with status 0."""
    port = free_port()
    command = run_broker("--port", str(port))
    url = command.wait_ready()
    assert url == f"kafka://{LOOPBACK}:{port}"
    await round_trip(f"{LOOPBACK}:{port}")
    status, stderr = command.stop(signal.SIGTERM)
    assert status == 0, stderr
    assert "Traceback" not in stderr
    assert_closed(port)


@pytest.mark.parametrize("kind", ["tansu", pytest.param("kafka", marks=pytest.mark.kafka)])
def test_a_port_in_use_is_one_sentence(kind: str) -> None:
    """A port something listens on: exit 2, one line naming the port, no traceback."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind((LOOPBACK, 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = mxprobe("broker", "--kind", kind, "--port", str(port), timeout=30)
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith("Error: ") and f"Port {port} " in error and "--port" in error


def test_a_broker_that_dies_is_said_and_exits_1(run_broker: Callable[..., BrokerCommand]) -> None:
    """The broker process killed under the command: one sentence, exit status 1."""
    command = run_broker()
    url = command.wait_ready()
    (child,) = command.children()
    os.kill(child, signal.SIGKILL)
    status = command.proc.wait(timeout=30)
    stderr = command.finish()
    assert status == 1, stderr
    assert "Traceback" not in stderr
    error = stderr.strip().splitlines()[-1]
    assert error.startswith("Error: ") and "exited by itself" in error
    assert_closed(port_of(url))
    log = Path(error.rpartition("its log is ")[2].rstrip("."))
    assert log.name == "tansu.log" and log.exists()  # kept, for the post-mortem
    shutil.rmtree(log.parent)


@pytest.mark.kafka
async def test_kafka_serves_clients_until_sigint(run_broker: Callable[..., BrokerCommand]) -> None:
    """--kind kafka: Apache Kafka serves a client; Ctrl-C stops it with status 0."""
    command = run_broker("--kind", "kafka")
    url = command.wait_ready("kafka")
    assert command.stdout == [url, f"export MXPROBE_BROKER={url}"]
    await round_trip(url.removeprefix("kafka://"))
    status, stderr = command.stop(signal.SIGINT)
    assert status == 0, stderr
    assert "Starting Apache Kafka" in stderr
    assert "Traceback" not in stderr
    assert_closed(port_of(url))
