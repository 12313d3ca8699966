"""A single-node Apache Kafka (KRaft, broker and controller in one) from its Maven jars.

The production broker, for the tests and for people who want it on their own
machine. The jars are the Maven artifact ``org.apache.kafka:kafka_2.13``
with its dependencies, pinned in ``apache_kafka.pom.xml`` beside this module
(:func:`kafka_version` reads it from there), copied once into a cache
directory outside the repository (``$XDG_CACHE_HOME/mxprobe/kafka-VERSION/libs``,
``~/.cache`` by default) by ``mvn dependency:copy-dependencies``; later starts
reuse them.

:class:`KafkaNode` formats a KRaft storage directory (once: a restart keeps
its data), writes ``server.properties`` with free loopback ports and the
settings a single node needs (replication factors 1 for the offsets and
transaction topics, no initial rebalance delay), starts
``java -cp 'libs/*' kafka.Kafka``, waits until it answers a metadata
request, and stops it by its process group. :meth:`KafkaNode.kill` and
:meth:`KafkaNode.start` again restart it on the same ports with its data,
as a broker crash would.

Without Java or the jars (and Maven to fetch them), starting fails with a
:class:`~streams.errors.BrokerError` naming what to install.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from types import MappingProxyType, TracebackType
from typing import Self

from streams.errors import BrokerError
from streams.loopback import LOOPBACK, LoopbackBroker, free_port
from streams.pipeline.kafka_admin import answers_metadata
from streams.processes import POLL, die_with_parent_hook, signal_group, stop_sync, wait_sync

__all__ = ["SINGLE_NODE_SETTINGS", "KafkaNode", "ensure_jars", "jar_directory", "kafka_version"]

_POM = resources.files("streams").joinpath("apache_kafka.pom.xml")


@functools.cache
def kafka_version() -> str:
    """The Apache Kafka version the pom pins (read once, when first asked)."""
    found = re.search(r"<kafka\.version>([^<]+)</kafka\.version>", _POM.read_text("utf-8"))
    if found is None:  # pragma: no cover - the packaged pom names it
        raise BrokerError("streams/apache_kafka.pom.xml names no kafka.version; reinstall mxprobe.")
    return found[1]


#: The broker settings of a single node (broker and controller in one) that do
#: not depend on where it runs; :class:`KafkaNode` adds its ports and directory.
#: ``docker/compose.yaml`` sets the same ones (``tests/unit/test_docker.py``).
SINGLE_NODE_SETTINGS: Mapping[str, str] = MappingProxyType(
    {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.listener.names": "CONTROLLER",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "inter.broker.listener.name": "PLAINTEXT",
        # One node: the internal topics cannot have more than one replica.
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "4",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "transaction.state.log.num.partitions": "4",
        "group.initial.rebalance.delay.ms": "0",
        "num.partitions": "4",
        # Events of up to 16 MiB (Kafka's default is 1 MiB, Tansu has no limit), so
        # that the tests can send the oversized events a stream must survive.
        "message.max.bytes": str(16 * 1024 * 1024),
    }
)

_INSTALL = (
    "install Java 17 and Maven (Debian: apt-get install -y openjdk-17-jre-headless maven) "
    "so that mxprobe can fetch the broker's jars from Maven Central"
)
_LOG4J = """status = warn
appender.out.type = File
appender.out.name = out
appender.out.fileName = {log}
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = info
rootLogger.appenderRef.out.ref = out
"""


def jar_directory() -> Path:
    """Where the broker's jars are kept (outside any repository, per user)."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "mxprobe" / f"kafka-{kafka_version()}" / "libs"


def ensure_jars(directory: Path | None = None) -> Path:
    """The jar directory, filled from Maven Central the first time (needs ``mvn``).

    Raises:
        BrokerError: Maven is missing, or could not resolve the jars.
    """
    libs = directory or jar_directory()
    if (libs / f"kafka_2.13-{kafka_version()}.jar").exists():
        return libs
    mvn = shutil.which("mvn")
    if mvn is None:
        raise BrokerError(f"The Apache Kafka {kafka_version()} jars are not in {libs}; {_INSTALL}.")
    libs.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="libs-", dir=libs.parent))
    with resources.as_file(_POM) as pom:
        goal = ["dependency:copy-dependencies", f"-DoutputDirectory={staging}"]
        result = subprocess.run(
            [mvn, "-q", "-B", "-f", str(pom), *goal],
            capture_output=True,
            text=True,
            check=False,
        )
    if result.returncode != 0:
        shutil.rmtree(staging, ignore_errors=True)
        tail = " ".join((result.stdout + result.stderr).split()[-40:])
        raise BrokerError(
            f"Maven could not fetch the Apache Kafka {kafka_version()} jars ({tail}); check "
            "that this machine reaches Maven Central."
        )
    staging.replace(libs)  # atomic: a reader never sees half the jars
    return libs


