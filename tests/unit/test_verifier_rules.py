"""The Verifier's rules, driven with in-memory fakes of DNS, the mail hosts and the clock.

The fakes stand behind the Verifier's Protocols (:mod:`streams.ports`): a
resolver answering from tables, a prober answering each recipient from a
script, a clock that moves only when told (or when the Verifier sleeps).
The integration tests run the same Verifier against real servers.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from streams.core.address import Address
from streams.core.catchall import CatchAll, CatchAllFact
from streams.core.host_state import HostLimits, HostState
from streams.core.lists import StaticLists
from streams.core.mx import DnsProblem, HostAddresses, MxAnswer, MxRecord
from streams.core.politeness import Politeness
from streams.core.probe import ProbeOutcome, RcptOutcome, SessionFailure
from streams.core.replies import Phase, SmtpReply
from streams.core.route import Target
from streams.core.verdict import Verdict
from streams.verifier import Verifier, VerifierConfig

NOW = 1_700_000_000.0
SLACK = 1e-3  # what the budget adds to every wait
MX = "mx.example.test"
MX_IP = "93.184.216.34"
TARGETS = (Target(MX, MX_IP),)

ACCEPT = SmtpReply(250, "OK", "2.1.5")
NO_SUCH_USER = SmtpReply(550, "No such user here", "5.1.1")

#: Limits that never hold anything back, unless a test sets tighter ones.
PLENTY = HostLimits(
    rcpt_per_second=1000.0,
    rcpt_burst=1000,
    connections_per_minute=60_000.0,
    connection_burst=1000,
    rcpt_per_session=50,
)

LISTS = StaticLists(disposable=frozenset({"throwaway.test"}), free=frozenset(), role=frozenset())

Answer = SmtpReply | SessionFailure | RcptOutcome


# --- the fakes ----------------------------------------------------------------------


class FakeClock:
    """Seconds since the epoch that move only when a test (or a sleep) moves them."""

    def __init__(self, now: float = NOW) -> None:
        self.now = now
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class FakeDns:
    """MX and address answers from tables; anything not in them is NXDOMAIN."""

    def __init__(
        self,
        mx: Mapping[str, MxAnswer | DnsProblem] | None = None,
        hosts: Mapping[str, HostAddresses | DnsProblem] | None = None,
    ) -> None:
        self.mx_answers = dict(mx or {})
        self.host_answers = dict(hosts or {})
        self.mx_asked: list[str] = []
        self.hosts_asked: list[str] = []

    async def mx(self, domain: str) -> MxAnswer | DnsProblem:
        self.mx_asked.append(domain)
        return self.mx_answers.get(domain, DnsProblem.NXDOMAIN)

    async def addresses(self, host: str) -> HostAddresses | DnsProblem:
        self.hosts_asked.append(host)
        return self.host_answers.get(host, DnsProblem.NXDOMAIN)


def served_by(host: str, *domains: str, ip: str = MX_IP, ttl: int = 3600) -> FakeDns:
    """DNS where each of ``domains`` has the one MX ``host``, at ``ip``."""
    return FakeDns(
        mx={domain: mx_answer(host, ttl=ttl) for domain in domains},
        hosts={host: HostAddresses((ip,), ttl=ttl)},
    )


def mx_answer(*exchanges: str, ttl: int = 3600, preference: int | None = None) -> MxAnswer:
    """MX records in the order given (or all of one ``preference``)."""
    records = tuple(
        MxRecord(preference if preference is not None else 10 * (i + 1), name)
        for i, name in enumerate(exchanges)
    )
    return MxAnswer(records=records, ttl=ttl)


@dataclass(frozen=True)
class ProbeCall:
    """What the Verifier asked the prober once."""

    targets: tuple[Target, ...]
    recipients: tuple[str, ...]
    smtputf8: bool
    max_sessions: int
    rcpt_per_session: int


@dataclass
class FakeProber:
    """Answers each recipient from ``replies``; any other (the random catch-all
    recipient) gets ``others``: what the host says to strangers."""

    replies: Mapping[str, Answer] = field(default_factory=dict)
    others: Answer = NO_SUCH_USER
    sessions: int = 1  # sessions each call reports
    calls: list[ProbeCall] = field(default_factory=list)
    closed: bool = False

    async def probe(
        self,
        targets: Sequence[Target],
        recipients: Sequence[str],
        *,
        smtputf8: bool,
        max_sessions: int,
        rcpt_per_session: int,
    ) -> ProbeOutcome:
        self.calls.append(
            ProbeCall(tuple(targets), tuple(recipients), smtputf8, max_sessions, rcpt_per_session)
        )
        results: dict[str, RcptOutcome] = {}
        for recipient in dict.fromkeys(recipients):
            answer = self.replies.get(recipient, self.others)
            outcome = RcptOutcome(recipient, target=targets[0], connections=self.sessions)
            if isinstance(answer, SmtpReply):
                outcome = dataclasses.replace(outcome, reply=answer)
            elif isinstance(answer, SessionFailure):
                outcome = dataclasses.replace(outcome, failure=answer)
            else:
                outcome = dataclasses.replace(answer, recipient=recipient, target=targets[0])
            results[recipient] = outcome
        return ProbeOutcome(results, sessions=self.sessions, connections=self.sessions)

    async def aclose(self) -> None:
        self.closed = True

    def asked(self) -> list[str]:
        """Every recipient asked, in order, over all calls."""
        return [r for call in self.calls for r in call.recipients]


def verifier(
    dns: FakeDns | None = None,
    prober: FakeProber | None = None,
    *,
    clock: FakeClock | None = None,
    limits: HostLimits = PLENTY,
    catch_all: dict[str, CatchAllFact] | None = None,
    hosts: dict[str, HostState] | None = None,
    **config: Any,
) -> Verifier:
    """A Verifier over fakes (DNS: example.test and others on ``MX``; all accepted)."""
    clock = clock or FakeClock()
    return Verifier(
        dns if dns is not None else served_by(MX, "example.test"),
        prober if prober is not None else FakeProber(),
        LISTS,
        VerifierConfig(politeness=Politeness(defaults=limits), allowed_tlds=("test",), **config),
        clock=clock,
        sleep=clock.sleep,
        rng=random.Random(7),
        catch_all=catch_all,
        hosts=hosts,
    )


def known(*domains: str, state: CatchAll = CatchAll.REJECTS_UNKNOWN) -> dict[str, CatchAllFact]:
    """Catch-all facts learnt just now for ``domains`` (so no probe is added)."""
    return {domain: CatchAllFact(state, NOW) for domain in domains}


def said(verdict: Verdict) -> str:
    return f"{verdict.status}/{verdict.reason}"


def emails(count: int, domain: str = "example.test") -> list[str]:
    return [f"user{i}@{domain}" for i in range(count)]


def parsed(v: Verifier, addresses: Sequence[str]) -> list[tuple[str, Address]]:
    items: list[tuple[str, Address]] = []
    for email in addresses:
        address = v.parse(email)
        assert isinstance(address, Address)
        items.append((email, address))
    return items


def accepting(*addresses: str) -> dict[str, Answer]:
    return dict.fromkeys(addresses, ACCEPT)


# --- routes: DNS answers, caching by TTL and by max_age --------------------------


async def test_a_route_is_cached_for_its_dns_ttl() -> None:
    """A second batch within the MX TTL asks DNS nothing."""
    dns, clock = served_by(MX, "example.test", ttl=600), FakeClock()
    v = verifier(dns, clock=clock)
    await v.verify("a@example.test")
    clock.now += 599
    await v.verify("b@example.test")
    assert dns.mx_asked == ["example.test"]


async def test_a_route_is_resolved_anew_once_its_ttl_passed() -> None:
    """After the TTL, the domain is looked up again."""
    dns, clock = served_by(MX, "example.test", ttl=600), FakeClock()
    v = verifier(dns, clock=clock)
    await v.verify("a@example.test")
    clock.now += 600
    await v.verify("b@example.test")
    assert dns.mx_asked == ["example.test", "example.test"]


async def test_max_age_zero_resolves_anew() -> None:
    """A request with max_age 0 trusts no cached route, however long its TTL."""
    dns, clock = served_by(MX, "example.test", ttl=3600), FakeClock()
    v = verifier(dns, clock=clock)
    await v.route("example.test")
    clock.now += 1
    await v.route("example.test", max_age=0)
    assert dns.mx_asked == ["example.test", "example.test"]


async def test_a_route_younger_than_max_age_is_reused() -> None:
    """A cached route no older than the request's max_age serves it."""
    dns, clock = served_by(MX, "example.test", ttl=3600), FakeClock()
    v = verifier(dns, clock=clock)
    await v.route("example.test")
    clock.now += 60
    await v.route("example.test", max_age=60)
    assert dns.mx_asked == ["example.test"]


