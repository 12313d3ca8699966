"""The intake stage: requests in, parsed and keyed by domain; bad syntax answered at once.

``intake`` reads the input topic (live) and the bulk topic. Each
``AddressRequest`` is decoded and parsed: an undecodable event goes to the
DLQ, a request already answered gets the same verdict again, bad syntax is
a verdict at once; the rest become DomainTasks keyed by their ASCII domain
(one DomainTasks event per domain and batch) — unless the event is already
keyed by its domain (``mxprobe submit`` does that), in which case it is
resolved right here and the first re-key is skipped (each re-key costs a
Faust worker 30-35 % of its throughput).

Live before bulk (:mod:`streams.core.lanes`): a bulk batch waits while live
batches flow, at most :data:`~streams.core.lanes.BULK_MAX_WAIT`, and never
through a rebalance or a stop.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence

from faust.types import EventT

from streams.core.lanes import bulk_may_go
from streams.core.verdict import Verdict
from streams.pipeline.codecs import decode
from streams.pipeline.outputs import REQUEST_ID_LIMIT, Outputs, Sink, now
from streams.pipeline.records import AddressRequest, DomainTask, RetryEvent
from streams.pipeline.resolve import Resolve
from streams.verifier import Verifier

__all__ = ["Intake"]

#: How often a held bulk batch looks again whether it may go.
_BULK_POLL = 0.05


class Intake:
    """Decodes and parses requests, then hands them to resolution (here or by domain)."""

    def __init__(
        self,
        *,
        verifier: Verifier,
        outputs: Outputs,
        by_domain: Sink,
        resolve: Resolve,
        bulk_topic: str,
        releasing: Callable[[], bool],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Wire the stage.

        Args:
            verifier: parses addresses and gives their static signals.
            outputs: where verdicts and dead letters go.
            by_domain: the topic of the resolve stage.
            resolve: the resolve stage, for requests already keyed by domain.
            bulk_topic: the name of the bulk topic (its requests are bulk).
            releasing: true while a rebalance or a stop is under way.
            clock: a monotonic clock (seconds).
        """
        self._verifier = verifier
        self._outputs = outputs
        self._by_domain = by_domain
        self._resolve = resolve
        self._bulk_topic = bulk_topic
        self._releasing = releasing
        self._clock = clock
        self._last_live = float("-inf")

    async def live(self, events: Sequence[EventT[bytes]]) -> None:
        """Handle a batch of the input topic (live requests)."""
        self._last_live = self._clock()
        await self._outputs.guarded(events, self.handle)

    async def bulk(self, events: Sequence[EventT[bytes]]) -> None:
        """Handle a batch of the bulk topic, once live traffic lets it go."""
        waiting_since = self._clock()
        while not self._releasing() and not bulk_may_go(
            self._clock(), last_live=self._last_live, waiting_since=waiting_since
        ):
            await asyncio.sleep(_BULK_POLL)
        await self._outputs.guarded(events, self.handle)

    async def handle(self, events: Sequence[EventT[bytes]]) -> None:
        """Parse each request; send the rest on by domain (or resolve them here)."""
        outputs = self._outputs
        local: list[tuple[EventT[bytes], DomainTask | RetryEvent]] = []
        outgoing: dict[bytes, list[tuple[EventT[bytes], DomainTask]]] = {}  # a domain: an event
        for event in events:
            task = await outputs.guarded_one(event, self._intake_one)
            if task is None:
                continue
            domain = task.address.ascii_domain.encode()
            if event.message.key == domain:
                local.append((event, task))  # already keyed by its domain: resolve here
            else:
                outgoing.setdefault(domain, []).append((event, task))
        outputs.sent.save()  # the verdicts given here (bad syntax), before resolving takes time
        for domain, pairs in outgoing.items():
            await outputs.send_tasks(self._by_domain, domain, pairs)
        await self._resolve.resolve(local)

    async def _intake_one(self, event: EventT[bytes]) -> DomainTask | None:
        """Decode and parse one request; its task, unless it got its answer here."""
        outputs = self._outputs
        request = decode(event.message.value or b"", AddressRequest)
        problem = _request_id_problem(request)
        if problem is not None:
            await outputs.dead_letter(event, problem)
            return None
        if await outputs.resend(request, event):
            return None
        parsed = self._verifier.parse(request.email)
        if isinstance(parsed, Verdict):
            await outputs.emit(request, parsed, event)
            return None
        return DomainTask(
            request=request,
            address=parsed,
            signals=self._verifier.signals(parsed),
            first_seen_at=now(),
            bulk=event.message.topic == self._bulk_topic,
        )


def _request_id_problem(request: AddressRequest) -> str | None:
    """Why ``request``'s id cannot key a verdict, as a sentence; None when it can."""
    if not request.request_id:
        return (
            "This AddressRequest has an empty request_id, so its verdict could not be told "
            "from others; give every request an id of its own (a UUID)."
        )
    if len(request.request_id) > REQUEST_ID_LIMIT:
        return (
            f"This AddressRequest's request_id has {len(request.request_id)} characters, "
            f"over the {REQUEST_ID_LIMIT} mxprobe accepts (it keys the verdict and is kept "
            "to answer duplicates); give every request a short id of its own (a UUID)."
        )
    return None
