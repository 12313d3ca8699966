"""The retry tiers: each retry event held until it is due, then sent back to its stage.

One agent per tier topic. A tier has one fixed delay, so its topic is in due
order and only its head ever waits. The wait is in steps of at most
:data:`RETRY_CHECK_INTERVAL`: Faust holds a rebalance until every event in
flight is processed, so an event sleeping for minutes would stall the whole
group (measured: 78 s with a 90 s delay). On a rebalance or a stop, or once
its partition is no longer assigned here, a held event is given back: sent
again to the same tier, unchanged, before its offset is committed. No event
is lost; one given back may come due up to one tier delay late.

Back when due, a retry with mail-host targets goes to the probe stage; one
without (a temporary DNS failure) goes to the resolve stage, to be resolved
anew.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence

from faust.types import TP, EventT

from streams.errors import CodecError
from streams.pipeline.codecs import decode
from streams.pipeline.outputs import Outputs, Sink
from streams.pipeline.records import RetryEvent, seconds_from_datetime

__all__ = ["RETRY_CHECK_INTERVAL", "RetryTiers"]

#: Checks of a held retry event for a rebalance or a stop, at least this often.
RETRY_CHECK_INTERVAL = 1.0


class RetryTiers:
    """Holds retry events until due, and gives them back on a rebalance or a stop."""

    def __init__(
        self,
        *,
        outputs: Outputs,
        by_host: Sink,
        by_domain: Sink,
        releasing: Callable[[], bool],
        assigned: Callable[[TP], bool],
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        """Wire the stage.

        Args:
            outputs: the retry tier topics, and where dead letters go.
            by_host: the probe stage's topic.
            by_domain: the resolve stage's topic.
            releasing: true while a rebalance or a stop is under way.
            assigned: whether a topic partition is still assigned to this worker.
            clock: seconds since the epoch.
            sleep: waits that many seconds.
        """
        self._outputs = outputs
        self._by_host = by_host
        self._by_domain = by_domain
        self._releasing = releasing
        self._assigned = assigned
        self._clock = clock
        self._sleep = sleep

    async def handle(self, events: Sequence[EventT[bytes]], tier: int) -> None:
        """Hold each event of tier ``tier`` until due (a batch of one, in practice)."""
        for event in events:
            await self.hold(event, tier)

    async def hold(self, event: EventT[bytes], tier: int) -> None:
        """Hold one retry event until it is due, then send it back to its stage."""
        message = event.message
        try:
            retry = decode(message.value or b"", RetryEvent)
        except CodecError as exc:
            await self._outputs.dead_letter(event, str(exc))
            return
        due = seconds_from_datetime(retry.due_at)
        while (remaining := due - self._clock()) > 0:
            if self._releasing() or not self._assigned(message.tp):
                tier_topic = self._outputs.retry_tiers[tier]
                await self._outputs.forward(tier_topic, message.key, message.value, event)
                self._outputs.retries_released += 1
                return
            await self._sleep(min(RETRY_CHECK_INTERVAL, remaining))
        host_task = retry.host_task
        if host_task.targets:
            key = host_task.mail_host.encode()
            await self._outputs.forward(self._by_host, key, message.value, event)
        else:  # a temporary DNS failure: resolve again
            domain = host_task.domain_task.address.ascii_domain.encode()
            await self._outputs.forward(self._by_domain, domain, message.value, event)