async def test_a_route_older_than_max_age_is_resolved_anew() -> None:
    """A cached route older than the request's max_age is looked up again."""
    dns, clock = served_by(MX, "example.test", ttl=3600), FakeClock()
    v = verifier(dns, clock=clock)
    await v.route("example.test")
    clock.now += 61
    await v.route("example.test", max_age=60)
    assert dns.mx_asked == ["example.test", "example.test"]


async def test_a_null_mx_is_undeliverable_without_a_probe() -> None:
    """A lone null MX (RFC 7505) means no mail: undeliverable/null_mx, no SMTP."""
    dns = FakeDns(mx={"example.test": MxAnswer((MxRecord(0, ""),), ttl=3600)})
    prober = FakeProber()
    verdict = await verifier(dns, prober).verify("a@example.test")
    assert (said(verdict), prober.calls, dns.hosts_asked) == ("undeliverable/null_mx", [], [])


async def test_a_domain_without_mx_is_probed_at_its_own_address() -> None:
    """No MX records: the domain is its own mail host (RFC 5321 §5.1)."""
    dns = FakeDns(
        mx={"example.test": MxAnswer((), ttl=3600)},
        hosts={"example.test": HostAddresses((MX_IP,), ttl=3600)},
    )
    prober = FakeProber(accepting("a@example.test"))
    await verifier(dns, prober).verify("a@example.test")
    assert prober.calls[0].targets == (Target("example.test", MX_IP),)


