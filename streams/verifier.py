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
import random
import time
import weakref
from collections.abc import Callable, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from streams.adapters.resolver import HostAddresses, Resolver
from streams.adapters.smtp_probe import ProbeOutcome, RcptOutcome, SmtpProber, Target
from streams.core.address import Address, SyntaxProblem, parse_address
from streams.core.catchall import CatchAll, CatchAllFact, observe, random_local_part
from streams.core.lists import Signals, StaticLists
from streams.core.mx import DnsProblem, NullMx, implicit_mx, order_mx, usable_addresses
from streams.core.replies import Phase, classify
from streams.core.verdict import Facts, Verdict, decide

__all__ = ["DomainRoute", "Verifier", "VerifierConfig", "smtp_recipient"]

V = TypeVar("V")


@dataclass(frozen=True, slots=True)
class VerifierConfig:
    """What the verifier needs from Settings (beyond its adapters)."""

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


@dataclass(frozen=True, slots=True)
class DomainRoute:
    """Where mail for a domain goes: targets in order, or why there are none."""

    targets: tuple[Target, ...] = ()
    problem: DnsProblem | None = None
    expires_at: float = 0.0
    resolved_at: float = 0.0  # when DNS gave this answer (seconds since the epoch)


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
        """
        self._resolver = resolver
        self._prober = prober
        self._lists = lists
        self._config = config
        self._clock = clock
        self._rng = rng or random.Random()
        self._routes: MutableMapping[str, DomainRoute] = {} if routes is None else routes
        self._catch_all: MutableMapping[str, CatchAllFact] = {} if catch_all is None else catch_all
        # Locks live only while someone holds or awaits them.
        self._host_locks: weakref.WeakValueDictionary[str, asyncio.Lock] = (
            weakref.WeakValueDictionary()
        )
        self._sessions = asyncio.Semaphore(config.concurrency)
        self._dns = asyncio.Semaphore(config.dns_concurrency)
        self.sessions_opened = 0  # SMTP sessions with a successful EHLO, for reports

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
        await asyncio.gather(
            *(self.probe(group.targets, group.addresses, emit) for group in groups.values())
        )
        return [done[email] for email in emails]

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
            hosts = order_mx(answer.records, self._rng, limit=self._config.max_mx_hosts)
            if isinstance(hosts, NullMx):
                return DomainRoute(problem=DnsProblem.NULL_MX, expires_at=now + answer.ttl)
        else:
            hosts = implicit_mx(domain)  # RFC 5321 §5.1
        lookups = await asyncio.gather(*map(self._resolver.addresses, hosts))
        targets: list[Target] = []
        problems: list[DnsProblem] = []
        found_any = False
        ttl = answer.ttl
        for host, lookup in zip(hosts, lookups, strict=True):
            if isinstance(lookup, DnsProblem):
                problems.append(lookup)
                continue
            ttl = min(ttl, lookup.ttl) if lookup.addresses else ttl
            found_any = found_any or bool(lookup.addresses)
            targets.extend(Target(host, ip) for ip in self._usable(lookup))
        if targets:
            return DomainRoute(targets=tuple(targets), expires_at=now + ttl)
        if found_any:
            problem = DnsProblem.PRIVATE_MX
        elif DnsProblem.TIMEOUT in problems:
            problem = DnsProblem.TIMEOUT
        elif DnsProblem.SERVFAIL in problems:
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
    ) -> None:
        """Ask one route's mail host about ``addresses`` (as given, parsed).

        Sessions carry at most ``rcpt_per_session`` recipients; one random
        recipient per domain whose catch-all state is not fresh is added.
        ``emit`` gets one verdict per distinct address. ``max_age`` (seconds)
        lowers the catch-all freshness window for this call (0 = probe anew).
        """
        host = targets[0].host
        now = self._clock()
        if max_age is None or max_age > self._config.catch_all_max_age:
            max_age = self._config.catch_all_max_age
        recipients: list[str] = []
        for _, address in addresses:
            recipient = smtp_recipient(address)
            if recipient not in recipients:
                recipients.append(recipient)
        catch_all_probes: dict[str, str] = {}
        for domain in dict.fromkeys(a.ascii_domain for _, a in addresses):
            fact = self._catch_all.get(domain, CatchAllFact())
            if not fact.is_fresh(now, max_age):
                probe = f"{random_local_part(self._rng)}@{domain}"
                catch_all_probes[domain] = probe
                recipients.append(probe)
        smtputf8 = any(address.smtputf8 for _, address in addresses)
        size = self._config.rcpt_per_session
        results: dict[str, RcptOutcome] = {}
        budget = self._config.max_sessions_per_group
        lock = self._host_locks.get(host)
        if lock is None:
            lock = self._host_locks[host] = asyncio.Lock()
        async with lock:  # one session at a time per mail host
            for start in range(0, len(recipients), size):
                async with self._sessions:
                    outcome: ProbeOutcome = await self._prober.probe(
                        targets,
                        recipients[start : start + size],
                        smtputf8=smtputf8,
                        max_sessions=max(budget, 1),
                    )
                results.update(outcome.results)
                budget -= outcome.sessions
                self.sessions_opened += outcome.sessions
        now = self._clock()
        if len(self._catch_all) >= _CACHE_LIMIT:
            _prune(self._catch_all, lambda f: not f.is_fresh(now, max_age))
        for domain, probe in catch_all_probes.items():
            rcpt = results[probe]
            reply_class = classify(rcpt.reply, Phase.RCPT) if rcpt.reply is not None else None
            if rcpt.phase is not Phase.RCPT:
                reply_class = None
            previous = self._catch_all.get(domain, CatchAllFact())
            self._catch_all[domain] = observe(previous, reply_class, now)
        for email, address in addresses:
            rcpt = results[smtp_recipient(address)]
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
            emit(self._decide(address, facts))

    def _decide(self, address: Address, facts: Facts) -> Verdict:
        return decide(dataclasses.replace(facts, address=address, signals=self.signals(address)))


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
