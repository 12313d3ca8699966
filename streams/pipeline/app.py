"""The Faust application: topics, tables and the three agents of DESIGN "Pipeline".

Thin wiring only: every decision is the Verifier's (and so the core's).

- ``intake`` (input and bulk topics): decode, parse; bad syntax → verdict;
  else a DomainTask keyed by the ASCII domain (several of a batch in one
  DomainTasks event) — or, when the event is already
  keyed by its domain (``mxprobe submit`` does that), resolved right there,
  skipping the first re-key. Undecodable events → DLQ.
- ``resolve`` (by-domain topic, concurrency 1, writes the ``domains`` table):
  batches of tasks, each distinct domain resolved once through the
  Verifier's route cache backed by the table; no mail host → verdict; else a
  HostTask keyed by the mail host tried first (several in one HostTasks event).
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
import dataclasses
import logging
import time
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
    Sequence,
)
from datetime import UTC, datetime
from typing import Any, TypeVar, cast

import faust
from faust.exceptions import ProducerSendError
from faust.streams import Stream
from faust.types import EventT, StreamT, TopicT

from streams.core.address import Address
from streams.core.mx import DnsProblem
from streams.core.retry import Cause, Retry, cause_of
from streams.core.route import DomainRoute, Target
from streams.core.verdict import Verdict
from streams.errors import CodecError
from streams.pipeline.batching import bounded_runs
from streams.pipeline.codecs import decode, decode_any, encode, register_codecs
from streams.pipeline.records import (
    AddressRequest,
    DeadLetter,
    DomainTask,
    DomainTasks,
    HostTask,
    HostTasks,
    Record,
    RetryEvent,
    VerdictRecord,
    datetime_from_seconds,
    email_field,
    seconds_from_datetime,
    verdict_record,
)
from streams.pipeline.sent import SENT_TTL, SentTable
from streams.pipeline.tables import (
    EVENT_PARTITION,
    catch_all_store,
    host_state_store,
    route_store,
)
from streams.pipeline.tansu import EmbeddedApp
from streams.pipeline.topology import DOMAIN_TABLE, HOST_TABLE, SENT_TABLE, Topology
from streams.settings import Settings
from streams.verifier import Verifier

__all__ = ["Pipeline"]

log = logging.getLogger(__name__)

V = TypeVar("V")
T = TypeVar("T")
TaskT = TypeVar("TaskT", DomainTask, HostTask)


#: How long intake keeps bulk requests back after it last saw a live one, and
#: the most a bulk batch waits for live traffic (so bulk is never starved and a
#: rebalance never waits long for a held batch).
LIVE_GRACE = 0.5
BULK_MAX_WAIT = 5.0

#: Checks of a held retry event for a rebalance or a stop, at least this often.
RETRY_CHECK_INTERVAL = 1.0

#: The most tasks in one DomainTasks or HostTasks event, and the most bytes
#: (estimated by _size_hint; a quarter of the producer's 1,000,000-byte limit,
#: so that text of up to 4 UTF-8 bytes a character still fits). A task over
#: that goes alone; if it is too big to send, only its event is dead-lettered.
TASKS_PER_EVENT = 500
TASK_BYTES_PER_EVENT = 250_000

#: The longest request_id accepted (characters); a longer one goes to the DLQ.
REQUEST_ID_LIMIT = 1024


def _domain_task_of(task: DomainTask | RetryEvent) -> DomainTask:
    return task.host_task.domain_task if isinstance(task, RetryEvent) else task


def _host_task_of(task: HostTask | RetryEvent) -> HostTask:
    return task.host_task if isinstance(task, RetryEvent) else task


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
            make_verifier: builds the Verifier given ``routes=``, ``catch_all=``
                and ``hosts=`` stores.
            broker: ``kafka://HOST:PORT``.
            embedded: the broker is the embedded Tansu (enables its workarounds).
            web_port: the port of Faust's web server, bound to ``settings.web_bind``.
        """
        self.settings = settings
        self.topology = Topology.from_settings(settings)
        self.retry_policy = settings.retry_policy()
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
            # The retry agents hold events for long, so they give them back at
            # once on a rebalance or a stop (see _hold).
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
        self.input = self.app.topic(t.input.name, **self._topic_args())
        self.bulk = self.app.topic(t.bulk.name, **self._topic_args())
        self.by_domain = self.app.topic(t.by_domain.name, **self._topic_args())
        self.by_host = self.app.topic(t.by_host.name, **self._topic_args())
        self.verdicts = self.app.topic(t.verdicts.name, **self._topic_args())
        self.dlq = self.app.topic(t.dlq.name, **self._topic_args())
        self.retry_topics = [self.app.topic(spec.name, **self._topic_args()) for spec in t.retry]
        table_args: dict[str, Any] = {
            "default": None,
            "partitions": settings.partitions,
            "key_type": bytes,
            "value_type": bytes,
            "use_partitioner": False,  # written per event partition: TableStore
        }
        self.domains = self.app.Table(DOMAIN_TABLE, **table_args)
        self.hosts = self.app.Table(HOST_TABLE, **table_args)
        # Written per event partition (not by key hash), like the others: _emit.
        self.sent = SentTable(
            self.app, name=SENT_TABLE, beacon=self.app.tables.beacon, **table_args
        )
        self.app.tables.add(self.sent)
        self.app.timer(SENT_TTL / 4)(self._forget_old_verdicts)
        self.host_states = host_state_store(self.hosts)
        self.verifier = make_verifier(
            routes=route_store(self.domains),
            catch_all=catch_all_store(self.hosts),
            hosts=self.host_states,
        )
        self.verdicts_sent = 0
        self.resent = 0  # verdicts sent again, byte for byte, for re-processed events
        self.dead_letters = 0
        self.retries_scheduled = 0  # events sent to a retry tier
        self.retries_released = 0  # held events given back to their tier on a rebalance/stop
        self._live_until = 0.0  # intake holds bulk back until then (monotonic)
        app_id = settings.app_id
        self.app.agent(self.input, name=f"{app_id}.intake")(self._intake)
        self.app.agent(self.bulk, name=f"{app_id}.intake-bulk")(self._intake_bulk)
        self.app.agent(self.by_domain, name=f"{app_id}.resolve")(self._resolve)
        self.app.agent(self.by_host, name=f"{app_id}.probe")(self._probe)
        for tier, topic in enumerate(self.retry_topics):
            self.app.agent(topic, name=f"{app_id}.retry-{tier}")(self._retry_agent(tier))

    def _topic_args(self) -> dict[str, Any]:
        return {
            "key_type": bytes,
            "value_type": bytes,
            "partitions": self.settings.partitions,
            "replicas": self.settings.replication_factor,
        }

    async def aclose(self) -> None:
        """Close what the verifier keeps open (idle SMTP sessions); after the app stopped."""
        await self.verifier.aclose()

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
                try:
                    await self._dead_letter(event, _failure(exc))
                except Exception:  # the DLQ itself failed: log, never stop the stream
                    log.exception("pipeline.dead_letter_failed")
        finally:
            self.sent.save()  # the verdicts sent, before these events' offsets are committed

    async def _intake(self, stream: StreamT[bytes]) -> None:
        async for events in self._batches(stream):
            self._live_until = time.monotonic() + LIVE_GRACE
            await self._guarded(events, self._intake_events)

    async def _intake_bulk(self, stream: StreamT[bytes]) -> None:
        """Intake of the bulk topic: each batch waits while live requests flow
        (at most BULK_MAX_WAIT), so that live traffic is served first."""
        async for events in self._batches(stream):
            deadline = time.monotonic() + BULK_MAX_WAIT
            while time.monotonic() < min(self._live_until, deadline) and not self._releasing():
                await asyncio.sleep(0.05)
            await self._guarded(events, self._intake_events)

    async def _intake_events(self, events: Sequence[EventT[bytes]]) -> None:
        local: list[tuple[EventT[bytes], DomainTask | RetryEvent]] = []
        outgoing: dict[bytes, list[tuple[EventT[bytes], DomainTask]]] = {}  # a domain: an event
        for event in events:
            task = await self._guarded_one(event, self._intake_one)
            if task is None:
                continue
            domain = task.address.ascii_domain.encode()
            if event.message.key == domain:
                # Already keyed by its domain (as `mxprobe submit` does): resolve
                # here and skip a re-key (DESIGN: each re-key costs 30-35 %).
                local.append((event, task))
            else:
                outgoing.setdefault(domain, []).append((event, task))
        self.sent.save()  # the verdicts given here (bad syntax), before resolving takes time
        for domain, pairs in outgoing.items():
            await self._send_tasks(self.by_domain, domain, pairs)
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
        """Decode and parse one request; its task, unless it got its answer here."""
        request = decode(event.message.value or b"", AddressRequest)
        if not request.request_id:
            await self._dead_letter(
                event,
                "This AddressRequest has an empty request_id, so its verdict could not be told "
                "from others; give every request an id of its own (a UUID).",
            )
            return None
        if len(request.request_id) > REQUEST_ID_LIMIT:
            await self._dead_letter(
                event,
                f"This AddressRequest's request_id has {len(request.request_id)} characters, "
                f"over the {REQUEST_ID_LIMIT} mxprobe accepts (it keys the verdict and is kept "
                "to answer duplicates); give every request a short id of its own (a UUID).",
            )
            return None
        if await self._resend(request):
            return None
        parsed = self.verifier.parse(request.email)
        if isinstance(parsed, Verdict):
            await self._emit(request, parsed, event)
            return None
        return DomainTask(
            request=request,
            address=parsed,
            signals=self.verifier.signals(parsed),
            first_seen_at=_now(),
            bulk=event.message.topic == self.topology.bulk.name,
        )

    async def _resolve(self, stream: StreamT[bytes]) -> None:
        async for events in self._batches(stream):
            await self._guarded(events, self._resolve_events)

    async def _pending(
        self,
        events: Sequence[EventT[bytes]],
        kind: type[TaskT],
        request_of: Callable[[TaskT | RetryEvent], AddressRequest],
    ) -> list[tuple[EventT[bytes], TaskT | RetryEvent]]:
        """Decode ``events`` as ``kind`` (or DomainTasks / HostTasks, several of
        them in one event) or as a RetryEvent back from a tier: undecodable ones go to the
        DLQ, and requests already answered get their verdict again; the rest are
        returned, each task with its event."""
        kinds: tuple[type[Record], ...] = (kind, DomainTasks if kind is DomainTask else HostTasks)
        kinds += (RetryEvent,)
        pending: list[tuple[EventT[bytes], TaskT | RetryEvent]] = []
        for event in events:
            try:
                record = decode_any(event.message.value or b"", kinds)
            except CodecError as exc:
                await self._dead_letter(event, str(exc))
                continue
            tasks = record.tasks if isinstance(record, DomainTasks | HostTasks) else (record,)
            for task in cast("tuple[TaskT | RetryEvent, ...]", tasks):
                if not await self._resend(request_of(task)):
                    pending.append((event, task))
        return pending

    async def _resolve_events(self, events: Sequence[EventT[bytes]]) -> None:
        def request_of(task: DomainTask | RetryEvent) -> AddressRequest:
            return _domain_task_of(task).request

        await self._resolve_tasks(await self._pending(events, DomainTask, request_of))

    async def _resolve_tasks(
        self, tasks: Sequence[tuple[EventT[bytes], DomainTask | RetryEvent]]
    ) -> None:
        """Resolve each distinct domain once; DNS verdicts out, the rest to the probe stage.

        A temporary DNS failure (SERVFAIL, timeout) goes to a retry tier, and
        comes back here resolved anew.
        """
        # The strictest max_age_s of a domain's requests decides (0: resolve anew).
        max_ages: dict[str, float] = {}
        for _, task in tasks:
            domain_task = _domain_task_of(task)
            domain = domain_task.address.ascii_domain
            age = 0.0 if isinstance(task, RetryEvent) else float(domain_task.request.max_age_s)
            max_ages[domain] = min(age, max_ages.get(domain, age))
        domains = sorted(max_ages)
        partitions = {
            _domain_task_of(task).address.ascii_domain: event.message.partition
            for event, task in tasks
        }

        async def resolve(domain: str) -> DomainRoute:
            EVENT_PARTITION.set(partitions[domain])  # this task's own context
            return await self.verifier.route(domain, max_age=max_ages[domain])

        answers = await asyncio.gather(*map(resolve, domains), return_exceptions=True)
        routes = dict(zip(domains, answers, strict=True))
        # One event per mail host (and bulk flag) to the probe stage, not one per address.
        outgoing: dict[tuple[bool, tuple[Target, ...]], list[tuple[EventT[bytes], HostTask]]] = {}
        lettered: set[int] = set()
        for event, task in tasks:
            domain_task = _domain_task_of(task)
            retry = task if isinstance(task, RetryEvent) else None
            route = routes[domain_task.address.ascii_domain]
            if isinstance(route, BaseException):
                # Only the events of the domain that failed go to the DLQ, each once
                # (a DomainTasks event holds several tasks of that domain).
                if id(event) not in lettered:
                    lettered.add(id(event))
                    await self._dead_letter(event, _failure(route))
                continue
            if route.problem is not None:
                request, address = domain_task.request, domain_task.address
                verdict = self.verifier.dns_verdict(request.email, address, route.problem)
                temporary = route.problem in (DnsProblem.SERVFAIL, DnsProblem.TIMEOUT)
                unrouted = HostTask(domain_task=domain_task, targets=(), route_expires_at=_now())
                if temporary and await self._retry(unrouted, retry, verdict, Cause.DNS):
                    continue
                await self._emit(request, verdict, event)
                continue
            host_task = HostTask.from_route(domain_task, route)
            if retry is None:
                key = (domain_task.bulk, host_task.targets)
                outgoing.setdefault(key, []).append((event, host_task))
            else:
                value = encode(dataclasses.replace(retry, host_task=host_task))
                await self.by_host.send(key=host_task.mail_host.encode(), value=value)
        for group in outgoing.values():
            await self._send_tasks(self.by_host, group[0][1].mail_host.encode(), group)

    async def _send_tasks(
        self,
        topic: TopicT,
        key: bytes,
        pairs: Sequence[tuple[EventT[bytes], DomainTask]]
        | Sequence[tuple[EventT[bytes], HostTask]],
    ) -> None:
        """Send tasks of one domain (one mail host) to the next stage, in DomainTasks
        (HostTasks) events of at most TASKS_PER_EVENT tasks and TASK_BYTES_PER_EVENT
        bytes; a single task goes as itself. A send that fails dead-letters the events
        of its tasks only."""
        for chunk in _chunks(pairs):
            tasks = tuple(task for _, task in chunk)
            record: Record
            if len(tasks) == 1:
                record = tasks[0]
            elif isinstance(tasks[0], DomainTask):
                record = DomainTasks(cast("tuple[DomainTask, ...]", tasks))
            else:
                record = HostTasks(cast("tuple[HostTask, ...]", tasks))
            try:
                await topic.send(key=key, value=encode(record))
            except Exception as exc:
                log.exception("pipeline.send_failed", extra={"topic": topic.get_topic_name()})
                for event in _distinct_events(chunk):
                    await self._dead_letter(event, _failure(exc))

    def _batches(self, stream: StreamT[bytes]) -> AsyncIterator[Sequence[EventT[bytes]]]:
        settings = self.settings
        return cast(Stream[bytes], stream).take_events(
            settings.batch_size, within=settings.batch_within
        )

    async def _probe(self, stream: StreamT[bytes]) -> None:
        async for events in self._batches(stream):
            await self._guarded(events, self._probe_events)

    async def _probe_events(self, events: Sequence[EventT[bytes]]) -> None:
        def request_of(task: HostTask | RetryEvent) -> AddressRequest:
            return _host_task_of(task).domain_task.request

        Group = list[tuple[EventT[bytes], HostTask | RetryEvent]]
        groups: dict[tuple[bool, frozenset[Target]], Group] = {}
        for event, task in await self._pending(events, HostTask, request_of):
            host_task = _host_task_of(task)
            key = (host_task.domain_task.bulk, frozenset(host_task.targets))
            groups.setdefault(key, []).append((event, task))
        # Live groups first: each takes its host's budget as it starts.
        ordered = [groups[key] for key in sorted(groups, key=lambda key: key[0])]
        outcomes = await asyncio.gather(
            *(self._probe_group(tasks) for tasks in ordered), return_exceptions=True
        )
        for tasks, outcome in zip(ordered, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                # Only the events of the group that failed go to the DLQ, each once
                # (a HostTasks event holds several tasks; their group is the same).
                for event in _distinct_events(tasks):
                    await self._dead_letter(event, _failure(outcome))

    async def _probe_group(self, tasks: list[tuple[EventT[bytes], HostTask | RetryEvent]]) -> None:
        # One mail host, so one partition: its state and catch-all facts are written there.
        EVENT_PARTITION.set(tasks[0][0].message.partition)
        by_email: dict[str, list[tuple[EventT[bytes], HostTask | RetryEvent]]] = {}
        items: list[tuple[str, Address]] = []
        for event, task in tasks:
            domain_task = _host_task_of(task).domain_task
            email = domain_task.request.email
            if email not in by_email:
                items.append((email, domain_task.address))
            by_email.setdefault(email, []).append((event, task))
        verdicts: list[Verdict] = []
        held: dict[str, float] = {}
        first = _host_task_of(tasks[0][1])
        max_age = min(float(_host_task_of(t).domain_task.request.max_age_s) for _, t in tasks)
        await self.verifier.probe(
            first.targets,
            items,
            verdicts.append,
            max_age=max_age,
            defer=held.__setitem__,
            bulk=first.domain_task.bulk,
        )
        for verdict in verdicts:
            for event, task in by_email[verdict.email]:
                await self._conclude(task, verdict, event)
        for email, wait in held.items():
            for event, task in by_email[email]:
                await self._defer(task, wait, event)
        self.sent.save()  # now, not when the slowest group of the batch is done

    # --- retries --------------------------------------------------------------

    async def _conclude(
        self, task: HostTask | RetryEvent, verdict: Verdict, event: EventT[bytes]
    ) -> None:
        """A probe's verdict: final, or (greylisted, throttled…) to a retry tier."""
        retry = task if isinstance(task, RetryEvent) else None
        if retry is not None:
            # Evidence counts the SMTP sessions of every attempt.
            attempts = verdict.evidence.attempts + retry.last_verdict.evidence.attempts
            verdict = dataclasses.replace(
                verdict, evidence=dataclasses.replace(verdict.evidence, attempts=attempts)
            )
        cause = cause_of(verdict.reason)
        host_task = _host_task_of(task)
        if cause is not None and await self._retry(host_task, retry, verdict, cause):
            return
        await self._emit(host_task.domain_task.request, verdict, event)

    async def _defer(self, task: HostTask | RetryEvent, wait: float, event: EventT[bytes]) -> None:
        """An address the host's budget held back: to a retry tier, due when the
        budget allows; past its limits, the last verdict it had (or unknown/throttled)."""
        retry = task if isinstance(task, RetryEvent) else None
        host_task = _host_task_of(task)
        domain_task = host_task.domain_task
        done = retry.retries.get(Cause.BUDGET.value, 0) if retry is not None else 0
        now = time.time()
        plan = self.retry_policy.defer(wait, done, self._first_seen(host_task), now)
        if retry is not None:
            last = retry.last_verdict
        else:
            held = self.verifier.held_verdict(
                domain_task.request.email, domain_task.address, host_task.mail_host
            )
            last = verdict_record(held, domain_task.request, verified_at=_now())
        if plan is None:
            await self._emit(domain_task.request, last.to_verdict(), event)
            return
        await self._send_retry(host_task, retry, last, Cause.BUDGET, plan)

    async def _retry(
        self, host_task: HostTask, retry: RetryEvent | None, verdict: Verdict, cause: Cause
    ) -> bool:
        """Schedule another attempt after ``verdict`` if ``cause`` has attempts left."""
        done = retry.retries.get(cause.value, 0) if retry is not None else 0
        plan = self.retry_policy.after(cause, done, self._first_seen(host_task), time.time())
        if plan is None:
            return False
        domain_task = host_task.domain_task
        next_task = dataclasses.replace(
            host_task,
            domain_task=dataclasses.replace(domain_task, attempt=domain_task.attempt + 1),
        )
        last = verdict_record(verdict, domain_task.request, verified_at=_now())
        await self._send_retry(next_task, retry, last, cause, plan)
        return True

    async def _send_retry(
        self,
        host_task: HostTask,
        retry: RetryEvent | None,
        last: VerdictRecord,
        cause: Cause,
        plan: Retry,
    ) -> None:
        retries = dict(retry.retries) if retry is not None else {}
        retries[cause.value] = retries.get(cause.value, 0) + 1
        event = RetryEvent(
            host_task=host_task,
            due_at=datetime_from_seconds(plan.due_at),
            last_verdict=last,
            cause=cause.value,
            tier=plan.tier,
            retries=retries,
        )
        await self.retry_topics[plan.tier].send(key=_retry_key(host_task), value=encode(event))
        self.retries_scheduled += 1

    @staticmethod
    def _first_seen(host_task: HostTask) -> float:
        return seconds_from_datetime(host_task.domain_task.first_seen_at)

    def _retry_agent(self, tier: int) -> Callable[[StreamT[bytes]], Awaitable[None]]:
        async def hold(events: Sequence[EventT[bytes]]) -> None:
            await self._hold(events[0], tier)

        async def agent(stream: StreamT[bytes]) -> None:
            async for event in stream.events():
                await self._guarded([event], hold)

        return agent

    async def _hold(self, event: EventT[bytes], tier: int) -> None:
        """Hold one retry event until it is due, then send it back to its stage.

        The tier's topic is in due order (one fixed delay), so only its head
        waits. The wait is in steps of at most RETRY_CHECK_INTERVAL: on a
        rebalance or a stop the event is given back — sent again to the same
        tier, unchanged, before its offset is committed — so that neither
        waits for it (BROKERS.md: sleeping events stall a rebalance). No event
        is lost; one given back may come due up to one tier delay late.
        """
        message = event.message
        try:
            retry = decode(message.value or b"", RetryEvent)
        except CodecError as exc:
            await self._dead_letter(event, str(exc))
            return
        due = seconds_from_datetime(retry.due_at)
        while (remaining := due - time.time()) > 0:
            if self._releasing() or message.tp not in self.app.consumer.assignment():
                await self.retry_topics[tier].send(key=message.key, value=message.value)
                self.retries_released += 1
                return
            await asyncio.sleep(min(RETRY_CHECK_INTERVAL, remaining))
        host_task = retry.host_task
        if host_task.targets:
            await self.by_host.send(key=host_task.mail_host.encode(), value=message.value)
        else:  # a temporary DNS failure: resolve again
            domain = host_task.domain_task.address.ascii_domain.encode()
            await self.by_domain.send(key=domain, value=message.value)

    def _releasing(self) -> bool:
        """A rebalance or a stop is under way: events held must be let go."""
        app = self.app
        return bool(app.rebalancing or app.should_stop or not app.flow_control.is_active())

    # --- outputs --------------------------------------------------------------

    async def _emit(self, request: AddressRequest, verdict: Verdict, event: EventT[bytes]) -> None:
        record = encode(verdict_record(verdict, request, verified_at=_now()))
        key = request.request_id.encode()
        await self.verdicts.send(key=key, value=record)
        self.verdicts_sent += 1
        # Every topic has the same partition count, so the worker that owns this
        # partition of the source topic owns it in the ``sent`` table too.
        self.sent.remember(event.message.partition, key, record)

    async def _resend(self, request: AddressRequest) -> bool:
        """Send again the verdict already sent for ``request``, if there is one.

        Only for the same request: an id reused for another address is a new
        request (its verdict then replaces the one kept).
        """
        record = self.sent.verdict(request.request_id.encode())
        if record is None:
            return False
        if decode(record, VerdictRecord).email != email_field(request.email):
            return False
        await self.verdicts.send(key=request.request_id.encode(), value=record)
        self.resent += 1
        return True

    async def _forget_old_verdicts(self) -> None:
        """Drop ``sent`` entries older than SENT_TTL (a tombstone in the changelog too)."""
        self.sent.forget(time.time() - SENT_TTL)

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
        try:
            await self.dlq.send(key=message.key, value=encode(letter))
        except ProducerSendError as exc:  # over max_request_size: keep where it is, not what
            size = len(letter.value)
            error = (
                f"{error} The event's {size} bytes are left out of this letter ({exc}); "
                f"read them at {message.topic} partition {message.partition} "
                f"offset {message.offset}."
            )
            short = dataclasses.replace(letter, value=b"", error=error)
            await self.dlq.send(key=message.key, value=encode(short))
        self.dead_letters += 1


def _distinct_events(pairs: Iterable[tuple[EventT[bytes], Any]]) -> list[EventT[bytes]]:
    """The events of ``pairs``, each once: a DomainTasks or HostTasks event holds
    several tasks, and its dead letter must be written once."""
    return list({id(event): event for event, _ in pairs}.values())


def _size_hint(task: DomainTask | HostTask) -> int:
    """About how many bytes ``task`` takes in Avro (a bound for ASCII text)."""
    domain_task = task if isinstance(task, DomainTask) else task.domain_task
    request = domain_task.request
    size = 256 + 2 * len(request.email) + len(request.request_id) + len(request.source)
    size += sum(len(name) + len(value) + 4 for name, value in request.attributes.items())
    if isinstance(task, HostTask):
        size += sum(len(target.host) + len(target.address) + 4 for target in task.targets)
    return size


TaskPair = TypeVar("TaskPair", bound=tuple[Any, DomainTask | HostTask])


def _chunks(pairs: Sequence[TaskPair]) -> Iterator[list[TaskPair]]:
    """``pairs`` in runs of at most TASKS_PER_EVENT and TASK_BYTES_PER_EVENT (by _size_hint)."""
    return bounded_runs(
        pairs,
        lambda pair: _size_hint(pair[1]),
        max_bytes=TASK_BYTES_PER_EVENT,
        max_items=TASKS_PER_EVENT,
    )


def _retry_key(host_task: HostTask) -> bytes:
    """The key of a retry event: its mail host (its domain for a DNS retry)."""
    if host_task.targets:
        return host_task.mail_host.encode()
    return host_task.domain_task.address.ascii_domain.encode()
