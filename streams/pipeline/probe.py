"""The probe stage: each mail host asked about a batch of recipients, within its budget.

``probe`` reads the by-host topic (concurrency 1; it writes the ``hosts``
table: each mail host's budget and health, and catch-all facts by domain,
in the partition of the mail host). A batch is grouped by lane and by
mail-host set; live groups start first, so they take their host's budget
first. Each group is probed through the Verifier, and each answer is
carried out as :func:`streams.core.retry.plan` decides: a final verdict,
keyed by request_id, or a retry tier (greylisted, throttled, held back by
the host's budget …).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence

from faust.types import EventT

from streams.core.address import Address
from streams.core.lanes import strictest
from streams.core.retry import Attempt, Emit, RetryPolicy, plan
from streams.core.route import Target
from streams.core.verdict import Verdict
from streams.pipeline.outputs import Outputs, distinct_events, failure, now
from streams.pipeline.records import (
    AddressRequest,
    HostTask,
    RetryEvent,
    seconds_from_datetime,
    verdict_record,
)
from streams.pipeline.tables import EVENT_PARTITION
from streams.verifier import Verifier

__all__ = ["Probe", "host_task_of"]

Pair = tuple[EventT[bytes], HostTask | RetryEvent]


def host_task_of(task: HostTask | RetryEvent) -> HostTask:
    """The host task of a task, or of a retry event back from a tier."""
    return task.host_task if isinstance(task, RetryEvent) else task


def _request_of(task: HostTask | RetryEvent) -> AddressRequest:
    return host_task_of(task).domain_task.request


class Probe:
    """Probes mail hosts through the verifier and carries out each plan."""

    def __init__(
        self,
        *,
        verifier: Verifier,
        outputs: Outputs,
        policy: RetryPolicy,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Wire the stage.

        Args:
            verifier: probes (its budgets and catch-all facts are the ``hosts`` table).
            outputs: where verdicts, retries and dead letters go.
            policy: the retry tiers and limits.
            clock: seconds since the epoch.
        """
        self._verifier = verifier
        self._outputs = outputs
        self._policy = policy
        self._clock = clock

    async def handle(self, events: Sequence[EventT[bytes]]) -> None:
        """Handle a batch of the by-host topic."""
        groups: dict[tuple[bool, frozenset[Target]], list[Pair]] = {}
        for event, task in await self._outputs.pending(events, HostTask, _request_of):
            host_task = host_task_of(task)
            key = (host_task.domain_task.bulk, frozenset(host_task.targets))
            groups.setdefault(key, []).append((event, task))
        # Live groups first: each takes its host's budget as it starts.
        ordered = [groups[key] for key in sorted(groups, key=lambda key: key[0])]
        outcomes = await asyncio.gather(*map(self._group, ordered), return_exceptions=True)
        for tasks, outcome in zip(ordered, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                # Only the events of the group that failed go to the DLQ, each once
                # (a HostTasks event holds several tasks; their group is the same).
                for event in distinct_events(tasks):
                    await self._outputs.dead_letter(event, failure(outcome))

    async def _group(self, tasks: list[Pair]) -> None:
        """Probe one mail host about one group's recipients, then carry out each plan."""
        # One mail host, so one partition: its state and catch-all facts are written there.
        EVENT_PARTITION.set(tasks[0][0].message.partition)
        by_email: dict[str, list[Pair]] = {}
        items: list[tuple[str, Address]] = []
        for event, task in tasks:
            domain_task = host_task_of(task).domain_task
            email = domain_task.request.email
            if email not in by_email:
                items.append((email, domain_task.address))
            by_email.setdefault(email, []).append((event, task))
        verdicts: list[Verdict] = []
        held: dict[str, float] = {}
        first = host_task_of(tasks[0][1])
        ages = (float(host_task_of(task).domain_task.request.max_age_s) for _, task in tasks)
        await self._verifier.probe(
            first.targets,
            items,
            verdicts.append,
            max_age=strictest(ages),
            defer=held.__setitem__,
            bulk=first.domain_task.bulk,
        )
        for verdict in verdicts:
            for event, task in by_email[verdict.email]:
                await self._conclude(event, task, verdict)
        for email, wait in held.items():
            for event, task in by_email[email]:
                await self._defer(event, task, wait)
        self._outputs.sent.save()  # now, not when the slowest group of the batch is done

    async def _conclude(
        self, event: EventT[bytes], task: HostTask | RetryEvent, verdict: Verdict
    ) -> None:
        """A probe's verdict: final, or (greylisted, throttled…) to a retry tier."""
        retry = task if isinstance(task, RetryEvent) else None
        host_task = host_task_of(task)
        attempt = Attempt(
            verdict=verdict,
            retries=retry.retries if retry is not None else {},
            first_seen=seconds_from_datetime(host_task.domain_task.first_seen_at),
            earlier_sessions=retry.last_verdict.evidence.attempts if retry is not None else 0,
        )
        decision = plan(self._policy, attempt, self._clock())
        if isinstance(decision, Emit):
            await self._outputs.emit(host_task.domain_task.request, decision.verdict, event)
        else:
            await self._outputs.retry(host_task, decision, event)

    async def _defer(self, event: EventT[bytes], task: HostTask | RetryEvent, wait: float) -> None:
        """An address the host's budget held back: to a retry tier, due when the
        budget allows; past its limits, the last verdict it had (or unknown/throttled)."""
        retry = task if isinstance(task, RetryEvent) else None
        host_task = host_task_of(task)
        domain_task = host_task.domain_task
        if retry is not None:
            last = retry.last_verdict
        else:
            held = self._verifier.held_verdict(
                domain_task.request.email, domain_task.address, host_task.mail_host
            )
            last = verdict_record(held, domain_task.request, verified_at=now())
        attempt = Attempt(
            verdict=last.to_verdict(),
            retries=retry.retries if retry is not None else {},
            first_seen=seconds_from_datetime(domain_task.first_seen_at),
            deferred_for=wait,
        )
        decision = plan(self._policy, attempt, self._clock())
        if isinstance(decision, Emit):
            await self._outputs.emit(domain_task.request, decision.verdict, event)
        else:
            await self._outputs.retry(host_task, decision, event, last=last)