async def test_a_nonexistent_domain_is_undeliverable() -> None:
    """NXDOMAIN for the domain is a fact: undeliverable/no_such_domain."""
    verdict = await verifier(FakeDns()).verify("a@example.test")
    assert said(verdict) == "undeliverable/no_such_domain"


async def test_mx_hosts_without_addresses_mean_no_mail_server() -> None:
    """Every exchange answered with no address: undeliverable/no_mail_server."""
    dns = FakeDns(mx={"example.test": mx_answer("mx1.example.test", "mx2.example.test")})
    verdict = await verifier(dns).verify("a@example.test")
    assert said(verdict) == "undeliverable/no_mail_server"


async def test_a_private_mail_host_is_not_probed() -> None:
    """An MX on a private address gives unknown/private_mx, and no connection."""
    dns, prober = served_by(MX, "example.test", ip="10.0.0.25"), FakeProber()
    verdict = await verifier(dns, prober).verify("a@example.test")
    assert (said(verdict), prober.calls) == ("unknown/private_mx", [])


async def test_a_private_mail_host_is_probed_when_allowed() -> None:
    """allow_private_mx lets the probe connect to a private address."""
    dns = served_by(MX, "example.test", ip="10.0.0.25")
    prober = FakeProber(accepting("a@example.test"))
    await verifier(dns, prober, allow_private_mx=True).verify("a@example.test")
    assert prober.calls[0].targets == (Target(MX, "10.0.0.25"),)


async def test_servfail_is_unknown_never_undeliverable() -> None:
    """Name servers that fail say nothing against the address: unknown/dns_error."""
    dns = FakeDns(mx={"example.test": DnsProblem.SERVFAIL})
    verdict = await verifier(dns).verify("a@example.test")
    assert said(verdict) == "unknown/dns_error"


