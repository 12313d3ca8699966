"""The verification use case: addresses in, verdicts out. Knows no Faust.

``Verifier`` awaits the adapters (DNS, SMTP: the Protocols of
:mod:`streams.ports`, so it imports no adapter) and calls the pure core for
every decision; :class:`~streams.limiter.HostLimiter` keeps each mail host's
session slots and budget. Every entry point (``mxprobe check``, the streaming
pipeline) goes through it, so there is one truth.

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
import random
import time
from collections.abc import Callable, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from streams.core.address import Address, SyntaxProblem, parse_address
from streams.core.catchall import (
    CatchAll,
    CatchAllFact,
    freshness_window,
    learn,
    random_local_part,
)
from streams.core.host_state import HostLimits, HostState
from streams.core.lists import Signals, StaticLists
from streams.core.mx import DnsProblem
from streams.core.pacing import plan_session, wait_inline
from streams.core.politeness import Politeness
from streams.core.probe import ProbeOutcome, RcptOutcome, SessionFailure
from streams.core.route import DomainRoute, RouteResolution, Target
from streams.core.verdict import Facts, Verdict, decide
from streams.limiter import HostLimiter
from streams.ports import Clock, MxResolver, Prober, Sleep

__all__ = ["Defer", "Verifier", "VerifierConfig", "smtp_recipient"]

V = TypeVar("V")

#: ``defer(email, wait)``: the address was not probed, to stay within its mail
#: host's budget; it may be probed ``wait`` seconds from now.
Defer = Callable[[str, float], None]


@dataclass(frozen=True, slots=True)
class VerifierConfig:
    """What the verifier needs from Settings (beyond its adapters).

    Recipients per session are the mail host's (``politeness`` gives each
    host its :class:`~streams.core.host_state.HostLimits`), not a setting here.
    """

    politeness: Politeness = field(default_factory=Politeness)
    allow_private_mx: bool = False
    allowed_tlds: tuple[str, ...] = ()
    catch_all_max_age: float = 86_400.0
    concurrency: int = 20
    max_mx_hosts: int = 5
    dns_concurrency: int = 50  # domain lookups in flight at once
    # SMTP sessions one group may open in a batch when its host keeps dropping
    # the connection (each must answer at least one more recipient).
    max_sessions_per_group: int = 20
    # The share of a host's RCPT bucket that bulk traffic may not use, so that
    # live requests find budget at once: bulk takes only the tokens above it.
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
        resolver: MxResolver,
        prober: Prober,
        lists: StaticLists,
        config: VerifierConfig,
        *,
        clock: Clock = time.time,
        sleep: Sleep = asyncio.sleep,
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
            sleep: waits while ``verify_many`` holds addresses for their host's
                budget (injected for tests).
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
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._routes: MutableMapping[str, DomainRoute] = {} if routes is None else routes
        self._catch_all: MutableMapping[str, CatchAllFact] = {} if catch_all is None else catch_all
        self._limiter = HostLimiter(
            config.politeness,
            {} if hosts is None else hosts,
            clock,
            concurrency=config.concurrency,
        )
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
        size = self._limiter.limits(host).rcpt_per_session
        while pending:
            held: dict[str, float] = {}
            await self.probe(group.targets, pending, emit, defer=held.__setitem__)
            pending = [(email, address) for email, address in pending if email in held]
            plan = wait_inline(
                [held[email] for email, _ in pending],
                elapsed=self._clock() - started,
                max_wait=self._config.max_inline_wait,
                session_size=size,
            )
            waiting: list[tuple[str, Address]] = []
            for (email, address), waits in zip(pending, plan.waiting, strict=True):
                if waits:
                    waiting.append((email, address))
                else:
                    emit(self.held_verdict(email, address, host))
            pending = waiting
            if pending:
                await self._sleep(plan.sleep)

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
        if cached is not None and cached.usable(now, max_age):
            return cached
        async with self._dns:  # a bounded number of lookups in flight
            route = dataclasses.replace(await self._resolve_route(domain, now), resolved_at=now)
        if len(self._routes) >= _CACHE_LIMIT:
            _prune(self._routes, lambda r: r.expires_at <= now)
        self._routes[domain] = route
        return route

    async def _resolve_route(self, domain: str, now: float) -> DomainRoute:
        resolution = RouteResolution(
            domain,
            await self._resolver.mx(domain),
            self._rng,
            max_mx_hosts=self._config.max_mx_hosts,
            allow_private=self._config.allow_private_mx,
        )
        while hosts := resolution.next_hosts():
            resolution.feed(await asyncio.gather(*map(self._resolver.addresses, hosts)))
        return resolution.route(now)

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
        host's limits (:class:`~streams.core.host_state.HostLimits`, by provider)
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
        limits = self._limiter.limits(host)
        max_age = freshness_window(max_age, self._config.catch_all_max_age)
        reserve = self._config.bulk_reserve if bulk else 0.0
        pending = list(addresses)
        sessions_left = self._config.max_sessions_per_group
        async with self._limiter.slots(host):  # at most max_sessions at once to this host
            while pending:
                async with self._limiter.sessions:  # at most `concurrency` in all
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
                self._limiter.settle(
                    host, outcomes, connections=outcome.connections, granted_at=granted_at
                )
                self._learn_catch_all(probes, results, max_age)
                for email, address in chunk:
                    emit(self._probed_verdict(email, address, results[smtp_recipient(address)]))
        if not pending:
            return
        count = 0 if defer is None else len(pending)
        waits = self._limiter.hold_back(host, count, bulk=bulk, reserve=reserve)
        if defer is None:
            for email, address in pending:
                emit(self.held_verdict(email, address, host))
        else:
            for (email, _), wait in zip(pending, waits, strict=True):
                defer(email, wait)

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

        def stale(domain: str) -> bool:
            return not self._catch_all.get(domain, CatchAllFact()).is_fresh(now, max_age)

        plan = plan_session(
            (address.ascii_domain for _, address in pending),
            stale,
            rcpt_per_session=limits.rcpt_per_session,
        )
        # A random local part for every probe the plan asks for, granted or not.
        probes = {domain: f"{random_local_part(self._rng)}@{domain}" for domain in plan.probed}
        plan = self._limiter.grant(host, plan, now=now, reserve=reserve)
        return list(pending[: plan.size]), {domain: probes[domain] for domain in plan.probed}

    def _learn_catch_all(
        self, probes: dict[str, str], results: dict[str, RcptOutcome], max_age: float
    ) -> None:
        """Keep what each domain's random-recipient probe said about its catch-all state."""
        now = self._clock()
        if probes and len(self._catch_all) >= _CACHE_LIMIT:
            _prune(self._catch_all, lambda f: not f.is_fresh(now, max_age))
        for domain, probe in probes.items():
            previous = self._catch_all.get(domain, CatchAllFact())
            self._catch_all[domain] = learn(previous, results[probe], now)

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

    def _decide(self, address: Address, facts: Facts) -> Verdict:
        return decide(dataclasses.replace(facts, address=address, signals=self.signals(address)))


#: Caches are pruned of expired entries when they reach this many domains.
_CACHE_LIMIT = 100_000


def _prune(store: MutableMapping[str, V], expired: Callable[[V], bool]) -> None:
    """Drop the expired entries of a cache (a dict or a table)."""
    for key in [key for key, value in store.items() if expired(value)]:
        del store[key]