class KafkaNode(LoopbackBroker):
    """One Apache Kafka process (broker and controller) on loopback."""

    def __init__(
        self,
        *,
        data_dir: Path | None = None,
        port: int = 0,
        start_timeout: float = 90.0,
        stop_timeout: float = 20.0,
        heap: str = "512m",
        overrides: Mapping[str, str] | None = None,
    ) -> None:
        """Describe the node (nothing starts yet).

        Args:
            data_dir: where its config, logs and data live (default: a new
                temporary directory, removed by :meth:`stop`).
            port: the client port (0: a free one, chosen at the first start).
            start_timeout: seconds to wait for the broker to answer.
            stop_timeout: seconds SIGTERM has before SIGKILL.
            heap: the JVM's maximum heap (``-Xmx``).
            overrides: broker settings over :data:`SINGLE_NODE_SETTINGS` (a test
                of a broker set up otherwise).
        """
        self._own_dir = data_dir is None
        self._dir = data_dir
        self._port = port
        self._controller_port = 0
        self._start_timeout = start_timeout
        self._stop_timeout = stop_timeout
        self._heap = heap
        self._overrides = dict(overrides or {})
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        """The broker's process id while it runs."""
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    @property
    def log_path(self) -> Path | None:
        """The broker's log file."""
        return None if self._dir is None else self._dir / "broker.log"

    def start(self) -> Self:
        """Start the broker (formatting its storage the first time) and wait until it answers.

        Raises:
            BrokerError: Java or the jars are missing, or the broker did not
                answer within ``start_timeout`` (the message quotes its log).
        """
        java = shutil.which("java")
        if java is None:
            raise BrokerError(f"Apache Kafka needs Java, and there is no java here; {_INSTALL}.")
        libs = ensure_jars()
        if self._dir is None:
            self._dir = Path(tempfile.mkdtemp(prefix="mxprobe-kafka-"))
        if not self._port:
            self._port, self._controller_port = free_port(), free_port()
        elif not self._controller_port:
            self._controller_port = free_port()
        config = self._write_config()
        classpath = f"{libs}/*"
        if not (self._dir / "data" / "meta.properties").exists():
            self._format(java, classpath, config)
        log = self._dir / "broker.out"
        with log.open("ab") as out:
            command = [java, f"-Xmx{self._heap}", *self._jvm_options(), "-cp", classpath]
            self._proc = subprocess.Popen(
                [*command, "kafka.Kafka", str(config)],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=die_with_parent_hook(),
            )
        if not asyncio.run(self._wait_until_ready()):
            excerpt = self._log_tail()
            self.stop()
            raise BrokerError(
                f"Apache Kafka {kafka_version()} did not answer on {self.bootstrap} within "
                f"{self._start_timeout:g} s; its log ends: {excerpt}"
            )
        return self

    def kill(self) -> None:
        """SIGKILL the broker, as a crash would; its data stays for :meth:`start`."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            signal_group(proc, signal.SIGKILL)
            wait_sync(proc, self._stop_timeout)
        self._proc = None

    def stop(self) -> None:
        """Stop the broker (SIGTERM, then SIGKILL) and remove its own temporary directory."""
        if self._proc is not None:
            stop_sync(self._proc, self._stop_timeout)
            self._proc = None
        if self._own_dir and self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _write_config(self) -> Path:
        assert self._dir is not None
        data = self._dir / "data"
        data.mkdir(parents=True, exist_ok=True)
        settings = {
            **SINGLE_NODE_SETTINGS,
            # Where this node is: its ports and its directory.
            "controller.quorum.voters": f"1@{LOOPBACK}:{self._controller_port}",
            "listeners": f"PLAINTEXT://{LOOPBACK}:{self._port},"
            f"CONTROLLER://{LOOPBACK}:{self._controller_port}",
            "advertised.listeners": f"PLAINTEXT://{LOOPBACK}:{self._port}",
            "log.dirs": str(data),
            **self._overrides,
        }
        config = self._dir / "server.properties"
        config.write_text("".join(f"{k}={v}\n" for k, v in settings.items()), encoding="utf-8")
        log4j = self._dir / "log4j2.properties"
        log4j.write_text(_LOG4J.format(log=self._dir / "broker.log"), encoding="utf-8")
        return config

    def _jvm_options(self) -> list[str]:
        assert self._dir is not None
        return [f"-Dlog4j2.configurationFile={self._dir / 'log4j2.properties'}"]

    def _format(self, java: str, classpath: str, config: Path) -> None:
        command = [java, *self._jvm_options(), "-cp", classpath, "kafka.tools.StorageTool"]
        result = subprocess.run(
            [*command, "format", "-t", _cluster_id(), "-c", str(config)],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            tail = " ".join((result.stdout + result.stderr).split()[-40:])
            raise BrokerError(f"Formatting the Kafka storage in {self._dir} failed: {tail}")

    async def _wait_until_ready(self) -> bool:
        deadline = time.monotonic() + self._start_timeout
        while time.monotonic() < deadline:
            if self._proc is None or self._proc.poll() is not None:
                return False
            if await answers_metadata(self.bootstrap):
                return True
            await asyncio.sleep(POLL * 10)
        return False

    def _log_tail(self) -> str:
        for name in ("broker.log", "broker.out"):
            path = None if self._dir is None else self._dir / name
            if path is not None and path.exists() and path.stat().st_size:
                lines = path.read_text("utf-8", errors="replace").strip().splitlines()
                return " | ".join(lines[-8:])
        return "(no log)"


def _cluster_id() -> str:
    """A new KRaft cluster id: 16 random bytes in URL-safe base64, unpadded (Kafka's Uuid).

    Never one that starts with ``-``: ``kafka-storage format -t -x…`` takes it for
    an option and fails (one start in 64 did). Kafka's ``Uuid.randomUuid`` skips
    those too."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode("ascii").rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id