async def test_a_dns_timeout_is_unknown() -> None:
    """An MX host lookup that timed out: unknown/timeout."""
    dns = FakeDns(mx={"example.test": mx_answer(MX)}, hosts={MX: DnsProblem.TIMEOUT})
    verdict = await verifier(dns).verify("a@example.test")
    assert said(verdict) == "unknown/timeout"


async def test_a_dns_failure_is_asked_again_after_30_seconds() -> None:
    """A SERVFAIL is remembered only briefly: the next batch after 30 s asks again."""
    dns, clock = FakeDns(mx={"example.test": DnsProblem.SERVFAIL}), FakeClock()
    v = verifier(dns, clock=clock)
    await v.verify("a@example.test")
    clock.now += 29
    await v.verify("b@example.test")
    clock.now += 1
    await v.verify("c@example.test")
    assert dns.mx_asked == ["example.test", "example.test"]


async def test_mx_lookups_stop_after_four_rounds() -> None:
    """With max_mx_hosts 2, at most 8 of 20 exchanges are looked up; the rest is
    unasked, so the domain is unknown/dns_error, not undeliverable."""
    names = [f"mx{i}.example.test" for i in range(20)]
    dns = FakeDns(mx={"example.test": mx_answer(*names)})
    verdict = await verifier(dns, max_mx_hosts=2).verify("a@example.test")
    assert (len(dns.hosts_asked), said(verdict)) == (8, "unknown/dns_error")


async def test_exchanges_after_the_round_that_found_an_address_are_not_looked_up() -> None:
    """Rounds stop once an exchange has an address."""
    dns = FakeDns(
        mx={"example.test": mx_answer("a.example.test", "b.example.test", "c.example.test")},
        hosts={"b.example.test": HostAddresses((MX_IP,), ttl=3600)},
    )
    await verifier(dns, max_mx_hosts=1).verify("a@example.test")
    assert dns.hosts_asked == ["a.example.test", "b.example.test"]


# --- groups: domains that share mail hosts share sessions ------------------------


async def test_domains_sharing_a_mail_host_share_a_probe() -> None:
    """Two domains on the same MX are asked about in one probe."""
    dns = served_by(MX, "one.test", "two.test")
    prober = FakeProber(accepting("a@one.test", "b@two.test"))
    await verifier(dns, prober).verify_many(["a@one.test", "b@two.test"])
    assert len(prober.calls) == 1
    assert {"a@one.test", "b@two.test"} <= set(prober.calls[0].recipients)


async def test_domains_on_different_mail_hosts_are_probed_apart() -> None:
    """Each set of mail hosts gets its own probe."""
    dns = FakeDns(
        mx={"one.test": mx_answer("mx.one.test"), "two.test": mx_answer("mx.two.test")},
        hosts={
            "mx.one.test": HostAddresses((MX_IP,), ttl=3600),
            "mx.two.test": HostAddresses(("93.184.216.35",), ttl=3600),
        },
    )
    prober = FakeProber(accepting("a@one.test", "b@two.test"))
    await verifier(dns, prober).verify_many(["a@one.test", "b@two.test"])
    assert sorted(call.targets[0].host for call in prober.calls) == ["mx.one.test", "mx.two.test"]


async def test_equal_preference_shuffles_do_not_split_a_group() -> None:
    """Domains with the same equal-preference MX pair share one probe, whichever
    order each domain's records were shuffled into."""
    domains = [f"d{i}.test" for i in range(8)]
    pair = mx_answer("mx1.shared.test", "mx2.shared.test", preference=10)
    dns = FakeDns(
        mx=dict.fromkeys(domains, pair),
        hosts={
            "mx1.shared.test": HostAddresses((MX_IP,), ttl=3600),
            "mx2.shared.test": HostAddresses(("93.184.216.35",), ttl=3600),
        },
    )
    prober = FakeProber()
    await verifier(dns, prober).verify_many([f"a@{d}" for d in domains])
    assert len(prober.calls) == 1


# --- catch-all: one random recipient per stale domain, learnt ---------------------


