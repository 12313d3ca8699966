"""Where the stages' results go: verdicts, retry tiers, the next stage, dead letters.

Every stage shares one :class:`Outputs`. It sends a verdict and keeps it in
the ``sent`` table (so that an event processed again gets the very same
bytes), sends a request to a retry tier, sends tasks to the next stage in
bounded events, and sends an event it cannot process to the dead-letter
topic, byte for byte, with a sentence saying why. It counts what it sent,
for reports and tests.

The destinations are anything with Faust's ``send(key=, value=)`` (a
:class:`Sink`), and the ``sent`` table anything with the four methods of a
:class:`SentStore`, so that a stage can be driven without a broker.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar, cast

from faust.exceptions import ProducerSendError
from faust.types import EventT

from streams.core.retry import Again
from streams.core.verdict import Verdict
from streams.errors import CodecError
from streams.pipeline.batching import bounded_runs
from streams.pipeline.codecs import decode, decode_any, encode
from streams.pipeline.exactly_once import plain
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
    verdict_record,
)

__all__ = [
    "REQUEST_ID_LIMIT",
    "TASKS_PER_EVENT",
    "TASK_BYTES_PER_EVENT",
    "Outputs",
    "SentStore",
    "Sink",
    "distinct_events",
    "failure",
    "now",
    "task_chunks",
]

log = logging.getLogger(__name__)

T = TypeVar("T")
TaskT = TypeVar("TaskT", DomainTask, HostTask)

#: The most tasks in one DomainTasks or HostTasks event, and the most bytes
#: (estimated by _size_hint; a quarter of the producer's 1,000,000-byte limit,
#: so that text of up to 4 UTF-8 bytes a character still fits). A task over
#: that goes alone; if it is too big to send, only its event is dead-lettered.
TASKS_PER_EVENT = 500
TASK_BYTES_PER_EVENT = 250_000

#: The longest request_id accepted (characters); a longer one goes to the DLQ.
REQUEST_ID_LIMIT = 1024


class Sink(Protocol):
    """A topic to send to (Faust's ``TopicT.send``)."""

    def send(self, *, key: bytes | None, value: bytes | None) -> Awaitable[Any]: ...

    def get_topic_name(self) -> str: ...


class SentStore(Protocol):
    """The ``sent`` table (:class:`streams.pipeline.sent.SentTable`)."""

    def remember(self, partition: int, key: bytes, record: bytes) -> None: ...

    def verdict(self, key: bytes) -> bytes | None: ...

    def save(self) -> None: ...

    async def save_now(self, partition: int) -> None: ...

    def forget(self, cutoff: float) -> None: ...


def now() -> datetime:
    """The pipeline's clock, as an aware UTC datetime."""
    return datetime.now(tz=UTC)


def failure(exc: BaseException) -> str:
    """The DLQ error of an event whose handler failed unexpectedly."""
    return f"mxprobe failed on this event ({type(exc).__name__}: {exc})."


#: How the sends made for one event are grouped: :func:`~streams.pipeline.exactly_once.plain`
#: (at least once) or ``committed_together`` (exactly once, in the event's transaction).
Together = Callable[[EventT[bytes]], AbstractAsyncContextManager[None]]


class Outputs:
    """The verdict, retry and dead-letter topics, and the ``sent`` table, with counters.

    Every send is made for an event (the one it answers). In exactly-once, the
    sends for an event go in its partition's transaction, a verdict and its
    ``sent`` entry in one piece, and a request already answered is not
    answered again: a request id gets one verdict on the topic, even when
    resubmitted within the ``sent`` table's window (read it from the topic).
    At least once, a request answered already gets the same bytes again.
    """

    def __init__(
        self,
        *,
        verdicts: Sink,
        dlq: Sink,
        retry_tiers: Sequence[Sink],
        sent: SentStore,
        together: Together = plain,
        exactly_once: bool = False,
    ) -> None:
        self.verdicts = verdicts
        self.dlq = dlq
        self.retry_tiers = retry_tiers
        self.sent = sent
        self.together = together
        self.exactly_once = exactly_once
        self.verdicts_sent = 0
        self.resent = 0  # verdicts sent again, byte for byte, for re-processed events
        self.answered_already = 0  # exactly once: requests not answered again
        self.dead_letters = 0
        self.retries_scheduled = 0  # events sent to a retry tier
        self.retries_released = 0  # held events given back to their tier on a rebalance/stop

    # --- verdicts ---------------------------------------------------------------

    async def emit(self, request: AddressRequest, verdict: Verdict, event: EventT[bytes]) -> None:
        """Send ``verdict``, the answer to ``request``, and keep it for re-processed events."""
        record = encode(verdict_record(verdict, request, verified_at=now()))
        key = request.request_id.encode()
        # Every topic has the same partition count, so the worker that owns this
        # partition of the source topic owns it in the ``sent`` table too.
        partition = event.message.partition
        async with self.together(event):
            await self.verdicts.send(key=key, value=record)
            self.sent.remember(partition, key, record)
            if self.exactly_once:
                await self.sent.save_now(partition)
        self.verdicts_sent += 1

    async def resend(self, request: AddressRequest, event: EventT[bytes]) -> bool:
        """Answer ``request`` with the verdict already sent for it, if there is one:
        the same bytes again (at least once), or nothing more (exactly once).

        Only for the same request: an id reused for another address is a new
        request (its verdict then replaces the one kept).
        """
        record = self.sent.verdict(request.request_id.encode())
        if record is None:
            return False
        if decode(record, VerdictRecord).email != email_field(request.email):
            return False
        if self.exactly_once:
            self.answered_already += 1
            return True
        async with self.together(event):
            await self.verdicts.send(key=request.request_id.encode(), value=record)
        self.resent += 1
        return True

    # --- retries ------------------------------------------------------------------

    async def retry(
        self,
        host_task: HostTask,
        again: Again,
        event: EventT[bytes],
        *,
        last: VerdictRecord | None = None,
    ) -> None:
        """Send ``host_task`` to the retry tier ``again`` names, due when it says.

        Args:
            host_task: the task to try again (targets empty: resolve it anew).
            again: the plan (:func:`streams.core.retry.plan`).
            event: the event being answered.
            last: the record the request stands on meanwhile (default: made
                now from ``again.verdict``).
        """
        if again.new_round:
            domain_task = host_task.domain_task
            domain_task = dataclasses.replace(domain_task, attempt=domain_task.attempt + 1)
            host_task = dataclasses.replace(host_task, domain_task=domain_task)
        request = host_task.domain_task.request
        retry = RetryEvent(
            host_task=host_task,
            due_at=datetime_from_seconds(again.due_at),
            last_verdict=last or verdict_record(again.verdict, request, verified_at=now()),
            cause=again.cause.value,
            tier=again.tier,
            retries=again.retries,
        )
        await self.forward(self.retry_tiers[again.tier], retry_key(host_task), encode(retry), event)
        self.retries_scheduled += 1

    async def forward(
        self, topic: Sink, key: bytes | None, value: bytes | None, event: EventT[bytes]
    ) -> None:
        """Send ``value`` to ``topic`` for ``event`` (a stage's output of it)."""
        async with self.together(event):
            await topic.send(key=key, value=value)

    # --- the next stage -----------------------------------------------------------

    async def send_tasks(
        self,
        topic: Sink,
        key: bytes,
        pairs: Sequence[tuple[EventT[bytes], DomainTask]]
        | Sequence[tuple[EventT[bytes], HostTask]],
    ) -> None:
        """Send tasks of one domain (one mail host) to the next stage, in DomainTasks
        (HostTasks) events of at most TASKS_PER_EVENT tasks and TASK_BYTES_PER_EVENT
        bytes; a single task goes as itself. A send that fails dead-letters the events
        of its tasks only. Exactly once, an event holds the tasks of one source
        partition only (each goes in that partition's transaction)."""
        groups = by_partition(pairs) if self.exactly_once else [pairs]
        for chunk in (chunk for group in groups for chunk in task_chunks(group)):
            tasks = tuple(task for _, task in chunk)
            record: Record
            if len(tasks) == 1:
                record = tasks[0]
            elif isinstance(tasks[0], DomainTask):
                record = DomainTasks(cast("tuple[DomainTask, ...]", tasks))
            else:
                record = HostTasks(cast("tuple[HostTask, ...]", tasks))
            try:
                await self.forward(topic, key, encode(record), chunk[0][0])
            except Exception as exc:
                log.exception("pipeline.send_failed", extra={"topic": topic.get_topic_name()})
                for event in distinct_events(chunk):
                    await self.dead_letter(event, failure(exc))

    async def pending(
        self,
        events: Sequence[EventT[bytes]],
        kind: type[TaskT],
        request_of: Callable[[TaskT | RetryEvent], AddressRequest],
    ) -> list[tuple[EventT[bytes], TaskT | RetryEvent]]:
        """Decode ``events`` as ``kind`` (or DomainTasks / HostTasks, several of
        them in one event) or as a RetryEvent back from a tier: undecodable ones go
        to the DLQ, and requests already answered get their verdict again; the rest
        are returned, each task with its event."""
        kinds: tuple[type[Record], ...] = (kind, DomainTasks if kind is DomainTask else HostTasks)
        kinds += (RetryEvent,)
        result: list[tuple[EventT[bytes], TaskT | RetryEvent]] = []
        taken: set[tuple[str, str]] = set()  # (request id, email) of the tasks in result
        for event in events:
            try:
                record = decode_any(event.message.value or b"", kinds)
            except CodecError as exc:
                await self.dead_letter(event, str(exc))
                continue
            tasks = record.tasks if isinstance(record, DomainTasks | HostTasks) else (record,)
            for task in cast("tuple[TaskT | RetryEvent, ...]", tasks):
                request = request_of(task)
                if await self.resend(request, event):
                    continue
                if self.exactly_once:  # a copy in the same batch: answered with the first
                    identity = (request.request_id, request.email)
                    if identity in taken:
                        self.answered_already += 1
                        continue
                    taken.add(identity)
                result.append((event, task))
        return result

    # --- failures -----------------------------------------------------------------

    async def guarded(
        self,
        events: Sequence[EventT[bytes]],
        handle: Callable[[Sequence[EventT[bytes]]], Awaitable[None]],
    ) -> None:
        """Run ``handle``; if it fails unexpectedly, dead-letter its events and go on.

        A bad event must never stop the stream: whatever
        escapes a handler — a bug of ours, an adapter failing in a way it could
        not express as a value — sends the events to the DLQ with the error.
        """
        try:
            await handle(events)
        except Exception as exc:
            log.exception("pipeline.handler_failed")
            for event in events:
                try:
                    await self.dead_letter(event, failure(exc))
                except Exception:  # the DLQ itself failed: log, never stop the stream
                    log.exception("pipeline.dead_letter_failed")
        finally:
            self.sent.save()  # the verdicts sent, before these events' offsets are committed

    async def guarded_one(
        self, event: EventT[bytes], handle: Callable[[EventT[bytes]], Awaitable[T]]
    ) -> T | None:
        """``handle(event)``; an unexpected failure dead-letters this event only."""
        try:
            return await handle(event)
        except CodecError as exc:
            await self.dead_letter(event, str(exc))
        except Exception as exc:
            log.exception("pipeline.handler_failed")
            await self.dead_letter(event, failure(exc))
        return None

    async def dead_letter(self, event: EventT[bytes], error: str) -> None:
        """Send ``event`` to the DLQ byte for byte, with ``error`` (a sentence)."""
        message = event.message
        letter = DeadLetter(
            key=message.key if isinstance(message.key, bytes) else None,
            value=message.value if isinstance(message.value, bytes) else b"",
            topic=message.topic,
            partition=message.partition,
            offset=message.offset,
            error=error,
            failed_at=now(),
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
            await self.forward(self.dlq, message.key, encode(letter), event)
        except ProducerSendError as exc:  # over max_request_size: keep where it is, not what
            size = len(letter.value)
            error = (
                f"{error} The event's {size} bytes are left out of this letter ({exc}); "
                f"read them at {message.topic} partition {message.partition} "
                f"offset {message.offset}."
            )
            short = dataclasses.replace(letter, value=b"", error=error)
            await self.forward(self.dlq, message.key, encode(short), event)
        self.dead_letters += 1


def distinct_events(pairs: Iterable[tuple[EventT[bytes], Any]]) -> list[EventT[bytes]]:
    """The events of ``pairs``, each once: a DomainTasks or HostTasks event holds
    several tasks, and its dead letter must be written once."""
    return list({id(event): event for event, _ in pairs}.values())


def by_partition(pairs: Sequence[TaskPair]) -> list[list[TaskPair]]:
    """``pairs`` grouped by the partition of their event, in order within each."""
    groups: dict[int, list[TaskPair]] = {}
    for pair in pairs:
        groups.setdefault(pair[0].message.partition, []).append(pair)
    return list(groups.values())


def retry_key(host_task: HostTask) -> bytes:
    """The key of a retry event: its mail host (its domain for a DNS retry)."""
    if host_task.targets:
        return host_task.mail_host.encode()
    return host_task.domain_task.address.ascii_domain.encode()


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


def task_chunks(pairs: Sequence[TaskPair]) -> Iterator[list[TaskPair]]:
    """``pairs`` in runs of at most TASKS_PER_EVENT and TASK_BYTES_PER_EVENT (by _size_hint)."""
    return bounded_runs(
        pairs,
        lambda pair: _size_hint(pair[1]),
        max_bytes=TASK_BYTES_PER_EVENT,
        max_items=TASKS_PER_EVENT,
    )
