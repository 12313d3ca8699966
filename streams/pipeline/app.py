"""The Faust application: topics, tables and agents, wired to the stages.

Thin wiring only. Each agent reads batches of raw bytes from its topic and
hands them to its stage; every decision is the stages' (and so the core's
and the Verifier's):

- ``intake`` / ``intake-bulk`` (input and bulk topics): :class:`~streams.pipeline.intake.Intake`;
- ``resolve`` (by-domain topic, concurrency 1, writes ``domains``):
  :class:`~streams.pipeline.resolve.Resolve`;
- ``probe`` (by-host topic, concurrency 1, writes ``hosts``):
  :class:`~streams.pipeline.probe.Probe`;
- ``retry-N`` (one per tier topic): :class:`~streams.pipeline.tiers.RetryTiers`.

They share one :class:`~streams.pipeline.outputs.Outputs` (verdicts, retry
tiers, dead letters, the ``sent`` table).

At least once (Tansu, or ``processing_guarantee=at_least_once``): an event's
offset is committed once its stage has handled it, and never past an event
still being handled (:mod:`streams.pipeline.offsets`), so a crash
re-processes it; a duplicate verdict carries the same request_id and the
same bytes (the ``sent`` table). Exactly once (Apache Kafka only, opt-in
while under test): Kafka transactions, each request's
verdict once for a ``read_committed`` consumer
(:mod:`streams.pipeline.exactly_once`). Values travel as raw bytes and are
decoded in the stages, so that a bad event can go to the dead-letter topic
byte for byte.
"""

from __future__ import annotations

import functools
import logging
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, cast

from faust.streams import Stream
from faust.types import TP, EventT, StreamT, TopicT

from streams.loopback import LOOPBACK, free_port
from streams.pipeline.codecs import register_codecs
from streams.pipeline.exactly_once import (
    COMMIT_INTERVAL,
    ExactlyOnceApp,
    committed_together,
    plain,
)
from streams.pipeline.intake import Intake
from streams.pipeline.outputs import Outputs
from streams.pipeline.probe import Probe
from streams.pipeline.resolve import Resolve
from streams.pipeline.sent import SENT_TTL, SentTable
from streams.pipeline.tables import catch_all_store, host_state_store, route_store
from streams.pipeline.tansu import app_class
from streams.pipeline.tiers import RetryTiers
from streams.pipeline.topology import DOMAIN_TABLE, HOST_TABLE, SENT_TABLE, Topology
from streams.settings import Settings
from streams.verifier import Verifier

__all__ = ["Pipeline"]

log = logging.getLogger(__name__)

Handler = Callable[[Sequence[EventT[bytes]]], Awaitable[None]]