async def test_a_stale_domain_gets_one_random_recipient() -> None:
    """Three addresses of a domain never probed add one random recipient of it."""
    prober = FakeProber(accepting(*emails(3)))
    await verifier(prober=prober).verify_many(emails(3))
    extra = [r for r in prober.asked() if r not in emails(3)]
    assert len(extra) == 1 and extra[0].endswith("@example.test")


async def test_a_learnt_catch_all_state_is_not_probed_again() -> None:
    """Once the random recipient was answered, the next batch adds none."""
    prober = FakeProber(accepting("a@example.test", "b@example.test"))
    v = verifier(prober=prober)
    await v.verify("a@example.test")
    await v.verify("b@example.test")
    assert prober.calls[1].recipients == ("b@example.test",)


async def test_the_catch_all_state_is_probed_anew_after_catch_all_max_age() -> None:
    """A catch-all fact older than catch_all_max_age is learnt again."""
    clock = FakeClock()
    prober = FakeProber(accepting("a@example.test", "b@example.test"))
    v = verifier(prober=prober, clock=clock, catch_all_max_age=3600.0)
    await v.verify("a@example.test")
    clock.now += 3601
    await v.verify("b@example.test")
    assert len(prober.calls[1].recipients) == 2


async def test_max_age_zero_probes_the_catch_all_state_anew() -> None:
    """A request with max_age 0 re-learns even a catch-all fact from a second ago."""
    clock = FakeClock()
    prober = FakeProber(accepting("a@example.test"))
    v = verifier(prober=prober, clock=clock, catch_all=known("example.test"))
    clock.now += 1
    await v.probe(TARGETS, parsed(v, ["a@example.test"]), lambda _: None, max_age=0)
    assert len(prober.calls[0].recipients) == 2


async def test_a_catch_all_host_makes_an_accept_risky() -> None:
    """A host that accepts a random recipient proves nothing with its 250: risky/accept_all."""
    prober = FakeProber(accepting("a@example.test"), others=ACCEPT)
    verdict = await verifier(prober=prober).verify("a@example.test")
    assert said(verdict) == "risky/accept_all"


async def test_a_host_that_rejects_strangers_makes_an_accept_deliverable() -> None:
    """A host that refuses a random recipient means its 250 is a yes: deliverable/accepted."""
    prober = FakeProber(accepting("a@example.test"), others=NO_SUCH_USER)
    verdict = await verifier(prober=prober).verify("a@example.test")
    assert (said(verdict), verdict.evidence.catch_all) == (
        "deliverable/accepted",
        "rejects_unknown",
    )


async def test_a_catch_all_probe_without_an_rcpt_reply_teaches_nothing() -> None:
    """A random recipient that timed out leaves the state unknown, so it is asked again."""
    prober = FakeProber(
        accepting("a@example.test", "b@example.test"), others=SessionFailure.TIMEOUT
    )
    v = verifier(prober=prober)
    first = await v.verify("a@example.test")
    await v.verify("b@example.test")
    assert first.evidence.catch_all == "unknown"
    assert len(prober.calls[1].recipients) == 2


async def test_a_catch_all_reply_at_mail_from_teaches_nothing() -> None:
    """A reply to MAIL FROM says nothing of unknown recipients: the state stays unknown."""
    # To RCPT this would say "no such mailbox"; to MAIL FROM it is about our sender.
    at_mail = RcptOutcome(
        "", reply=SmtpReply(550, "Unrouteable address", "5.1.1"), phase=Phase.MAIL
    )
    prober = FakeProber(accepting("a@example.test"), others=at_mail)
    verdict = await verifier(prober=prober).verify("a@example.test")
    assert verdict.evidence.catch_all == "unknown"


# --- sessions and budgets ---------------------------------------------------------


async def test_a_session_carries_at_most_the_hosts_rcpt_per_session() -> None:
    """Five addresses with a host limit of 3 recipients per session go in 3 + 2."""
    limits = dataclasses.replace(PLENTY, rcpt_per_session=3)
    prober = FakeProber(accepting(*emails(5)))
    v = verifier(prober=prober, limits=limits, catch_all=known("example.test"))
    await v.verify_many(emails(5))
    assert [len(call.recipients) for call in prober.calls] == [3, 2]


