"""The Faust application: topics, tables and the three agents of DESIGN "Pipeline".

Thin wiring only: every decision is the Verifier's (and so the core's).

- ``intake`` (input and bulk topics): decode, parse; bad syntax → verdict;
  else a DomainTask keyed by the ASCII domain — or, when the event is already
  keyed by its domain (``mxprobe submit`` does that), resolved right there,
  skipping the first re-key. Undecodable events → DLQ.
- ``resolve`` (by-domain topic, concurrency 1, writes the ``domains`` table):
  batches of tasks, each distinct domain resolved once through the
  Verifier's route cache backed by the table; no mail host → verdict; else a
  HostTask keyed by the mail host tried first.
- ``probe`` (by-host topic, concurrency 1, writes the ``hosts`` table of
  catch-all facts): batches grouped by mail-host set, probed through the
  Verifier; one verdict per request, keyed by request_id.

At least once: an event's offset is committed after its agent has moved past
it, so a crash re-processes it; a duplicate verdict carries the same
request_id. Values travel as raw bytes and are decoded here, so that a bad
event can go to the dead-letter topic byte for byte.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import struct
import time
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Iterator,
    MutableMapping,
    Sequence,
)
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar, cast

import faust
from faust.streams import Stream
from faust.types import EventT, StreamT

from streams.adapters.smtp_probe import Target
from streams.core.address import Address
from streams.core.catchall import CatchAll, CatchAllFact
from streams.core.mx import DnsProblem
from streams.core.verdict import Verdict
from streams.errors import CodecError
from streams.pipeline.codecs import decode, encode, register_codecs
from streams.pipeline.records import (
    AddressRequest,
    DeadLetter,
    DomainTask,
    HostTask,
    verdict_record,
)
from streams.pipeline.tansu import EmbeddedApp
from streams.pipeline.topology import DOMAIN_TABLE, HOST_TABLE, SENT_TABLE, Topology
from streams.settings import Settings
from streams.verifier import DomainRoute, Verifier

__all__ = ["Pipeline"]

log = logging.getLogger(__name__)

V = TypeVar("V")
T = TypeVar("T")
TaskT = TypeVar("TaskT", DomainTask, HostTask)

#: How long a sent verdict is kept to answer a re-processed event identically:
#: well beyond a crash, a session timeout (10 s) and a rebalance.
SENT_TTL = 120.0
_SENT_HEADER = struct.Struct(">Hd")  # partition, sent at (epoch seconds)


#: The partition of the event being handled, where table writes must go: a
#: table is co-partitioned with the stream that writes it, and the key of a
#: table entry (a domain) is not the key of that stream (a mail host).
_PARTITION: contextvars.ContextVar[int | None] = contextvars.ContextVar(
    "mxprobe_partition", default=None
)


class TableStore(MutableMapping[str, V], Generic[V]):
    """A Faust table seen as a ``MutableMapping[str, V]`` (values JSON-encoded).

    Writes go to the changelog partition of the event being handled (see
    ``_PARTITION``), so that the worker owning that partition of the stream
    also owns, and recovers, the facts it wrote.
    """

    def __init__(
        self,
        table: Any,
        dump: Callable[[V], dict[str, Any]],
        load: Callable[[dict[str, Any]], V],
    ) -> None:
        self._table = table
        self._dump = dump
        self._load = load

    def __getitem__(self, key: str) -> V:
        raw = self._table.get(key.encode())
        if raw is None:
            raise KeyError(key)
        return self._load(json.loads(raw))

    def __setitem__(self, key: str, value: V) -> None:
        self._write(key.encode(), json.dumps(self._dump(value)).encode())

    def __delitem__(self, key: str) -> None:
        if key.encode() not in self._table.data:
            raise KeyError(key)
        self._write(key.encode(), None)

    def _write(self, key: bytes, value: bytes | None) -> None:
        partition = _PARTITION.get()
        if partition is None:
            raise RuntimeError("A table write outside the handling of an event.")
        self._table.send_changelog(partition, key, value, value_serializer="raw")
        if value is None:
            self._table.data.pop(key, None)
        else:
            self._table.data[key] = value

    def __iter__(self) -> Iterator[str]:
        return (key.decode() for key in list(self._table.data.keys()))

    def __len__(self) -> int:
        return len(self._table.data)


def _route_dump(route: DomainRoute) -> dict[str, Any]:
    return {
        "targets": [[t.host, t.address] for t in route.targets],
        "problem": route.problem.value if route.problem else None,
        "expires_at": route.expires_at,
        "resolved_at": route.resolved_at,
    }


def _route_load(data: dict[str, Any]) -> DomainRoute:
    return DomainRoute(
        targets=tuple(Target(host, address) for host, address in data["targets"]),
        problem=DnsProblem(data["problem"]) if data["problem"] else None,
        expires_at=float(data["expires_at"]),
        resolved_at=float(data.get("resolved_at", 0.0)),
    )


def _fact_dump(fact: CatchAllFact) -> dict[str, Any]:
    return {"state": fact.state.value, "observed_at": fact.observed_at}


def _fact_load(data: dict[str, Any]) -> CatchAllFact:
    return CatchAllFact(CatchAll(data["state"]), float(data["observed_at"]))


def _domain_request(task: DomainTask) -> AddressRequest:
    return task.request


def _host_request(task: HostTask) -> AddressRequest:
    return task.domain_task.request


def _failure(exc: BaseException) -> str:
    """The DLQ error of an event whose handler failed unexpectedly."""
    return f"mxprobe failed on this event ({type(exc).__name__}: {exc})."


def _now() -> datetime:
    return datetime.now(tz=UTC)


class Pipeline:
    """The Faust app of one mxprobe deployment, with its agents bound to a verifier."""

    def __init__(
        self,
        settings: Settings,
        make_verifier: Callable[..., Verifier],
        *,
        broker: str,
        embedded: bool,
        web_port: int,
    ) -> None:
        """Build the app, its topics, tables and agents (nothing connects yet).

        Args:
            settings: all settings.
            make_verifier: builds the Verifier given ``routes=`` and ``catch_all=`` stores.
            broker: ``kafka://HOST:PORT``.
            embedded: the broker is the embedded Tansu (enables its workarounds).
            web_port: the port of Faust's web server, bound to ``settings.web_bind``.
        """
        self.settings = settings
        self.topology = Topology.from_settings(settings)
        register_codecs()  # "avro-verdict" etc. for apps that read our topics with Faust
        app_class = EmbeddedApp if embedded else faust.App
        self.app = app_class(
            settings.app_id,
            broker=broker,
            store="memory://",
            autodiscover=False,
            key_serializer="raw",
            value_serializer="raw",
            processing_guarantee="at_least_once",  # no transactions on Tansu (BROKERS.md #2)
            broker_session_timeout=10,  # 5 s rebalances on Tansu (BROKERS.md #3)
            # A stop or rebalance waits until the events in flight are processed:
            # Faust's take_events acks a batch when its generator closes, so
            # without this a clean stop could commit a batch that got no verdict.
            stream_wait_empty=True,
            topic_partitions=settings.partitions,
            topic_replication_factor=settings.replication_factor,
            topic_allow_declare=True,
            producer_max_batch_size=262_144,
            producer_linger=0.005,
            web_enabled=False,
            web_bind=settings.web_bind,  # never 0.0.0.0 unless asked (BROKERS.md)
            web_port=web_port,
            table_cleanup_interval=3600.0,
        )
        t = self.topology
        self.input = self.app.topic(t.input.name, t.bulk.name, **self._topic_args())
        self.by_domain = self.app.topic(t.by_domain.name, **self._topic_args())
        self.by_host = self.app.topic(t.by_host.name, **self._topic_args())
        self.verdicts = self.app.topic(t.verdicts.name, **self._topic_args())
        self.dlq = self.app.topic(t.dlq.name, **self._topic_args())
        table_args: dict[str, Any] = {
            "default": None,
            "partitions": settings.partitions,
            "key_type": bytes,
            "value_type": bytes,
            "use_partitioner": False,  # written per event partition: TableStore
        }
        self.domains = self.app.Table(DOMAIN_TABLE, **table_args)
        self.hosts = self.app.Table(HOST_TABLE, **table_args)
        # Written per event partition (not by key hash), like the others: _remember.
        self.sent = self.app.Table(SENT_TABLE, **table_args)
        self.app.timer(SENT_TTL / 4)(self._forget_old_verdicts)
        self.verifier = make_verifier(
            routes=TableStore(self.domains, _route_dump, _route_load),
            catch_all=TableStore(self.hosts, _fact_dump, _fact_load),
        )
        self.verdicts_sent = 0
        self.resent = 0  # verdicts sent again, byte for byte, for re-processed events
        self.dead_letters = 0
        self.app.agent(self.input, name=f"{settings.app_id}.intake")(self._intake)
        self.app.agent(self.by_domain, name=f"{settings.app_id}.resolve")(self._resolve)
        self.app.agent(self.by_host, name=f"{settings.app_id}.probe")(self._probe)

    def _topic_args(self) -> dict[str, Any]:
        return {
            "key_type": bytes,
            "value_type": bytes,
            "partitions": self.settings.partitions,
            "replicas": self.settings.replication_factor,
        }

    # --- agents ---------------------------------------------------------------

    async def _guarded(
        self,
        events: Sequence[EventT[bytes]],
        handle: Callable[[Sequence[EventT[bytes]]], Awaitable[None]],
    ) -> None:
        """Run ``handle``; if it fails unexpectedly, dead-letter its events and go on.

        A bad event must never stop the stream (DESIGN safety rules): whatever
        escapes a handler — a bug of ours, an adapter failing in a way it could
        not express as a value — sends the events to the DLQ with the error.
        """
        try:
            await handle(events)
        except Exception as exc:
            log.exception("pipeline.handler_failed")
            for event in events:
                await self._dead_letter(event, _failure(exc))

    async def _intake(self, stream: StreamT[bytes]) -> None:
        async for events in self._batches(stream):
            await self._guarded(events, self._intake_events)

    async def _intake_events(self, events: Sequence[EventT[bytes]]) -> None:
        local: list[tuple[EventT[bytes], DomainTask]] = []
        for event in events:
            task = await self._guarded_one(event, self._intake_one)
            if task is not None:
                local.append((event, task))
        await self._resolve_tasks(local)

    async def _guarded_one(
        self, event: EventT[bytes], handle: Callable[[EventT[bytes]], Awaitable[T]]
    ) -> T | None:
        """``handle(event)``; an unexpected failure dead-letters this event only."""
        try:
            return await handle(event)
        except CodecError as exc:
            await self._dead_letter(event, str(exc))
        except Exception as exc:
            log.exception("pipeline.handler_failed")
            await self._dead_letter(event, _failure(exc))
        return None

    async def _intake_one(self, event: EventT[bytes]) -> DomainTask | None:
        """Decode and parse one request; returns it when intake should resolve it here."""
        request = decode(event.message.value or b"", AddressRequest)
        if await self._resend(request):
            return None
        parsed = self.verifier.parse(request.email)
        if isinstance(parsed, Verdict):
            await self._emit(request, parsed, event)
            return None
        task = DomainTask(
            request=request,
            address=parsed,
            signals=self.verifier.signals(parsed),
            first_seen_at=_now(),
        )
        domain = parsed.ascii_domain.encode()
        if event.message.key == domain:
            # Already keyed by its domain (as `mxprobe submit` does): resolve
            # here and skip a re-key (DESIGN: each re-key costs 30-35 %).
            return task
        await self.by_domain.send(key=domain, value=encode(task))
        return None

    async def _resolve(self, stream: StreamT[bytes]) -> None:
        async for events in self._batches(stream):
            await self._guarded(events, self._resolve_events)

    async def _pending(
        self,
        events: Sequence[EventT[bytes]],
        kind: type[TaskT],
        request_of: Callable[[TaskT], AddressRequest],
    ) -> list[tuple[EventT[bytes], TaskT]]:
        """Decode ``events`` as ``kind``: undecodable ones go to the DLQ, and requests
        already answered get their verdict again; the rest are returned with their events."""
        pending: list[tuple[EventT[bytes], TaskT]] = []
        for event in events:
            try:
                task = decode(event.message.value or b"", kind)
            except CodecError as exc:
                await self._dead_letter(event, str(exc))
                continue
            if not await self._resend(request_of(task)):
                pending.append((event, task))
        return pending

    async def _resolve_events(self, events: Sequence[EventT[bytes]]) -> None:
        await self._resolve_tasks(await self._pending(events, DomainTask, _domain_request))

    async def _resolve_tasks(self, tasks: Sequence[tuple[EventT[bytes], DomainTask]]) -> None:
        """Resolve each distinct domain once; DNS verdicts out, the rest to the probe stage."""
        # The strictest max_age_s of a domain's requests decides (0: resolve anew).
        max_ages: dict[str, float] = {}
        for _, task in tasks:
            domain = task.address.ascii_domain
            age = float(task.request.max_age_s)
            max_ages[domain] = min(age, max_ages.get(domain, age))
        domains = sorted(max_ages)
        partitions = {task.address.ascii_domain: event.message.partition for event, task in tasks}

        async def resolve(domain: str) -> DomainRoute:
            _PARTITION.set(partitions[domain])  # this task's own context
            return await self.verifier.route(domain, max_age=max_ages[domain])

        answers = await asyncio.gather(*map(resolve, domains), return_exceptions=True)
        routes = dict(zip(domains, answers, strict=True))
        for event, task in tasks:
            route = routes[task.address.ascii_domain]
            if isinstance(route, BaseException):
                # Only the requests of the domain that failed go to the DLQ.
                await self._dead_letter(event, _failure(route))
                continue
            if route.problem is not None:
                verdict = self.verifier.dns_verdict(task.request.email, task.address, route.problem)
                await self._emit(task.request, verdict, event)
                continue
            host_task = HostTask.from_route(task, route)
            await self.by_host.send(key=host_task.mail_host.encode(), value=encode(host_task))

    def _batches(self, stream: StreamT[bytes]) -> AsyncIterator[Sequence[EventT[bytes]]]:
        settings = self.settings
        return cast(Stream[bytes], stream).take_events(
            settings.batch_size, within=settings.batch_within
        )

    async def _probe(self, stream: StreamT[bytes]) -> None:
        async for events in self._batches(stream):
            await self._guarded(events, self._probe_events)

    async def _probe_events(self, events: Sequence[EventT[bytes]]) -> None:
        groups: dict[frozenset[Target], list[tuple[EventT[bytes], HostTask]]] = {}
        for event, task in await self._pending(events, HostTask, _host_request):
            groups.setdefault(frozenset(task.targets), []).append((event, task))
        outcomes = await asyncio.gather(
            *(self._probe_group(tasks) for tasks in groups.values()), return_exceptions=True
        )
        for tasks, outcome in zip(groups.values(), outcomes, strict=True):
            if isinstance(outcome, BaseException):
                # Only the events of the group that failed go to the DLQ.
                for event, _ in tasks:
                    await self._dead_letter(event, _failure(outcome))

    async def _probe_group(self, tasks: list[tuple[EventT[bytes], HostTask]]) -> None:
        # One mail host, so one partition: catch-all facts are written there.
        _PARTITION.set(tasks[0][0].message.partition)
        by_email: dict[str, list[tuple[EventT[bytes], HostTask]]] = {}
        items: list[tuple[str, Address]] = []
        for event, task in tasks:
            email = task.domain_task.request.email
            if email not in by_email:
                items.append((email, task.domain_task.address))
            by_email.setdefault(email, []).append((event, task))
        verdicts: list[Verdict] = []
        max_age = min(float(task.domain_task.request.max_age_s) for _, task in tasks)
        await self.verifier.probe(tasks[0][1].targets, items, verdicts.append, max_age=max_age)
        for verdict in verdicts:
            for event, task in by_email[verdict.email]:
                await self._emit(task.domain_task.request, verdict, event)

    # --- outputs --------------------------------------------------------------

    async def _emit(self, request: AddressRequest, verdict: Verdict, event: EventT[bytes]) -> None:
        record = encode(verdict_record(verdict, request, verified_at=_now()))
        key = request.request_id.encode()
        await self.verdicts.send(key=key, value=record)
        self.verdicts_sent += 1
        self._remember(event.message.partition, key, record)

    def _remember(self, partition: int, key: bytes, record: bytes) -> None:
        """Keep the verdict sent for ``key`` in the partition of the event it answers.

        Every topic has the same partition count, so the worker that owns this
        partition of the source topic owns it in the ``sent`` table too: if the
        event is processed again (a crash before its offset was committed), the
        same worker finds the verdict and sends the same bytes again.
        """
        value = _SENT_HEADER.pack(partition, time.time()) + record
        self.sent.send_changelog(partition, key, value)
        self.sent.data[key] = value

    async def _resend(self, request: AddressRequest) -> bool:
        """Send again the verdict already sent for ``request``, if there is one."""
        value = self.sent.data.get(request.request_id.encode())
        if value is None:
            return False
        await self.verdicts.send(key=request.request_id.encode(), value=value[_SENT_HEADER.size :])
        self.resent += 1
        return True

    async def _forget_old_verdicts(self) -> None:
        """Drop ``sent`` entries older than SENT_TTL (a tombstone in the changelog too)."""
        cutoff = time.time() - SENT_TTL
        for key, value in list(self.sent.data.items()):
            partition, sent_at = _SENT_HEADER.unpack_from(value)
            if sent_at < cutoff:
                self.sent.send_changelog(partition, key, None)
                del self.sent.data[key]

    async def _dead_letter(self, event: EventT[bytes], error: str) -> None:
        message = event.message
        letter = DeadLetter(
            key=message.key if isinstance(message.key, bytes) else None,
            value=message.value if isinstance(message.value, bytes) else b"",
            topic=message.topic,
            partition=message.partition,
            offset=message.offset,
            error=error,
            failed_at=_now(),
        )
        log.warning(
            "pipeline.dead_letter",
            extra={
                "topic": message.topic,
                "partition": message.partition,
                "offset": message.offset,
                "error": error,
            },
        )
        await self.dlq.send(key=message.key, value=encode(letter))
        self.dead_letters += 1


def free_port() -> int:
    """A free TCP port on loopback (for Faust's web server)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