class Pipeline:
    """The Faust app of one mxprobe deployment, with its agents bound to the stages."""

    def __init__(
        self,
        settings: Settings,
        make_verifier: Callable[..., Verifier],
        *,
        broker: str,
        tansu: bool,
        exactly_once: bool = False,
    ) -> None:
        """Build the app, its topics, tables, stages and agents (nothing connects yet).

        Args:
            settings: all settings.
            make_verifier: builds the Verifier given ``routes=``, ``catch_all=``
                and ``hosts=`` stores.
            broker: ``kafka://HOST:PORT``.
            tansu: the broker is Tansu (enables the workarounds of
                :mod:`streams.pipeline.tansu`).
            exactly_once: run in Kafka transactions
                (:mod:`streams.pipeline.exactly_once`); else at least once.
        """
        self.settings = settings
        self.topology = t = Topology.from_settings(settings)
        policy = settings.retry_policy()
        register_codecs()  # "avro-verdict" etc. for apps that read our topics with Faust
        # Faust makes a data directory even for memory tables ("<app id>-data" in the
        # working directory by default): a temporary one, removed by aclose().
        self._datadir = tempfile.TemporaryDirectory(prefix=f"mxprobe-{settings.app_id}-")
        self.exactly_once = exactly_once
        self.app = (ExactlyOnceApp if exactly_once else app_class(tansu))(
            settings.app_id,
            broker=broker,
            store="memory://",
            datadir=self._datadir.name,
            autodiscover=False,
            key_serializer="raw",
            value_serializer="raw",
            processing_guarantee="exactly_once" if exactly_once else "at_least_once",
            # Every hop reads read_committed in exactly-once: it waits for a commit.
            broker_commit_interval=COMMIT_INTERVAL if exactly_once else 2.8,
            # Tansu holds every JoinGroup for half the session timeout: with
            # Faust's 60 s default every start and rebalance would take 30 s.
            broker_session_timeout=10,
            # A stop or rebalance waits until the events in flight are processed:
            # Faust's take_events acks a batch when its generator closes, so
            # without this a clean stop could commit a batch that got no verdict.
            # The retry agents hold events for long, so they give them back at
            # once on a rebalance or a stop (streams.pipeline.tiers).
            stream_wait_empty=True,
            topic_partitions=settings.partitions,
            topic_replication_factor=settings.replication_factor,
            topic_allow_declare=True,
            producer_max_batch_size=262_144,
            producer_linger=0.005,
            # Faust starts its web server even with the web disabled, on 0.0.0.0
            # by default: keep it on loopback, on a free port. (The HTTP API
            # of mxprobe will be its own.)
            web_enabled=False,
            web_bind=LOOPBACK,
            web_port=free_port(),
            table_cleanup_interval=3600.0,
            # No standby copies of the tables: a worker that takes a partition over
            # reads its changelog (small: the sent table keeps two minutes). With
            # standbys, exactly-once recovery crashed a worker after a rebalance
            # (ConsistencyError: a standby's offset above the changelog's stable end).
            table_standby_replicas=0,
        )
        self.input = self._topic(t.input.name)
        self.bulk = self._topic(t.bulk.name)
        self.by_domain = self._topic(t.by_domain.name)
        self.by_host = self._topic(t.by_host.name)
        self.verdicts = self._topic(t.verdicts.name)
        self.dlq = self._topic(t.dlq.name)
        self.retry_topics = [self._topic(spec.name) for spec in t.retry]
        table_args: dict[str, Any] = {
            "default": None,
            "partitions": settings.partitions,
            "key_type": bytes,
            "value_type": bytes,
            # Written in the partition of the event being handled, not by key hash
            # (streams.pipeline.tables, and the sent table likewise).
            "use_partitioner": False,
        }
        self.domains = self.app.Table(DOMAIN_TABLE, **table_args)
        self.hosts = self.app.Table(HOST_TABLE, **table_args)
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
        self.outputs = outputs = Outputs(
            verdicts=self.verdicts,
            dlq=self.dlq,
            retry_tiers=self.retry_topics,
            sent=self.sent,
            together=functools.partial(committed_together, self.app) if exactly_once else plain,
            exactly_once=exactly_once,
        )
        resolve = Resolve(
            verifier=self.verifier, outputs=outputs, by_host=self.by_host, policy=policy
        )
        intake = Intake(
            verifier=self.verifier,
            outputs=outputs,
            by_domain=self.by_domain,
            resolve=resolve,
            bulk_topic=t.bulk.name,
            releasing=self._releasing,
        )
        probe = Probe(verifier=self.verifier, outputs=outputs, policy=policy)
        tiers = RetryTiers(
            outputs=outputs,
            by_host=self.by_host,
            by_domain=self.by_domain,
            releasing=self._releasing,
            assigned=self._assigned,
        )
        app_id = settings.app_id
        self._agent(self.input, f"{app_id}.intake", intake.live)
        self._agent(self.bulk, f"{app_id}.intake-bulk", intake.bulk)
        self._agent(self.by_domain, f"{app_id}.resolve", self._guard(resolve.handle))
        self._agent(self.by_host, f"{app_id}.probe", self._guard(probe.handle))
        for tier, topic in enumerate(self.retry_topics):
            hold = self._guard(_tier(tiers, tier))
            self._agent(topic, f"{app_id}.retry-{tier}", hold, one_by_one=True)

    def _topic(self, name: str) -> TopicT:
        return self.app.topic(
            name,
            key_type=bytes,
            value_type=bytes,
            partitions=self.settings.partitions,
            replicas=self.settings.replication_factor,
        )

    def _agent(
        self, topic: TopicT, name: str, handle: Handler, *, one_by_one: bool = False
    ) -> None:
        """An agent that hands ``handle`` the batches of ``topic`` (``one_by_one``:
        each event alone, as soon as it comes, as the retry tiers hold each).

        Events are acknowledged as soon as ``handle`` is done with them (it has
        sent all they cause). Faust acknowledges them only when the agent asks for
        the next ones, so the last events of a partition stayed unacknowledged
        while no more came: their offsets were not committed, and exactly once
        neither was the transaction holding what they sent (a retry released to
        the probe stage waited for the next retry to come, forever)."""
        settings = self.settings

        def batches(stream: StreamT[bytes]) -> AsyncIterator[Sequence[EventT[bytes]]]:
            return cast(Stream[bytes], stream).take_events(
                settings.batch_size, within=settings.batch_within
            )

        async def agent(stream: StreamT[bytes]) -> None:
            if one_by_one:
                async for event in stream.events():
                    await handle([event])
                    event.ack()
            else:
                async for events in batches(stream):
                    await handle(events)
                    for event in events:
                        event.ack()

        self.app.agent(topic, name=name)(agent)

    def _guard(self, handle: Handler) -> Handler:
        """``handle`` whose unexpected failures dead-letter its events (Outputs.guarded)."""

        async def guarded(events: Sequence[EventT[bytes]]) -> None:
            await self.outputs.guarded(events, handle)

        return guarded

    def _releasing(self) -> bool:
        """A rebalance or a stop is under way: events held must be let go."""
        app = self.app
        return bool(app.rebalancing or app.should_stop or not app.flow_control.is_active())

    def _assigned(self, tp: TP) -> bool:
        return tp in self.app.consumer.assignment()

    async def _forget_old_verdicts(self) -> None:
        """Drop ``sent`` entries older than SENT_TTL (a tombstone in the changelog too)."""
        self.sent.forget(time.time() - SENT_TTL)

    async def aclose(self) -> None:
        """Close what the verifier keeps open (idle SMTP sessions) and remove the data
        directory; after the app stopped."""
        try:
            await self.verifier.aclose()
        finally:
            self._datadir.cleanup()


def _tier(tiers: RetryTiers, tier: int) -> Handler:
    async def hold(events: Sequence[EventT[bytes]]) -> None:
        await tiers.handle(events, tier)

    return hold
