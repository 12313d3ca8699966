"""The verification use case: addresses in, verdicts out. Knows no Faust.

``Verifier`` awaits the adapters (DNS, SMTP) and calls the pure core for
every decision. Every entry point (``mxprobe check``, the streaming pipeline)
goes through it, so there is one truth.

How a batch is verified:

1. parse every address (syntax errors are verdicts at once);
2. resolve each domain once: MX → ordered mail hosts (null MX, implicit MX)
   → addresses that may be probed; the domain route is cached for its DNS TTL;
3. group the domains by the mail hosts that serve them, and ask each group's
   host about all its recipients in as few SMTP sessions as possible (one
   group at a time per host, ``concurrency`` sessions overall), adding one
   random-local-part recipient per domain whose catch-all state is not fresh;
4. fold each reply, the domain's catch-all state and the static signals into
   a verdict with :func:`streams.core.verdict.decide`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import time
import weakref
from collections.abc import Callable, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from streams.adapters.resolver import Resolver
from streams.adapters.smtp_probe import SmtpProber
from streams.core.address import Address, SyntaxProblem, parse_address
from streams.core.catchall import CatchAll, CatchAllFact, observe, random_local_part
from streams.core.lists import Signals, StaticLists
from streams.core.mx import (
    DnsProblem,
    HostAddresses,
    NullMx,
    implicit_mx,
    order_mx,
    usable_addresses,
)
from streams.core.politeness import Politeness
from streams.core.probe import ProbeOutcome, RcptOutcome, SessionFailure
from streams.core.replies import Phase, ReplyClass, classify
from streams.core.route import DomainRoute, Target
from streams.core.throttle import (
    HostLimits,
    HostState,
    settle,
    signal_of,
    take,
    wait_for,
)
from streams.core.verdict import Facts, Verdict, decide

__all__ = ["Defer", "Verifier", "VerifierConfig", "smtp_recipient"]

log = logging.getLogger(__name__)

V = TypeVar("V")

#: ``defer(email, wait)``: the address was not probed, to stay within its mail
#: host's budget; it may be probed ``wait`` seconds from now.
Defer = Callable[[str, float], None]


@dataclass(frozen=True, slots=True)
class VerifierConfig:
    """What the verifier needs from Settings (beyond its adapters)."""

    politeness: Politeness = field(default_factory=Politeness)
    allow_private_mx: bool = False
    allowed_tlds: tuple[str, ...] = ()
    catch_all_max_age: float = 86_400.0
    concurrency: int = 20
    max_mx_hosts: int = 5
    rcpt_per_session: int = 50
    dns_concurrency: int = 50  # domain lookups in flight at once
    # SMTP sessions one group may open in a batch when its host keeps dropping
    # the connection (each must answer at least one more recipient).
    max_sessions_per_group: int = 20
    # The share of a host's RCPT bucket that bulk traffic may not use, so that
    # live requests find budget at once (issue 4: live traffic first).
    bulk_reserve: float = 0.25
    # `check` (no retry topics) waits in-process for a host's budget, at most
    # this long for one address; beyond, the address is unknown/throttled.
    max_inline_wait: float = 120.0


@dataclass(slots=True)
class _Group:
    """Recipients that share a route (and so a mail host and its sessions)."""

    targets: tuple[Target, ...]
    addresses: list[tuple[str, Address]] = field(default_factory=list)  # (as given, parsed)


def smtp_recipient(address: Address) -> str:
    """The form of ``address`` sent in RCPT TO (ASCII domain; UTF-8 local part if needed)."""
    return address.ascii_email or f"{address.local_part}@{address.ascii_domain}"


class Verifier:
    """Verifies addresses with DNS and SMTP probes."""

    def __init__(
        self,
        resolver: Resolver,
        prober: SmtpProber,
        lists: StaticLists,
        config: VerifierConfig,
        *,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        routes: MutableMapping[str, DomainRoute] | None = None,
        catch_all: MutableMapping[str, CatchAllFact] | None = None,
        hosts: MutableMapping[str, HostState] | None = None,
    ) -> None:
        """Wire the use case.

        Args:
            resolver: the DNS adapter.
            prober: the SMTP adapter.
            lists: the static lists for disposable/role/free signals.
            config: the verifier's settings.
            clock: seconds since the epoch (injected for tests).
            rng: randomness for MX tie-breaks and catch-all local parts.
            routes: where domain routes are kept (default: a dict; the pipeline
                passes its domain table).
            catch_all: where catch-all facts are kept, by ASCII domain (default: a
                dict; the pipeline passes its mail-host table).
            hosts: where each mail host's budget and health are kept, by host name
                (default: a dict; the pipeline passes its mail-host table).
        """
        self._resolver = resolver
        self._prober = prober
        self._lists = lists
        self._config = config
        self._clock = clock
        self._rng = rng or random.Random()
        self._routes: MutableMapping[str, DomainRoute] = {} if routes is None else routes
        self._catch_all: MutableMapping[str, CatchAllFact] = {} if catch_all is None else catch_all
        self._hosts: MutableMapping[str, HostState] = {} if hosts is None else hosts
        # Session slots per mail host live only while someone holds or awaits them.
        self._host_slots: weakref.WeakValueDictionary[str, asyncio.Semaphore] = (
            weakref.WeakValueDictionary()
        )
        self._sessions = asyncio.Semaphore(config.concurrency)
        # Due times of the addresses held back per (host, bulk), still to come back.
        self._booked: dict[tuple[str, bool], list[float]] = {}
        self._dns = asyncio.Semaphore(config.dns_concurrency)
        self.sessions_opened = 0  # SMTP sessions with a successful EHLO, for reports
        self.connections_opened = 0  # TCP connections attempted, for reports

    async def verify(self, email: str) -> Verdict:
        """Verify one address."""
        return (await self.verify_many([email]))[0]

    async def verify_many(
        self,
        emails: Sequence[str],
        *,
        on_verdict: Callable[[Verdict], None] | None = None,
    ) -> list[Verdict]:
        """Verify many addresses, sharing DNS lookups and SMTP sessions.

        Args:
            emails: addresses as given (any string; bad ones get a verdict too).
            on_verdict: called once per distinct address as soon as its verdict is known.

        Returns:
            One verdict per input, in input order.
        """
        done: dict[str, Verdict] = {}

        def emit(verdict: Verdict) -> None:
            done[verdict.email] = verdict
            if on_verdict is not None:
                on_verdict(verdict)

        parsed: list[tuple[str, Address]] = []
        for email in dict.fromkeys(emails):
            result = self.parse(email)
            if isinstance(result, Verdict):
                emit(result)
            else:
                parsed.append((email, result))

        domains = sorted({address.ascii_domain for _, address in parsed})
        routes = dict(zip(domains, await asyncio.gather(*map(self.route, domains)), strict=True))

        # Domains served by the same set of mail hosts share sessions, whatever
        # order their equal-preference MX records were shuffled into.
        groups: dict[frozenset[Target], _Group] = {}
        for email, address in parsed:
            route = routes[address.ascii_domain]
            if route.problem is not None:
                emit(self.dns_verdict(email, address, route.problem))
                continue
            key = frozenset(route.targets)
            group = groups.setdefault(key, _Group(targets=route.targets))
            group.addresses.append((email, address))
        await asyncio.gather(*(self._probe_patiently(group, emit) for group in groups.values()))
        return [done[email] for email in emails]

    async def _probe_patiently(self, group: _Group, emit: Callable[[Verdict], None]) -> None:
        """Probe a group, waiting in-process for its host's budget (``check`` has no
        retry topics); an address that would wait over ``max_inline_wait`` gets an
        unknown/throttled verdict."""
        pending = group.addresses
        started = self._clock()
        host = group.targets[0].host
        size = self._config.politeness.limits_for(host).rcpt_per_session
        while pending:
            held: dict[str, float] = {}
            await self.probe(group.targets, pending, emit, defer=held.__setitem__)
            elapsed = self._clock() - started
            waiting: list[tuple[str, Address]] = []
            for email, address in pending:
                if email not in held:
                    continue
                if elapsed + held[email] > self._config.max_inline_wait:
                    emit(self.held_verdict(email, address, host))
                else:
                    waiting.append((email, address))
            pending = waiting
            if pending:
                # Long enough for one session's worth of the held back.
                await asyncio.sleep(held[pending[min(len(pending), size) - 1][0]])

    async def aclose(self) -> None:
        """Close the SMTP sessions kept idle for the next batch (QUIT)."""
        await self._prober.aclose()

    def parse(self, email: str) -> Address | Verdict:
        """Parse ``email``; a syntax problem is already its (final) verdict."""
        result = parse_address(email, allowed_tlds=self._config.allowed_tlds)
        if isinstance(result, SyntaxProblem):
            return decide(Facts(email=email, syntax=result))
        return result

    def signals(self, address: Address) -> Signals:
        """The static signals of a parsed address (disposable, role, free, typo)."""
        return self._lists.signals(address.local_part, address.ascii_domain)

    def dns_verdict(self, email: str, address: Address, problem: DnsProblem) -> Verdict:
        """The verdict of an address whose domain has no mail host to probe."""
        return self._decide(address, Facts(email=email, dns=problem))

    def held_verdict(self, email: str, address: Address, host: str) -> Verdict:
        """The verdict of an address ``host``'s budget held back until its retries ran out."""
        facts = Facts(email=email, failure=SessionFailure.DEFERRED, mail_host=host)
        return self._decide(address, facts)

    async def route(self, domain: str, *, max_age: float | None = None) -> DomainRoute:
        """The cached route of ``domain`` (ASCII form), resolved anew once its TTL passed.

        Args:
            domain: the ASCII domain.
            max_age: also resolve anew when the cached answer is older than this
                many seconds (a request's ``max_age_s``; 0 = always fresh).
        """
        now = self._clock()
        cached = self._routes.get(domain)
        if (
            cached is not None
            and cached.expires_at > now
            and (max_age is None or now - cached.resolved_at <= max_age)
        ):
            return cached
        async with self._dns:  # a bounded number of lookups in flight
            route = dataclasses.replace(await self._resolve_route(domain, now), resolved_at=now)
        if len(self._routes) >= _CACHE_LIMIT:
            _prune(self._routes, lambda r: r.expires_at <= now)
        self._routes[domain] = route
        return route

    async def _resolve_route(self, domain: str, now: float) -> DomainRoute:
        answer = await self._resolver.mx(domain)
        if isinstance(answer, DnsProblem):
            return DomainRoute(problem=answer, expires_at=now + _problem_ttl(answer))
        if answer.records:
            ordered = order_mx(answer.records, self._rng)
            if isinstance(ordered, NullMx):
                return DomainRoute(problem=DnsProblem.NULL_MX, expires_at=now + answer.ttl)
        else:
            ordered = implicit_mx(domain)  # RFC 5321 §5.1
        # max_mx_hosts exchanges at a time, until one has an address: unresolvable
        # names first cannot hide the real host, and hundreds of MX records cost at
        # most _MX_LOOKUP_ROUNDS rounds of lookups.
        size = self._config.max_mx_hosts
        looked_up = ordered[: size * _MX_LOOKUP_ROUNDS]
        targets: list[Target] = []
        problems: list[DnsProblem] = []
        found_any = False
        ttl = answer.ttl
        for start in range(0, len(looked_up), size):
            hosts = looked_up[start : start + size]
            lookups = await asyncio.gather(*map(self._resolver.addresses, hosts))
            for host, lookup in zip(hosts, lookups, strict=True):
                if isinstance(lookup, DnsProblem):
                    problems.append(lookup)
                    continue
                ttl = min(ttl, lookup.ttl) if lookup.addresses else ttl
                found_any = found_any or bool(lookup.addresses)
                targets.extend(Target(host, ip) for ip in self._usable(lookup))
            if found_any:
                break
        if targets:
            return DomainRoute(targets=tuple(targets), expires_at=now + ttl)
        if found_any:
            problem = DnsProblem.PRIVATE_MX
        elif DnsProblem.TIMEOUT in problems:
            problem = DnsProblem.TIMEOUT
        elif DnsProblem.SERVFAIL in problems or len(looked_up) < len(ordered):
            # Exchanges were left unasked: not proof that none has an address.
            problem = DnsProblem.SERVFAIL
        else:
            problem = DnsProblem.NO_MAIL_SERVER
        return DomainRoute(problem=problem, expires_at=now + _problem_ttl(problem, ttl))

    def _usable(self, lookup: HostAddresses) -> tuple[str, ...]:
        return usable_addresses(lookup.addresses, allow_private=self._config.allow_private_mx)

    async def probe(
        self,
        targets: Sequence[Target],
        addresses: Sequence[tuple[str, Address]],
        emit: Callable[[Verdict], None],
        *,
        max_age: float | None = None,
        defer: Defer | None = None,
        bulk: bool = False,
    ) -> None:
        """Ask one route's mail host about ``addresses`` (as given, parsed), within its budget.

        Session by session, holding one of the host's session slots: the
        host's limits (:class:`~streams.core.throttle.HostLimits`, by provider)
        grant the next session's recipients from its token buckets right
        before it starts, so the host never sees more than its budget (tokens
        granted long before their RCPTs are sent would bunch up); a session
        carries at most its ``rcpt_per_session`` recipients; one random
        recipient per domain whose catch-all state is not fresh is added.
        ``emit`` gets one verdict per distinct address probed; the addresses
        the budget holds back go to ``defer`` with the seconds until they may
        be probed (without ``defer`` they get an unknown/throttled verdict).
        ``bulk`` requests leave the last ``bulk_reserve`` of the bucket to
        live ones. ``max_age`` (seconds) lowers the catch-all freshness window
        for this call (0 = probe anew).
        """
        host = targets[0].host
        limits = self._config.politeness.limits_for(host)
        if max_age is None or max_age > self._config.catch_all_max_age:
            max_age = self._config.catch_all_max_age
        reserve = self._config.bulk_reserve if bulk else 0.0
        pending = list(addresses)
        sessions_left = self._config.max_sessions_per_group
        slots = self._host_slots.get(host)
        if slots is None:
            slots = self._host_slots[host] = asyncio.Semaphore(limits.max_sessions)
        async with slots:  # at most max_sessions at once to this host
            while pending:
                async with self._sessions:  # at most `concurrency` in all
                    # Granted once the session can start, so that RCPTs are sent
                    # when their tokens are taken.
                    granted_at = self._clock()
                    chunk, probes = self._next_session(host, limits, pending, max_age, reserve)
                    if not chunk:
                        break
                    pending = pending[len(chunk) :]
                    recipients = list(dict.fromkeys(smtp_recipient(a) for _, a in chunk))
                    recipients += probes.values()
                    smtputf8 = any(address.smtputf8 for _, address in chunk)
                    outcome: ProbeOutcome = await self._prober.probe(
                        targets,
                        recipients,
                        smtputf8=smtputf8,
                        max_sessions=max(sessions_left, 1),
                        rcpt_per_session=limits.rcpt_per_session,
                    )
                sessions_left -= outcome.sessions
                self.sessions_opened += outcome.sessions
                self.connections_opened += outcome.connections
                results = outcome.results
                outcomes = [results[r] for r in recipients]
                self._settle(host, limits, outcomes, outcome.connections, granted_at)
                self._learn_catch_all(probes, results, max_age)
                for email, address in chunk:
                    emit(self._probed_verdict(email, address, results[smtp_recipient(address)]))
        if pending:
            self._hold_back(host, limits, pending, emit, defer, reserve=reserve, bulk=bulk)

    def _next_session(
        self,
        host: str,
        limits: HostLimits,
        pending: Sequence[tuple[str, Address]],
        max_age: float,
        reserve: float,
    ) -> tuple[list[tuple[str, Address]], dict[str, str]]:
        """The addresses of the next session that the host's budget grants now, and
        the catch-all probe to add for each of their domains that is not known yet."""
        now = self._clock()
        probes: dict[str, str] = {}
        costs: list[int] = []
        total = 0
        for _, address in pending:
            domain = address.ascii_domain
            stale = domain not in probes and not self._catch_all.get(
                domain, CatchAllFact()
            ).is_fresh(now, max_age)
            cost = 2 if stale else 1  # its RCPT, and its domain's catch-all probe
            if costs and total + cost > limits.rcpt_per_session:
                break
            if stale:
                probes[domain] = f"{random_local_part(self._rng)}@{domain}"
            costs.append(cost)
            total += cost
        granted, state = take(
            self._hosts.get(host, HostState()), limits, now, total, reserve=reserve
        )
        self._hosts[host] = state
        chosen, spent = 0, 0
        while chosen < len(costs) and spent + costs[chosen] <= granted:
            spent += costs[chosen]
            chosen += 1
        chunk = list(pending[:chosen])
        domains = {address.ascii_domain for _, address in chunk}
        return chunk, {domain: probe for domain, probe in probes.items() if domain in domains}

    def _hold_back(
        self,
        host: str,
        limits: HostLimits,
        held: Sequence[tuple[str, Address]],
        emit: Callable[[Verdict], None],
        defer: Defer | None,
        *,
        reserve: float,
        bulk: bool,
    ) -> None:
        """Give each address the budget holds back its wait (or, without ``defer``, its
        verdict). Waits count after the addresses already held back for this host, so
        that they come back at the host's pace instead of all at once."""
        now = self._clock()
        state = self._hosts.get(host, HostState())
        booked = [due for due in self._booked.get((host, bulk), ()) if due > now]
        for position, (email, address) in enumerate(held, start=len(booked) + 1):
            if defer is None:
                emit(self.held_verdict(email, address, host))
                continue
            wait = wait_for(state, limits, now, position, reserve=reserve)
            defer(email, wait)
            booked.append(now + wait)
        if booked:
            self._booked[(host, bulk)] = booked
        else:
            self._booked.pop((host, bulk), None)

    def _learn_catch_all(
        self, probes: dict[str, str], results: dict[str, RcptOutcome], max_age: float
    ) -> None:
        """Keep what each domain's random-recipient probe said about its catch-all state."""
        now = self._clock()
        if probes and len(self._catch_all) >= _CACHE_LIMIT:
            _prune(self._catch_all, lambda f: not f.is_fresh(now, max_age))
        for domain, probe in probes.items():
            rcpt = results[probe]
            reply_class = classify(rcpt.reply, Phase.RCPT) if rcpt.reply is not None else None
            if rcpt.phase is not Phase.RCPT:
                reply_class = None
            previous = self._catch_all.get(domain, CatchAllFact())
            self._catch_all[domain] = observe(previous, reply_class, now)

    def _probed_verdict(self, email: str, address: Address, rcpt: RcptOutcome) -> Verdict:
        fact = self._catch_all.get(address.ascii_domain, CatchAllFact())
        target = rcpt.target
        facts = Facts(
            email=email,
            reply=rcpt.reply,
            phase=rcpt.phase if rcpt.reply is not None else None,
            failure=rcpt.failure,
            mail_host=target.host if target else None,
            mail_host_address=target.address if target else None,
            catch_all=fact.state if rcpt.reply is not None else CatchAll.UNKNOWN,
            attempts=rcpt.connections,
            detail=rcpt.detail,
        )
        return self._decide(address, facts)

    def _settle(
        self,
        host: str,
        limits: HostLimits,
        outcomes: Sequence[RcptOutcome],
        connections: int,
        granted_at: float,
    ) -> None:
        """Charge the connections a probe opened and adapt the host's budget (AIMD)."""
        answers: list[tuple[ReplyClass | None, SessionFailure | None]] = []
        for rcpt in outcomes:
            phase = rcpt.phase if rcpt.reply is not None else Phase.RCPT
            reply_class = classify(rcpt.reply, phase) if rcpt.reply is not None else None
            answers.append((reply_class, rcpt.failure))
        now = self._clock()
        state, change = settle(
            self._hosts.get(host, HostState()),
            limits,
            now,
            connections=connections,
            signal=signal_of(answers),
            host=host,
            sent_since=granted_at,
        )
        self._hosts[host] = state
        if change is not None:
            log.info(
                "host.%s %s",
                change.kind,
                change.message,
                extra={"host": host, "factor": state.factor, "paused_until": state.paused_until},
            )

    def _decide(self, address: Address, facts: Facts) -> Verdict:
        return decide(dataclasses.replace(facts, address=address, signals=self.signals(address)))


#: Rounds of max_mx_hosts exchange lookups before a route gives up.
_MX_LOOKUP_ROUNDS = 4

#: Caches are pruned of expired entries when they reach this many domains.
_CACHE_LIMIT = 100_000


def _prune(store: MutableMapping[str, V], expired: Callable[[V], bool]) -> None:
    """Drop the expired entries of a cache (a dict or a table)."""
    for key in [key for key, value in store.items() if expired(value)]:
        del store[key]


def _problem_ttl(problem: DnsProblem, ttl: int = 300) -> float:
    """How long a DNS problem is remembered: facts for their TTL, failures briefly."""
    if problem in (DnsProblem.TIMEOUT, DnsProblem.SERVFAIL):
        return 30.0
    return float(ttl)