async def test_the_prober_gets_the_hosts_rcpt_per_session() -> None:
    """The per-host rcpt_per_session (from politeness) is what the prober is told."""
    limits = dataclasses.replace(PLENTY, rcpt_per_session=7)
    prober = FakeProber(accepting("a@example.test"))
    await verifier(prober=prober, limits=limits).verify("a@example.test")
    assert prober.calls[0].rcpt_per_session == 7


async def test_a_groups_sessions_count_down_across_probes() -> None:
    """Each probe may open what max_sessions_per_group leaves (at least 1)."""
    limits = dataclasses.replace(PLENTY, rcpt_per_session=1)
    prober = FakeProber(accepting(*emails(4)), sessions=2)
    v = verifier(
        prober=prober, limits=limits, catch_all=known("example.test"), max_sessions_per_group=5
    )
    await v.verify_many(emails(4))
    assert [call.max_sessions for call in prober.calls] == [5, 3, 1, 1]


async def test_the_budget_grants_what_its_bucket_holds() -> None:
    """A bucket of 3 RCPTs carries 3 of 5 addresses; the other 2 are deferred."""
    limits = dataclasses.replace(PLENTY, rcpt_burst=3, rcpt_per_second=1.0)
    prober = FakeProber(accepting(*emails(5)))
    v = verifier(prober=prober, limits=limits, catch_all=known("example.test"))
    held: dict[str, float] = {}
    await v.probe(TARGETS, parsed(v, emails(5)), lambda _: None, defer=held.__setitem__)
    assert (prober.asked(), sorted(held)) == (emails(3), emails(5)[3:])


async def test_a_stale_domain_costs_two_rcpts_of_the_budget() -> None:
    """With 2 tokens, a never-probed domain's first address and its probe use both."""
    limits = dataclasses.replace(PLENTY, rcpt_burst=2, rcpt_per_second=1.0)
    prober = FakeProber(accepting(*emails(2)))
    v = verifier(prober=prober, limits=limits)
    held: dict[str, float] = {}
    await v.probe(TARGETS, parsed(v, emails(2)), lambda _: None, defer=held.__setitem__)
    assert (len(prober.asked()), list(held)) == (2, [emails(2)[1]])


async def test_held_addresses_come_back_at_the_hosts_pace() -> None:
    """At 1 RCPT/s after an emptied bucket, the n-th held address waits n seconds."""
    limits = dataclasses.replace(PLENTY, rcpt_burst=2, rcpt_per_second=1.0)
    v = verifier(limits=limits, catch_all=known("example.test"))
    held: dict[str, float] = {}
    await v.probe(TARGETS, parsed(v, emails(5)), lambda _: None, defer=held.__setitem__)
    assert list(held.values()) == pytest.approx([1 + SLACK, 2 + SLACK, 3 + SLACK])


async def test_a_later_batch_queues_behind_the_addresses_held_before() -> None:
    """Addresses held back by a second call wait after those of the first."""
    limits = dataclasses.replace(PLENTY, rcpt_burst=1, rcpt_per_second=1.0)
    v = verifier(limits=limits, catch_all=known("example.test"))
    held: dict[str, float] = {}
    await v.probe(TARGETS, parsed(v, emails(2)), lambda _: None, defer=held.__setitem__)
    await v.probe(TARGETS, parsed(v, ["late@example.test"]), lambda _: None, defer=held.__setitem__)
    assert held["late@example.test"] == pytest.approx(2 + SLACK)


async def test_without_defer_held_addresses_are_throttled() -> None:
    """An address the budget holds back with nowhere to defer it is unknown/throttled."""
    limits = dataclasses.replace(PLENTY, rcpt_burst=1, rcpt_per_second=1.0)
    v = verifier(limits=limits, catch_all=known("example.test"))
    verdicts: list[Verdict] = []
    await v.probe(TARGETS, parsed(v, emails(2)), verdicts.append)
    held = next(x for x in verdicts if x.email == emails(2)[1])
    assert (said(held), held.evidence.mail_host) == ("unknown/throttled", MX)


