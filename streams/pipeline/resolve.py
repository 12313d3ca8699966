"""The resolve stage: each domain resolved once, its requests re-keyed by mail host.

``resolve`` reads the by-domain topic (concurrency 1; it writes the
``domains`` table through the verifier's route cache). Each distinct domain
of a batch is resolved once, honouring the strictest ``max_age_s`` of its
requests. A domain with no mail host to probe answers its requests at once
(NXDOMAIN, null MX …) or, after a temporary DNS failure, sends them to a
retry tier (:func:`streams.core.retry.plan` decides). The rest go to the
probe stage, one HostTasks event per mail host and batch.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable, Sequence

from faust.types import EventT

from streams.core.lanes import RETRIED_MAX_AGE, strictest
from streams.core.retry import Attempt, Emit, RetryPolicy, plan
from streams.core.route import DomainRoute, Target
from streams.pipeline.codecs import encode
from streams.pipeline.outputs import Outputs, Sink, failure, now
from streams.pipeline.records import (
    AddressRequest,
    DomainTask,
    HostTask,
    RetryEvent,
    seconds_from_datetime,
)
from streams.pipeline.tables import EVENT_PARTITION
from streams.verifier import Verifier

__all__ = ["Resolve", "domain_task_of"]

Pending = Sequence[tuple[EventT[bytes], DomainTask | RetryEvent]]


def domain_task_of(task: DomainTask | RetryEvent) -> DomainTask:
    """The domain task of a task, or of a retry event back from a tier."""
    return task.host_task.domain_task if isinstance(task, RetryEvent) else task


def _request_of(task: DomainTask | RetryEvent) -> AddressRequest:
    return domain_task_of(task).request


class Resolve:
    """Resolves domains through the verifier and routes their requests."""

    def __init__(
        self,
        *,
        verifier: Verifier,
        outputs: Outputs,
        by_host: Sink,
        policy: RetryPolicy,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Wire the stage.

        Args:
            verifier: resolves domains (its route cache is the ``domains`` table).
            outputs: where verdicts, retries and dead letters go.
            by_host: the topic of the probe stage.
            policy: the retry tiers and limits.
            clock: seconds since the epoch.
        """
        self._verifier = verifier
        self._outputs = outputs
        self._by_host = by_host
        self._policy = policy
        self._clock = clock

    async def handle(self, events: Sequence[EventT[bytes]]) -> None:
        """Handle a batch of the by-domain topic."""
        await self.resolve(await self._outputs.pending(events, DomainTask, _request_of))

    async def resolve(self, tasks: Pending) -> None:
        """Resolve each distinct domain once; DNS verdicts out, the rest to the probe stage."""
        max_ages: dict[str, list[float]] = {}
        partitions: dict[str, int] = {}
        for event, task in tasks:
            domain_task = domain_task_of(task)
            domain = domain_task.address.ascii_domain
            retried = isinstance(task, RetryEvent)
            age = RETRIED_MAX_AGE if retried else float(domain_task.request.max_age_s)
            max_ages.setdefault(domain, []).append(age)
            partitions[domain] = event.message.partition
        domains = sorted(max_ages)

        async def resolve(domain: str) -> DomainRoute:
            EVENT_PARTITION.set(partitions[domain])  # this task's own context
            return await self._verifier.route(domain, max_age=strictest(max_ages[domain]))

        answers = await asyncio.gather(*map(resolve, domains), return_exceptions=True)
        routes = dict(zip(domains, answers, strict=True))
        # One event per mail host (and bulk flag) to the probe stage, not one per address.
        outgoing: dict[tuple[bool, tuple[Target, ...]], list[tuple[EventT[bytes], HostTask]]] = {}
        lettered: set[int] = set()
        for event, task in tasks:
            domain_task = domain_task_of(task)
            retry = task if isinstance(task, RetryEvent) else None
            route = routes[domain_task.address.ascii_domain]
            if isinstance(route, BaseException):
                # Only the events of the domain that failed go to the DLQ, each once
                # (a DomainTasks event holds several tasks of that domain).
                if id(event) not in lettered:
                    lettered.add(id(event))
                    await self._outputs.dead_letter(event, failure(route))
                continue
            if route.problem is not None:
                await self._unrouted(event, domain_task, retry, route)
                continue
            host_task = HostTask.from_route(domain_task, route)
            if retry is None:
                key = (domain_task.bulk, host_task.targets)
                outgoing.setdefault(key, []).append((event, host_task))
            else:
                value = encode(dataclasses.replace(retry, host_task=host_task))
                host = host_task.mail_host.encode()
                await self._outputs.forward(self._by_host, host, value, event)
        for group in outgoing.values():
            await self._outputs.send_tasks(self._by_host, group[0][1].mail_host.encode(), group)

    async def _unrouted(
        self,
        event: EventT[bytes],
        domain_task: DomainTask,
        retry: RetryEvent | None,
        route: DomainRoute,
    ) -> None:
        """A domain with no mail host: its DNS verdict, or a retry after a temporary failure."""
        assert route.problem is not None
        request, address = domain_task.request, domain_task.address
        verdict = self._verifier.dns_verdict(request.email, address, route.problem)
        decision = plan(
            self._policy,
            Attempt(
                verdict=verdict,
                retries=retry.retries if retry is not None else {},
                first_seen=seconds_from_datetime(domain_task.first_seen_at),
                dns=route.problem,
            ),
            self._clock(),
        )
        if isinstance(decision, Emit):
            await self._outputs.emit(request, decision.verdict, event)
            return
        unrouted = HostTask(domain_task=domain_task, targets=(), route_expires_at=now())
        await self._outputs.retry(unrouted, decision, event)
