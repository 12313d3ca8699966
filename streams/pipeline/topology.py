"""The topics and tables of the pipeline, named and sized from Settings.

The topics, and the agents between them::

    addresses, addresses.bulk ─► [intake] ─► <app>.by-domain ─► [resolve]
        ─► <app>.by-host ─► [probe] ─► verdicts          (bad events ─► addresses.dlq)
    [probe] / [resolve] ─► <app>.retry-N ─► [retry N] ─► back when due

One retry topic per tier (``retry_delays``), numbered, so that changing a
delay keeps the events already waiting in its topic.

Tables: ``domains`` (ASCII domain → route facts) is read and written only
by the resolve agent, ``hosts`` (``host:<mail host>`` → its budget and health,
``catch-all:<domain>`` → the domain's catch-all fact, both in the partition of
the mail host) only by the probe agent; both agents run with concurrency 1.
``sent`` (request_id → the verdict sent, for two minutes) is written by every
agent in the partition of the event it answers, so that an event processed
again after a crash gets the very same verdict bytes.

Every topic is created up front with its final partition count: Tansu has no
CreatePartitions request to add partitions later, and auto-creates an unknown
topic with 4 partitions on the first produce or metadata request for it.
The re-keyed topics and the changelogs must have the same partition count,
because Faust co-partitions a table with the stream that writes it.
"""

from __future__ import annotations

from dataclasses import dataclass

from streams.settings import Settings

__all__ = ["DOMAIN_TABLE", "HOST_TABLE", "SENT_TABLE", "TopicSpec", "Topology"]

DOMAIN_TABLE = "domains"
HOST_TABLE = "hosts"
SENT_TABLE = "sent"


@dataclass(frozen=True, slots=True)
class TopicSpec:
    """One topic: its name, partitions, replication and cleanup policy."""

    name: str
    partitions: int
    replication: int
    compacted: bool = False

    @property
    def configs(self) -> dict[str, str]:
        """Topic configs to create it with (changelogs are compacted)."""
        return {"cleanup.policy": "compact"} if self.compacted else {}


@dataclass(frozen=True, slots=True)
class Topology:
    """All topic names of one deployment."""

    input: TopicSpec
    bulk: TopicSpec
    by_domain: TopicSpec
    by_host: TopicSpec
    verdicts: TopicSpec
    dlq: TopicSpec
    domains_changelog: TopicSpec
    hosts_changelog: TopicSpec
    sent_changelog: TopicSpec
    retry: tuple[TopicSpec, ...] = ()  # one per retry tier, in tier order

    @classmethod
    def from_settings(cls, settings: Settings) -> Topology:
        """Names and sizes from ``settings`` (all topics share one partition count)."""
        n, r, app = settings.partitions, settings.replication_factor, settings.app_id

        def spec(name: str, *, compacted: bool = False) -> TopicSpec:
            return TopicSpec(name, n, r, compacted)

        return cls(
            input=spec(settings.input_topic),
            bulk=spec(settings.bulk_topic),
            by_domain=spec(f"{app}.by-domain"),
            by_host=spec(f"{app}.by-host"),
            verdicts=spec(settings.verdict_topic),
            dlq=spec(settings.dlq_topic),
            # Faust names changelogs "<app id>-<table>-changelog".
            domains_changelog=spec(f"{app}-{DOMAIN_TABLE}-changelog", compacted=True),
            hosts_changelog=spec(f"{app}-{HOST_TABLE}-changelog", compacted=True),
            sent_changelog=spec(f"{app}-{SENT_TABLE}-changelog", compacted=True),
            retry=tuple(spec(f"{app}.retry-{tier}") for tier in range(len(settings.retry_delays))),
        )

    def all(self) -> tuple[TopicSpec, ...]:
        """Every topic, to create before the worker starts."""
        return (
            self.input,
            self.bulk,
            self.by_domain,
            self.by_host,
            self.verdicts,
            self.dlq,
            self.domains_changelog,
            self.hosts_changelog,
            self.sent_changelog,
            *self.retry,
        )