@pytest.mark.parametrize(("bulk", "probed"), [(False, 4), (True, 3)])
async def test_bulk_leaves_the_reserve_to_live_traffic(bulk: bool, probed: int) -> None:
    """Of a 4-RCPT bucket, bulk may take only what lies above its quarter kept for live."""
    limits = dataclasses.replace(PLENTY, rcpt_burst=4, rcpt_per_second=1.0)
    prober = FakeProber(accepting(*emails(4)))
    v = verifier(prober=prober, limits=limits, catch_all=known("example.test"))
    await v.probe(
        TARGETS, parsed(v, emails(4)), lambda _: None, defer=dict().__setitem__, bulk=bulk
    )
    assert len(prober.asked()) == probed


async def test_a_throttling_reply_halves_the_hosts_budget() -> None:
    """A 452 too-many-recipients cuts the host's AIMD factor by its decrease (0.5)."""
    hosts: dict[str, HostState] = {}
    prober = FakeProber({"a@example.test": SmtpReply(452, "Too many recipients", "4.5.3")})
    v = verifier(prober=prober, hosts=hosts, catch_all=known("example.test"))
    await v.verify("a@example.test")
    assert hosts[MX].factor == 0.5


# --- check: waiting inline for the budget ------------------------------------------


async def test_check_waits_for_the_budget_then_probes_the_rest() -> None:
    """verify_many sleeps until the host's budget allows the held addresses, then asks."""
    limits = dataclasses.replace(PLENTY, rcpt_burst=2, rcpt_per_second=1.0)
    clock = FakeClock()
    prober = FakeProber(accepting(*emails(4)))
    v = verifier(prober=prober, clock=clock, limits=limits, catch_all=known("example.test"))
    verdicts = await v.verify_many(emails(4))
    assert [said(x) for x in verdicts] == ["deliverable/accepted"] * 4
    assert clock.sleeps and prober.asked() == emails(4)


async def test_check_gives_up_on_addresses_beyond_max_inline_wait() -> None:
    """An address that would wait longer than max_inline_wait is unknown/throttled."""
    limits = dataclasses.replace(PLENTY, rcpt_burst=2, rcpt_per_second=1.0)
    prober = FakeProber(accepting(*emails(5)))
    v = verifier(prober=prober, limits=limits, catch_all=known("example.test"), max_inline_wait=1.5)
    verdicts = await v.verify_many(emails(5))
    # Two at once, the third after ~1 s; the fourth and fifth would wait 2 and 3 s.
    assert [said(x) for x in verdicts] == ["deliverable/accepted"] * 3 + ["unknown/throttled"] * 2


# --- verdicts: reply → status/reason, with evidence ----------------------------------


@pytest.mark.parametrize(
    ("answer", "verdict"),
    [
        (ACCEPT, "deliverable/accepted"),
        (SmtpReply(550, "No such user here", "5.1.1"), "undeliverable/mailbox_not_found"),
        (SmtpReply(550, "Mailbox disabled", "5.2.1"), "undeliverable/mailbox_disabled"),
        (SmtpReply(552, "Mailbox full", "5.2.2"), "risky/mailbox_full"),
        (SmtpReply(252, "Cannot VRFY user", "2.5.0"), "risky/cannot_verify"),
        (SmtpReply(451, "Greylisted, try again later", "4.7.1"), "unknown/greylisted"),
        (SmtpReply(452, "Too many recipients", "4.5.3"), "unknown/throttled"),
        (SmtpReply(554, "Blocked by policy", "5.7.1"), "unknown/blocked"),
        (SessionFailure.TIMEOUT, "unknown/timeout"),
        (SessionFailure.CONNECTION_FAILED, "unknown/connection_failed"),
        (SessionFailure.DISCONNECTED, "unknown/disconnected"),
    ],
)
async def test_the_hosts_answer_decides_the_verdict(answer: Answer, verdict: str) -> None:
    """A 5xx naming the mailbox is undeliverable; 4xx, blocks and failures are unknown."""
    prober = FakeProber({"a@example.test": answer})
    result = await verifier(prober=prober).verify("a@example.test")
    assert said(result) == verdict


