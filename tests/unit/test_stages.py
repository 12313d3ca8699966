"""The pipeline's stages driven without a broker: in-memory topics, tables and adapters.

Each stage is the class the Faust agents call (streams.pipeline.intake,
resolve, probe, tiers); here its topics are lists, the ``sent`` table a
dict, DNS and SMTP scripted fakes behind the real Verifier, so every test
reads the very events the stage would send and decodes them with the real
codecs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import cast

import pytest
from faust.exceptions import ProducerSendError
from faust.types import TP, EventT

from streams.core.catchall import CatchAll, CatchAllFact
from streams.core.host_state import HostLimits, HostState
from streams.core.mx import DnsProblem, HostAddresses, MxAnswer, MxRecord
from streams.core.politeness import Politeness
from streams.core.probe import ProbeOutcome, RcptOutcome
from streams.core.replies import SmtpReply
from streams.core.retry import DEFAULT_ATTEMPTS, Cause, RetryPolicy
from streams.core.route import DomainRoute, Target
from streams.core.verdict import Reason, Status
from streams.packaged_lists import packaged_lists
from streams.pipeline.codecs import decode, decode_any, encode
from streams.pipeline.intake import Intake
from streams.pipeline.outputs import REQUEST_ID_LIMIT, Outputs
from streams.pipeline.probe import Probe
from streams.pipeline.records import (
    AddressRequest,
    DeadLetter,
    DomainTask,
    DomainTasks,
    HostTask,
    HostTasks,
    RetryEvent,
    VerdictRecord,
    datetime_from_seconds,
)
from streams.pipeline.resolve import Resolve
from streams.pipeline.tables import EVENT_PARTITION
from streams.pipeline.tiers import RetryTiers
from streams.verifier import Verifier, VerifierConfig

# The stages stamp events with the wall clock (first_seen_at), so the fake clock starts there.
T0 = float(int(time.time()))
SUBMITTED = datetime(2027, 1, 15, tzinfo=UTC)
POLICY = RetryPolicy(delays=(60.0, 300.0))
MX = Target("mx.example.org", "192.0.2.25")

# --- fakes ----------------------------------------------------------------------


@dataclass
class Message:
    key: bytes | None
    value: bytes | None
    topic: str
    partition: int = 0
    offset: int = 0

    @property
    def tp(self) -> TP:
        return TP(self.topic, self.partition)


@dataclass
class Event:
    message: Message


def event(
    value: bytes, *, topic: str = "addresses", key: bytes | None = b"k", partition: int = 0
) -> EventT[bytes]:
    return cast(
        "EventT[bytes]", Event(Message(key=key, value=value, topic=topic, partition=partition))
    )


@dataclass
class Groups:
    """A ``together`` that records which event the sends inside it were made for."""

    active: list[EventT[bytes]] = field(default_factory=list)

    def __call__(self, event: EventT[bytes]) -> AbstractAsyncContextManager[None]:
        return self._within(event)

    @contextlib.asynccontextmanager
    async def _within(self, event: EventT[bytes]) -> AsyncIterator[None]:
        self.active.append(event)
        try:
            yield
        finally:
            self.active.pop()

    def current(self) -> int | None:
        """The partition of the event the sends are for now (None: outside any)."""
        return self.active[-1].message.partition if self.active else None


@dataclass
class Topic:
    """A topic that keeps what is sent to it."""

    name: str
    sent: list[tuple[bytes | None, bytes | None]] = field(default_factory=list)
    fail_first: Exception | None = None
    groups: Groups | None = None
    within: list[int | None] = field(default_factory=list)  # each send's event partition

    async def send(self, *, key: bytes | None, value: bytes | None) -> None:
        if self.fail_first is not None:
            exc, self.fail_first = self.fail_first, None
            raise exc
        self.sent.append((key, value))
        if self.groups is not None:
            self.within.append(self.groups.current())

    def get_topic_name(self) -> str:
        return self.name


@dataclass
class Sent:
    """The ``sent`` table as a dict."""

    data: dict[bytes, bytes] = field(default_factory=dict)
    saves: int = 0
    unsaved: list[int] = field(default_factory=list)  # partitions remembered, not saved
    saved_now: list[int] = field(default_factory=list)

    def remember(self, partition: int, key: bytes, record: bytes) -> None:
        self.data[key] = record
        self.unsaved.append(partition)

    def verdict(self, key: bytes) -> bytes | None:
        return self.data.get(key)

    def save(self) -> None:
        self.saves += 1

    async def save_now(self, partition: int) -> None:
        self.saved_now.append(partition)
        self.unsaved = [p for p in self.unsaved if p != partition]

    def forget(self, cutoff: float) -> None:
        self.data.clear()


class Dns:
    """Scripted DNS: MX answers by domain, addresses by host; counts the MX lookups."""

    def __init__(self, mx: dict[str, MxAnswer | DnsProblem]) -> None:
        self.mx_answers = mx
        self.mx_lookups: list[str] = []

    async def mx(self, domain: str) -> MxAnswer | DnsProblem:
        self.mx_lookups.append(domain)
        return self.mx_answers.get(domain, DnsProblem.NXDOMAIN)

    async def addresses(self, host: str) -> HostAddresses | DnsProblem:
        return HostAddresses((MX.address,), 300) if host == MX.host else DnsProblem.NXDOMAIN


class Smtp:
    """Scripted SMTP: one reply per recipient local part (default 250)."""

    def __init__(self, replies: dict[str, tuple[int, str]] | None = None) -> None:
        self.replies = replies or {}
        self.calls: list[list[str]] = []
        self.error: Exception | None = None

    async def probe(
        self,
        targets: Sequence[Target],
        recipients: Sequence[str],
        *,
        smtputf8: bool,
        max_sessions: int,
        rcpt_per_session: int,
    ) -> ProbeOutcome:
        if self.error is not None:
            raise self.error
        self.calls.append(list(recipients))
        outcome = ProbeOutcome(sessions=1, connections=1)
        for recipient in recipients:
            code, text = self.replies.get(recipient.split("@")[0], (250, "2.1.5 OK"))
            reply = SmtpReply.from_message(code, text)
            outcome.results[recipient] = RcptOutcome(
                recipient, reply=reply, target=targets[0], connections=1
            )
        return outcome

    async def aclose(self) -> None:
        return None


EXAMPLE_MX = MxAnswer((MxRecord(10, MX.host),), 300)


@dataclass
class World:
    """One stage set: fakes, the real Verifier and Outputs over in-memory topics."""

    dns: Dns = field(default_factory=lambda: Dns({"example.org": EXAMPLE_MX}))
    smtp: Smtp = field(default_factory=Smtp)
    limits: HostLimits = field(default_factory=HostLimits)
    now: float = T0
    releasing: bool = False
    routes: dict[str, DomainRoute] = field(default_factory=dict)
    hosts: dict[str, HostState] = field(default_factory=dict)
    catch_all: dict[str, CatchAllFact] = field(default_factory=dict)
    exactly_once: bool = False

    def __post_init__(self) -> None:
        self.groups = groups = Groups()
        self.verdicts, self.dlq = Topic("verdicts", groups=groups), Topic("dlq", groups=groups)
        self.tiers = [Topic(f"mxprobe.retry-{n}", groups=groups) for n in (0, 1)]
        self.by_domain = Topic("mxprobe.by-domain", groups=groups)
        self.by_host = Topic("mxprobe.by-host", groups=groups)
        self.sent = Sent()
        self.outputs = Outputs(
            verdicts=self.verdicts,
            dlq=self.dlq,
            retry_tiers=self.tiers,
            sent=self.sent,
            together=groups,
            exactly_once=self.exactly_once,
        )
        # 192.0.2.0/24 is TEST-NET: reserved, so it may only be probed when allowed.
        config = VerifierConfig(politeness=Politeness(defaults=self.limits), allow_private_mx=True)
        self.verifier = Verifier(
            self.dns,
            self.smtp,
            packaged_lists(),
            config,
            clock=self.clock,
            routes=self.routes,
            catch_all=self.catch_all,
            hosts=self.hosts,
        )
        self.resolve = Resolve(
            verifier=self.verifier,
            outputs=self.outputs,
            by_host=self.by_host,
            policy=POLICY,
            clock=self.clock,
        )
        self.intake = Intake(
            verifier=self.verifier,
            outputs=self.outputs,
            by_domain=self.by_domain,
            resolve=self.resolve,
            bulk_topic="addresses.bulk",
            releasing=lambda: self.releasing,
            clock=self.clock,
        )
        self.probe = Probe(
            verifier=self.verifier, outputs=self.outputs, policy=POLICY, clock=self.clock
        )
        EVENT_PARTITION.set(0)

    def clock(self) -> float:
        return self.now

    def verdict_records(self) -> list[VerdictRecord]:
        return [decode(value or b"", VerdictRecord) for _, value in self.verdicts.sent]

    def letters(self) -> list[DeadLetter]:
        return [decode(value or b"", DeadLetter) for _, value in self.dlq.sent]

    def retries(self, tier: int = 0) -> list[RetryEvent]:
        return [decode(value or b"", RetryEvent) for _, value in self.tiers[tier].sent]


def request(email: str, rid: str = "r1", *, max_age_s: int = 0) -> AddressRequest:
    return AddressRequest(
        request_id=rid, email=email, submitted_at=SUBMITTED, source="test", max_age_s=max_age_s
    )


def host_task(world: World, email: str, rid: str = "r1") -> HostTask:
    parsed = world.verifier.parse(email)
    assert not isinstance(parsed, Exception) and hasattr(parsed, "ascii_domain")
    domain_task = DomainTask(
        request=request(email, rid),
        address=parsed,  # type: ignore[arg-type]
        signals=world.verifier.signals(parsed),  # type: ignore[arg-type]
        first_seen_at=datetime_from_seconds(T0),
    )
    return HostTask(
        domain_task=domain_task, targets=(MX,), route_expires_at=datetime_from_seconds(T0 + 300)
    )


def tasks_sent(topic: Topic) -> list[DomainTask]:
    """The DomainTasks sent to ``topic``, unpacked, in order."""
    tasks: list[DomainTask] = []
    for _, value in topic.sent:
        record = decode_any(value or b"", (DomainTask, DomainTasks))
        if isinstance(record, DomainTasks):
            tasks.extend(record.tasks)
        else:
            assert isinstance(record, DomainTask)
            tasks.append(record)
    return tasks


# --- intake ----------------------------------------------------------------------


async def test_bad_syntax_is_answered_at_intake() -> None:
    """An address that cannot be parsed gets its verdict at once and goes no further."""
    world = World()
    await world.intake.live([event(encode(request("not an address")))])
    [record] = world.verdict_records()
    assert (record.status, record.reason) == (Status.UNDELIVERABLE, Reason.INVALID_SYNTAX.value)
    assert world.by_domain.sent == [] and world.dns.mx_lookups == []


async def test_requests_go_on_keyed_by_domain_one_event_per_domain() -> None:
    """Two requests of one domain make one DomainTasks event keyed by that domain."""
    world = World()
    events = [
        event(encode(request("a@Example.org", "r1"))),
        event(encode(request("b@example.org", "r2"))),
        event(encode(request("c@example.net", "r3"))),
    ]
    await world.intake.live(events)
    keys = [key for key, _ in world.by_domain.sent]
    assert keys == [b"example.org", b"example.net"]
    assert [t.request.request_id for t in tasks_sent(world.by_domain)] == ["r1", "r2", "r3"]
    assert world.verdicts.sent == []


async def test_a_request_keyed_by_its_domain_is_resolved_at_intake() -> None:
    """No re-key when the input is keyed by domain: resolved here, on to the probe stage."""
    world = World()
    await world.intake.live([event(encode(request("a@example.org")), key=b"example.org")])
    assert world.by_domain.sent == []
    assert world.dns.mx_lookups == ["example.org"]
    assert [key for key, _ in world.by_host.sent] == [MX.host.encode()]


@pytest.mark.parametrize(
    ("rid", "words"),
    [("", "empty request_id"), ("x" * (REQUEST_ID_LIMIT + 1), "over the 1024")],
    ids=["empty", "too-long"],
)
async def test_a_request_id_that_cannot_key_a_verdict_is_dead_lettered(
    rid: str, words: str
) -> None:
    """Empty or over-long request ids go to the DLQ with a sentence; the batch goes on."""
    world = World()
    bad = encode(request("a@example.org", rid))
    await world.intake.live([event(bad), event(encode(request("b@example.org", "ok")))])
    [letter] = world.letters()
    assert words in letter.error and letter.value == bad
    assert [t.request.request_id for t in tasks_sent(world.by_domain)] == ["ok"]


async def test_undecodable_bytes_go_to_the_dlq_byte_for_byte() -> None:
    """Garbage is kept as it came, and the next event of the batch is still handled."""
    world = World()
    await world.intake.live([event(b"\x00garbage"), event(encode(request("b@example.org")))])
    [letter] = world.letters()
    assert letter.value == b"\x00garbage" and letter.topic == "addresses"
    assert len(tasks_sent(world.by_domain)) == 1


async def test_an_answered_request_gets_the_same_bytes_again() -> None:
    """A request seen again (after a crash) is answered from the sent table, unprobed."""
    world = World()
    await world.intake.live([event(encode(request("not an address", "r1")))])
    first = world.verdicts.sent[0]
    await world.intake.live([event(encode(request("not an address", "r1")))])
    assert world.verdicts.sent == [first, first]
    assert world.outputs.resent == 1


async def test_exactly_once_an_answered_request_is_not_answered_again() -> None:
    """Exactly once: the verdict kept is on the topic already (committed with its
    entry), so a request seen again gets no second one."""
    world = World(exactly_once=True)
    await world.intake.live([event(encode(request("not an address", "r1")))])
    await world.intake.live([event(encode(request("not an address", "r1")))])
    assert len(world.verdicts.sent) == 1
    assert (world.outputs.answered_already, world.outputs.resent) == (1, 0)


async def test_exactly_once_a_verdict_and_its_entry_are_sent_together() -> None:
    """Exactly once: the sent-table entry is written with its verdict, in the group of
    the event answered (one transaction), not at the end of the batch."""
    world = World(exactly_once=True)
    await world.intake.live([event(encode(request("not an address", "r1")), partition=3)])
    assert world.verdicts.within == [3]
    assert world.sent.saved_now == [3] and world.sent.unsaved == []


async def test_at_least_once_entries_wait_for_the_end_of_the_batch() -> None:
    """At least once: entries are saved a batch at a time (one changelog message)."""
    world = World()
    await world.intake.live([event(encode(request("not an address", "r1")), partition=3)])
    assert world.sent.saved_now == [] and world.sent.saves >= 1


async def test_exactly_once_copies_of_a_request_in_one_batch_are_probed_once() -> None:
    """Exactly once: two copies of a task in one probe batch (a re-processed upstream
    event) make one probe and one verdict."""
    world = World(exactly_once=True)
    task = encode(host_task(world, "alice@example.org", "r1"))
    await world.probe.handle([event(task, topic="mxprobe.by-host"), event(task, topic="x")])
    assert [r.request_id for r in world.verdict_records()] == ["r1"]
    assert world.outputs.answered_already == 1
    probed = [rcpt for call in world.smtp.calls for rcpt in call]
    assert probed.count("alice@example.org") == 1  # (and one catch-all probe)


@pytest.mark.parametrize("exactly_once", [False, True], ids=["at-least-once", "exactly-once"])
async def test_tasks_of_two_partitions_go_in_events_of_one_partition_each(
    exactly_once: bool,
) -> None:
    """Exactly once, a DomainTasks event holds the tasks of one source partition (each
    goes in that partition's transaction); at least once, one event for the domain."""
    world = World(exactly_once=exactly_once)
    events = [
        event(encode(request("a@example.org", "r1")), partition=0),
        event(encode(request("b@example.org", "r2")), partition=1),
    ]
    await world.intake.live(events)
    assert [t.request.request_id for t in tasks_sent(world.by_domain)] == ["r1", "r2"]
    assert world.by_domain.within == ([0, 1] if exactly_once else [0])


async def test_every_send_is_made_for_the_event_it_answers() -> None:
    """Verdicts, tasks, retries and dead letters are all sent inside ``together`` of
    their event: none goes outside a transaction."""
    world = World(smtp=Smtp({"grey": (450, "4.7.1 Greylisted, try later")}), exactly_once=True)
    await world.intake.live([event(b"\x00garbage", partition=2)])
    await world.probe.handle(
        [event(encode(host_task(world, "grey@example.org")), topic="by-host", partition=1)]
    )
    assert world.dlq.within == [2]
    assert world.tiers[0].within == [1]


async def test_a_reused_request_id_for_another_address_is_a_new_request() -> None:
    """The sent verdict answers only the same address: another one is verified anew."""
    world = World()
    await world.intake.live([event(encode(request("not an address", "r1")))])
    await world.intake.live([event(encode(request("b@example.org", "r1")))])
    assert world.outputs.resent == 0
    assert [t.request.email for t in tasks_sent(world.by_domain)] == ["b@example.org"]


async def test_bulk_waits_while_live_traffic_flows() -> None:
    """A bulk batch waits while live batches came within the grace period."""
    world = World()
    await world.intake.live([event(encode(request("a@example.org", "live")))])
    ticks: list[float] = []

    def clock() -> float:  # each look at the clock is 0.1 s later
        world.now += 0.1
        ticks.append(world.now)
        return world.now

    world.intake._clock = clock
    bulk = event(encode(request("b@example.org", "bulk")), topic="addresses.bulk")
    await world.intake.bulk([bulk])
    assert ticks[-1] - T0 >= 0.5  # it looked until the live grace had passed
    [_, bulk_task] = tasks_sent(world.by_domain)
    assert isinstance(bulk_task, DomainTask) and bulk_task.bulk


async def test_bulk_goes_at_once_during_a_rebalance() -> None:
    """A held bulk batch is let go when a rebalance or a stop comes."""
    world = World()
    await world.intake.live([event(encode(request("a@example.org", "live")))])
    world.releasing = True
    bulk = event(encode(request("b@example.org", "bulk")), topic="addresses.bulk")
    await world.intake.bulk([bulk])  # the clock never moves: it would wait forever
    assert len(tasks_sent(world.by_domain)) == 2


# --- resolve ---------------------------------------------------------------------


async def test_a_domain_that_does_not_exist_is_answered_by_the_resolver() -> None:
    """NXDOMAIN is a verdict (undeliverable, no_such_domain), not a probe."""
    world = World()
    await world.intake.live([event(encode(request("a@nowhere.org")), key=b"nowhere.org")])
    [record] = world.verdict_records()
    assert record.reason == Reason.NO_SUCH_DOMAIN.value
    assert world.by_host.sent == []


async def test_a_servfail_goes_to_the_first_tier_without_targets() -> None:
    """A temporary DNS failure is retried: a RetryEvent with no targets, keyed by domain."""
    world = World(dns=Dns({"example.org": DnsProblem.SERVFAIL}))
    await world.intake.live([event(encode(request("a@example.org")), key=b"example.org")])
    [retry] = world.retries()
    assert (retry.cause, retry.tier, dict(retry.retries)) == ("dns", 0, {"dns": 1})
    assert retry.host_task.targets == ()
    assert world.tiers[0].sent[0][0] == b"example.org"
    assert retry.last_verdict.reason == Reason.DNS_ERROR.value
    assert world.verdicts.sent == []


async def test_a_servfail_past_its_attempts_is_unknown() -> None:
    """Out of DNS retries, the verdict is unknown/dns_error (never undeliverable)."""
    world = World(dns=Dns({"example.org": DnsProblem.SERVFAIL}))
    task = host_task(world, "a@example.org")
    task = dataclasses.replace(task, targets=())
    retry = RetryEvent(
        host_task=task,
        due_at=datetime_from_seconds(T0),
        last_verdict=decode(encode_verdict(world, task), VerdictRecord),
        cause="dns",
        retries={"dns": DEFAULT_ATTEMPTS[Cause.DNS]},
    )
    await world.resolve.handle([event(encode(retry), topic="mxprobe.by-domain")])
    [record] = world.verdict_records()
    assert (record.status, record.reason) == (Status.UNKNOWN, Reason.DNS_ERROR.value)
    assert world.retries() == []


def encode_verdict(world: World, task: HostTask) -> bytes:
    from streams.pipeline.records import verdict_record

    domain_task = task.domain_task
    verdict = world.verifier.dns_verdict(
        domain_task.request.email, domain_task.address, DnsProblem.SERVFAIL
    )
    return encode(verdict_record(verdict, domain_task.request, verified_at=SUBMITTED))


async def test_the_strictest_max_age_of_a_domain_decides() -> None:
    """A cached route serves requests that accept its age; one max_age_s=0 resolves anew."""
    world = World()
    await world.resolve.resolve([(event(b""), domain_task_of(world, "a@example.org", 0))])
    world.now += 10
    tolerant = domain_task_of(world, "b@example.org", 3600)
    await world.resolve.resolve([(event(b""), tolerant)])
    assert world.dns.mx_lookups == ["example.org"]  # the cached route served
    strict = domain_task_of(world, "c@example.org", 0)
    await world.resolve.resolve([(event(b""), tolerant), (event(b""), strict)])
    assert world.dns.mx_lookups == ["example.org", "example.org"]


def domain_task_of(world: World, email: str, max_age_s: int) -> DomainTask:
    return dataclasses.replace(
        host_task(world, email).domain_task, request=request(email, email, max_age_s=max_age_s)
    )


# --- probe -----------------------------------------------------------------------


async def test_a_mailbox_the_host_refuses_is_undeliverable() -> None:
    """550 5.1.1 at RCPT: the verdict is undeliverable/mailbox_not_found, with evidence."""
    world = World(smtp=Smtp({"gone": (550, "5.1.1 No such user")}))
    await world.probe.handle([event(encode(host_task(world, "gone@example.org")))])
    [record] = world.verdict_records()
    assert (record.status, record.reason) == (Status.UNDELIVERABLE, "mailbox_not_found")
    assert (record.evidence.reply_code, record.evidence.mail_host) == (550, MX.host)


async def test_a_greylisted_recipient_goes_to_a_retry_tier() -> None:
    """450 4.7.1: no verdict yet; a RetryEvent in tier 0, keyed by the mail host."""
    world = World(smtp=Smtp({"grey": (450, "4.7.1 Greylisted, try later")}))
    await world.probe.handle([event(encode(host_task(world, "grey@example.org")))])
    assert world.verdicts.sent == []
    [retry] = world.retries()
    assert (retry.cause, retry.tier, retry.host_task.domain_task.attempt) == ("greylisted", 0, 1)
    assert retry.due_at == datetime_from_seconds(T0 + 60)
    assert world.tiers[0].sent[0][0] == MX.host.encode()


async def test_a_greylisting_past_its_attempts_is_unknown_with_every_session() -> None:
    """The last greylisting stands as unknown/greylisted; evidence counts all sessions."""
    world = World(smtp=Smtp({"grey": (450, "4.7.1 Greylisted, try later")}))
    await world.probe.handle([event(encode(host_task(world, "grey@example.org")))])
    [retry] = world.retries()
    limit = DEFAULT_ATTEMPTS[Cause.GREYLISTED]
    retry = dataclasses.replace(retry, retries={"greylisted": limit})
    await world.probe.handle([event(encode(retry), topic="mxprobe.by-host")])
    [record] = world.verdict_records()
    assert (record.status, record.reason) == (Status.UNKNOWN, "greylisted")
    assert record.evidence.attempts == 2  # one session each time


async def test_recipients_over_the_host_budget_are_deferred_not_probed() -> None:
    """With a burst of 1 RCPT, the second address waits in a tier (cause budget)."""
    limits = HostLimits(rcpt_burst=1, rcpt_per_second=0.01)
    world = World(limits=limits)
    first, second = host_task(world, "a@example.org", "r1"), host_task(world, "b@example.org", "r2")
    # The catch-all probe of example.org is known fresh, so each address costs one RCPT.
    world.catch_all["example.org"] = CatchAllFact(CatchAll.REJECTS_UNKNOWN, T0)
    await world.probe.handle([event(encode(HostTasks((first, second))))])
    sent_recipients = [r for call in world.smtp.calls for r in call]
    assert "b@example.org" not in sent_recipients
    deferred = world.retries(0) + world.retries(1)
    assert [(r.cause, r.host_task.domain_task.request.request_id) for r in deferred] == [
        ("budget", "r2")
    ]
    assert deferred[0].host_task.domain_task.attempt == 0  # no probe round was spent


async def test_a_group_that_fails_dead_letters_its_events_once() -> None:
    """An adapter failing unexpectedly sends the group's event to the DLQ, once per event."""
    world = World()
    world.smtp.error = RuntimeError("boom")
    tasks = HostTasks((host_task(world, "a@example.org", "r1"), host_task(world, "b@example.org")))
    await world.probe.handle([event(encode(tasks), topic="mxprobe.by-host")])
    [letter] = world.letters()
    assert "RuntimeError: boom" in letter.error
    assert world.verdicts.sent == []


# --- retry tiers -------------------------------------------------------------------


def tiers(world: World, *, assigned: bool = True) -> RetryTiers:
    async def no_sleep(seconds: float) -> None:
        world.now += seconds

    return RetryTiers(
        outputs=world.outputs,
        by_host=world.by_host,
        by_domain=world.by_domain,
        releasing=lambda: world.releasing,
        assigned=lambda tp: assigned,
        clock=world.clock,
        sleep=no_sleep,
    )


def retry_event(world: World, *, due: float, targets: bool = True) -> bytes:
    task = host_task(world, "a@example.org")
    if not targets:
        task = dataclasses.replace(task, targets=())
    retry = RetryEvent(
        host_task=task,
        due_at=datetime_from_seconds(due),
        last_verdict=decode(encode_verdict(world, task), VerdictRecord),
    )
    return encode(retry)


@pytest.mark.parametrize(
    ("targets", "stage", "key"),
    [(True, "by_host", MX.host.encode()), (False, "by_domain", b"example.org")],
    ids=["probe-again", "resolve-again"],
)
async def test_a_due_retry_goes_back_to_its_stage_unchanged(
    targets: bool, stage: str, key: bytes
) -> None:
    """Once due, a retry with targets goes to probe, one without (DNS) to resolve."""
    world = World()
    value = retry_event(world, due=T0 + 5, targets=targets)
    await tiers(world).hold(event(value, topic="mxprobe.retry-0"), 0)
    assert world.now >= T0 + 5  # it waited until due
    assert getattr(world, stage).sent == [(key, value)]


@pytest.mark.parametrize("assigned", [True, False], ids=["rebalance", "unassigned"])
async def test_a_held_retry_is_given_back_on_a_rebalance(assigned: bool) -> None:
    """A rebalance, or losing the partition, sends the event back to its tier unchanged."""
    world = World()
    world.releasing = assigned  # either the rebalance, or the partition is gone
    value = retry_event(world, due=T0 + 50)
    await tiers(world, assigned=assigned).hold(event(value, topic="mxprobe.retry-1", key=b"k"), 1)
    assert world.tiers[1].sent == [(b"k", value)]
    assert world.by_host.sent == [] and world.outputs.retries_released == 1


async def test_an_undecodable_retry_is_dead_lettered() -> None:
    """Bytes that are no RetryEvent go to the DLQ; nothing waits for them."""
    world = World()
    await tiers(world).hold(event(b"junk", topic="mxprobe.retry-0"), 0)
    [letter] = world.letters()
    assert letter.topic == "mxprobe.retry-0" and letter.value == b"junk"


# --- outputs -----------------------------------------------------------------------


async def test_a_dead_letter_too_big_to_send_says_where_the_event_is() -> None:
    """Over the producer's limit, the letter keeps the error and the event's place."""
    world = World()
    world.dlq.fail_first = ProducerSendError("MessageSizeTooLargeError")
    await world.outputs.dead_letter(event(b"x" * 10, topic="addresses"), "Bad.")
    [letter] = world.letters()
    assert letter.value == b""
    assert "10 bytes are left out" in letter.error and "addresses partition 0" in letter.error


async def test_a_failing_handler_dead_letters_and_saves_the_sent_table() -> None:
    """guarded(): an unexpected error sends every event of the batch to the DLQ."""
    world = World()

    async def broken(events: Sequence[EventT[bytes]]) -> None:
        raise ValueError("bug")

    await world.outputs.guarded([event(b"1"), event(b"2")], broken)
    assert [letter.value for letter in world.letters()] == [b"1", b"2"]
    assert world.sent.saves == 1