async def test_the_verdict_carries_the_deciding_reply_as_evidence() -> None:
    """Evidence names the mail host, its address, the step and the reply."""
    prober = FakeProber({"a@example.test": NO_SUCH_USER})
    evidence = (await verifier(prober=prober).verify("a@example.test")).evidence
    assert (evidence.mail_host, evidence.mail_host_address, evidence.phase) == (MX, MX_IP, "rcpt")
    assert (evidence.reply_code, evidence.enhanced_status) == (550, "5.1.1")
    assert evidence.reply_text == "No such user here"


async def test_the_verdict_counts_the_sessions_used() -> None:
    """Evidence counts the SMTP sessions the probe used for the address."""
    prober = FakeProber(accepting("a@example.test"), sessions=2)
    verdict = await verifier(prober=prober).verify("a@example.test")
    assert verdict.evidence.attempts == 2


async def test_a_disposable_domain_that_accepts_is_risky() -> None:
    """An accepted address at a disposable domain is risky/disposable."""
    dns = served_by(MX, "throwaway.test")
    prober = FakeProber(accepting("a@throwaway.test"))
    verdict = await verifier(dns, prober).verify("a@throwaway.test")
    assert (said(verdict), verdict.flags.disposable) == ("risky/disposable", True)


async def test_bad_syntax_is_undeliverable_without_dns() -> None:
    """An address that does not parse is undeliverable/invalid_syntax; DNS is not asked."""
    dns = served_by(MX, "example.test")
    verdict = await verifier(dns).verify("not an address")
    assert (said(verdict), dns.mx_asked) == ("undeliverable/invalid_syntax", [])


async def test_a_repeated_address_is_asked_once_and_answered_each_time() -> None:
    """Duplicates share one RCPT and each gets the verdict, in input order."""
    prober = FakeProber(accepting("a@example.test", "b@example.test"))
    given = ["a@example.test", "b@example.test", "a@example.test"]
    verdicts = await verifier(prober=prober).verify_many(given)
    assert [x.email for x in verdicts] == given
    assert prober.asked().count("a@example.test") == 1


async def test_each_distinct_address_is_reported_once_as_it_is_known() -> None:
    """on_verdict is called once per distinct address."""
    seen: list[str] = []
    v = verifier(prober=FakeProber(accepting("a@example.test")))
    await v.verify_many(
        ["a@example.test", "a@example.test", "bad"], on_verdict=lambda x: seen.append(x.email)
    )
    assert sorted(seen) == ["a@example.test", "bad"]


async def test_a_utf8_local_part_asks_for_smtputf8() -> None:
    """A recipient with a UTF-8 local part needs SMTPUTF8 (RFC 6531)."""
    prober = FakeProber()
    await verifier(prober=prober).verify("jösé@example.test")
    assert prober.calls[0].smtputf8 is True


async def test_an_ascii_batch_does_not_ask_for_smtputf8() -> None:
    """Plain ASCII recipients need no SMTPUTF8."""
    prober = FakeProber()
    await verifier(prober=prober).verify("jose@example.test")
    assert prober.calls[0].smtputf8 is False


async def test_aclose_closes_the_prober() -> None:
    """Closing the Verifier closes the sessions its prober keeps idle."""
    prober = FakeProber()
    await verifier(prober=prober).aclose()
    assert prober.closed


async def test_a_probe_without_a_reply_reports_no_catch_all_state() -> None:
    """The catch-all state is evidence only beside a reply: a timeout reports it unknown."""
    prober = FakeProber({"a@example.test": SessionFailure.TIMEOUT})
    v = verifier(prober=prober, catch_all=known("example.test", state=CatchAll.ACCEPTS_ALL))
    verdict = await v.verify("a@example.test")
    assert (verdict.evidence.catch_all, verdict.flags.accept_all) == ("unknown", False)
