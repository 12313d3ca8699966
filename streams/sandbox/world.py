"""The sandbox world: name server, mail hosts, domains and expected verdicts.

A world is read from TOML (stdlib :mod:`tomllib`) by :func:`load_world`, or
built in code with :meth:`World.from_dict`. Every problem raises
:class:`~streams.errors.WorldError` with one sentence naming the file, the
entry and the fix; reading is done by :mod:`streams.sandbox.world_reader`.

The sandbox binds only to loopback, so every address in a world lies in
``127.0.0.0/8`` (AAAA records may only be ``::1``), except a domain's
``private_a``: RFC 5737 documentation addresses standing for private ones,
where nothing answers.
"""

from __future__ import annotations

import enum
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from streams.errors import WorldError

__all__ = [
    "STATUSES",
    "Behaviour",
    "DnsConfig",
    "Domain",
    "Expectation",
    "Host",
    "MxRef",
    "ProbeConfig",
    "SmtpConfig",
    "World",
    "WorldError",
    "load_world",
    "packaged_worlds",
]

#: A packaged world's name, as given to :func:`load_world` (``"hostile"``).
_WORLD_NAME = re.compile(r"[a-z][a-z0-9_-]*")

#: The verdict statuses an expectation may name.
STATUSES = frozenset({"deliverable", "undeliverable", "risky", "unknown"})


class Behaviour(enum.StrEnum):
    """How a sandbox mail host answers (see ``smtp_server``)."""

    STRICT = "strict"  # known users 250, others 550 5.1.1
    CATCH_ALL = "catch_all"  # every served RCPT 250
    GREYLIST = "greylist"  # 450 4.7.1 per new triplet until greylist_delay has passed
    RATE_LIMIT = "rate_limit"  # 421 over max_connections / max_rcpt per window
    TARPIT = "tarpit"  # sleeps before the banner and every reply
    POLICY_BLOCK = "policy_block"  # every RCPT 554 5.7.1 blocklisted
    NULL_SENDER_REFUSED = "null_sender_refused"  # MAIL FROM:<> 550 5.7.1
    CANNOT_VERIFY = "cannot_verify"  # every RCPT 252
    DISCONNECT_AFTER_RCPT = "disconnect_after_rcpt"  # hangs up after the first RCPT
    MULTILINE = "multiline"  # Gmail-style multi-line replies
    HELO_ONLY = "helo_only"  # refuses EHLO (502), so clients fall back to HELO
    DOWN = "down"  # nothing listens (connection refused)
    # Hostile peers (issue 5): what each sends is in sandbox.behaviours.
    ENDLESS_REPLY = "endless_reply"  # EHLO answered with "250-" lines forever
    LONG_LINE = "long_line"  # RCPT answered with a 1 MiB line before its CRLF
    BAD_BYTES = "bad_bytes"  # bytes that are not UTF-8 in banner and reply texts
    GARBAGE = "garbage"  # RCPT answered with binary bytes where the reply code belongs
    DRIP = "drip"  # every reply after the banner trickles one byte a second
    CLOSE_MID_REPLY = "close_mid_reply"  # RCPT answered with one "250-" line, then closes
    EARLY_REPLY = "early_reply"  # an extra "250" right after the banner: replies run ahead
    SILENT = "silent"  # accepts the connection and never sends a banner


@dataclass(frozen=True, slots=True)
class DnsConfig:
    """The authoritative name server of the world (UDP and TCP)."""

    address: str = "127.0.53.53"
    port: int = 10053
    ttl: int = 300  # TTL of every record unless a domain overrides it
    zones: tuple[str, ...] = ("test",)  # inside: NXDOMAIN for unknown names; outside: REFUSED
    negative_ttl: int = 60  # SOA minimum: how long resolvers cache NXDOMAIN/NODATA (RFC 2308 §5)


@dataclass(frozen=True, slots=True)
class SmtpConfig:
    """The SMTP side: one port, each host listening on its own address."""

    port: int = 10025
    idle_timeout: float = 30.0  # seconds without a complete command before 421 and close


@dataclass(frozen=True, slots=True)
class ProbeConfig:
    """The probe settings the world's expectations assume (used by the demo)."""

    mail_from: str = "probe@mxprobe.test"
    timeout: float = 10.0  # per SMTP phase


@dataclass(frozen=True, slots=True)
class Host:
    """One mail host: a name (given an A record), an address and a behaviour.

    Parameters that belong to one behaviour are ignored by the others (and
    the reader refuses them there, so a typo cannot go unnoticed).
    """

    name: str
    address: str
    behaviour: Behaviour = Behaviour.STRICT
    greylist_delay: float = 5.0  # greylist: seconds before a retried triplet passes
    max_connections: int | None = None  # rate_limit: per client IP per window; None = unlimited
    max_rcpt: int | None = None  # rate_limit: RCPTs per client IP per window; None = unlimited
    window: float = 60.0  # rate_limit: sliding window in seconds
    banner_delay: float = 0.0  # tarpit: seconds before the banner
    reply_delay: float = 0.0  # tarpit: seconds before every other reply
    reject_at: str = "mail"  # null_sender_refused: refuse <> at "mail", or at "rcpt" (Postfix)
    starttls: bool = False  # advertise STARTTLS with a self-signed certificate
    listen: bool = True  # False: nothing listens, like behaviour "down"

    @property
    def listens(self) -> bool:
        """Whether an SMTP server listens on this host's address."""
        return self.listen and self.behaviour is not Behaviour.DOWN


@dataclass(frozen=True, slots=True)
class MxRef:
    """One MX record of a domain, naming a host of the world."""

    preference: int
    host: str


@dataclass(frozen=True, slots=True)
class Domain:
    """One mail domain and how its name server and mail hosts treat it."""

    name: str
    mx: tuple[MxRef, ...] = ()  # empty: no MX records (implicit MX from A, RFC 5321 §5.1)
    a: tuple[str, ...] = ()
    aaaa: tuple[str, ...] = ()
    null_mx: bool = False  # publish "MX 0 ." (RFC 7505)
    txt: tuple[str, ...] = ()
    users: frozenset[str] = frozenset()  # known local parts, lower case
    served: bool = True  # False: its hosts answer RCPT with 554 5.7.1 relay access denied
    servfail: bool = False  # the name server answers SERVFAIL for this name
    drop: bool = False  # the name server never answers for this name
    ttl: int | None = None  # None: the [dns] ttl
    # Hostile DNS (issue 5). A CNAME name has no other records (RFC 1034 §3.6.2);
    # its users and "served" still say how its mail hosts treat its addresses.
    cname: str | None = None  # the name is an alias (CNAME) of this name
    # RFC 5737 documentation addresses standing for private ones: published as
    # A records, nothing listens there, a verifier must refuse to probe them.
    private_a: tuple[str, ...] = ()
    junk_mx: int = 0  # this many more MX records, after the listed ones, to junk-N.<name>

    def junk_exchanges(self) -> tuple[str, ...]:
        """The names of the junk MX records (none of them exists)."""
        return tuple(f"junk-{n}.{self.name}" for n in range(1, self.junk_mx + 1))

    def knows(self, local_part: str) -> bool:
        """Whether ``local_part`` is a known user (case-insensitive)."""
        return local_part.lower() in self.users


@dataclass(frozen=True, slots=True)
class Expectation:
    """The verdict a verifier should give for one address of the world."""

    address: str
    status: str  # one of STATUSES
    reason: str  # a stable reason code, e.g. "mailbox_not_found"
    behaviour: str = ""  # what the address demonstrates
    note: str = ""
    after_retry: str = ""  # "status/reason" once retried after a delay, or ""


@dataclass(frozen=True, slots=True)
class World:
    """A complete sandbox world; build it with :func:`load_world` or :meth:`from_dict`."""

    dns: DnsConfig = field(default_factory=DnsConfig)
    smtp: SmtpConfig = field(default_factory=SmtpConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    hosts: tuple[Host, ...] = ()
    domains: tuple[Domain, ...] = ()
    expectations: tuple[Expectation, ...] = ()
    disposable: tuple[str, ...] = ()  # domains the verifier is told are disposable
    source: str = "<world>"  # where the world was read from, for messages

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "<world>") -> World:
        """Build and validate a world from TOML-shaped data.

        Args:
            data: a mapping shaped like the world file (``dns``, ``smtp``,
                ``probe``, ``hosts``, ``domains``, ``expect``, ``signals``).
            source: the file or label named in error messages.

        Returns:
            The validated world.

        Raises:
            WorldError: a key is unknown, a value has the wrong type or
                range, a host is referenced but not defined, an address is
                outside 127.0.0.0/8 or used twice, or a name lies outside the
                zones.
        """
        # Imported here: the reader builds these dataclasses, so it imports this module.
        from streams.sandbox.world_reader import read_world

        return read_world(data, source=source)

    def host(self, name: str) -> Host:
        """Return the host called ``name``.

        Raises:
            KeyError: the world has no such host.
        """
        wanted = name.lower().rstrip(".")
        for host in self.hosts:
            if host.name == wanted:
                return host
        known = ", ".join(h.name for h in self.hosts) or "none"
        raise KeyError(f"The world has no host named {name!r}; its hosts are: {known}.")

    def domain(self, name: str) -> Domain | None:
        """Return the domain called ``name`` (case-insensitive), or None."""
        wanted = name.lower().rstrip(".")
        return next((d for d in self.domains if d.name == wanted), None)

    def serves(self, host: Host, domain: Domain) -> bool:
        """Whether ``host`` is a mail host of ``domain`` (served or not).

        A domain with MX records is hosted by its MX hosts (an MX may name a
        CNAME, RFC 2181 §10.3 notwithstanding); one without MX records (and no
        null MX) by the host its A records point at - the implicit MX of RFC
        5321 §5.1. An alias (CNAME) domain is hosted where its canonical name is.
        """
        # Asked for every RCPT: the plain cases first, the CNAME walks only when needed.
        canonical = domain if domain.cname is None else self._canonical(domain.name)
        if canonical is None or canonical.null_mx:
            return False
        if canonical.mx:
            if any(ref.host == host.name for ref in canonical.mx):
                return True
            return any(self.mail_host(ref.host) == host for ref in canonical.mx)
        return host.address in canonical.a

    def mail_host(self, name: str) -> Host | None:
        """The host that exchange ``name`` leads to, following the world's CNAMEs.

        None when it leads to no host: the name is unknown, its A records
        belong to no host, or its CNAME chain loops.
        """
        wanted = name.lower().rstrip(".")
        host = next((h for h in self.hosts if h.name == wanted), None)
        if host is not None:
            return host
        domain = self._canonical(wanted)
        if domain is None:
            return None
        return next((h for h in self.hosts if h.address in domain.a), None)

    def _canonical(self, name: str) -> Domain | None:
        """The domain at the end of ``name``'s CNAME chain; None if it is unknown or loops."""
        seen: set[str] = set()
        domain = self.domain(name)
        while domain is not None and domain.cname is not None:
            if domain.name in seen:
                return None
            seen.add(domain.name)
            host = next((h for h in self.hosts if h.name == domain.cname), None)
            if host is not None:  # an alias of a mail host: a domain of no other records
                return Domain(name=host.name, a=(host.address,))
            domain = self.domain(domain.cname)
        return domain


def load_world(path: str | Path | None = None) -> World:
    """Read and validate a world file.

    Args:
        path: the TOML file; or the name of a world packaged with mxprobe
            (``"hostile"`` for ``streams/sandbox/hostile.toml``, see
            :func:`packaged_worlds`) when no file of that name exists; or None
            for the packaged default world (``streams/sandbox/world.toml``).

    Returns:
        The validated world.

    Raises:
        WorldError: the file cannot be read, is not valid TOML, or describes
            an invalid world; the message names the file, entry and fix.
    """
    packaged = _packaged_file(path)
    if packaged is not None:
        source = f"streams/sandbox/{packaged} (packaged)"
        raw = resources.files("streams.sandbox").joinpath(packaged).read_bytes()
    else:
        source = str(path)
        try:
            raw = Path(source).read_bytes()
        except OSError as exc:
            reason = exc.strerror or str(exc)
            names = ", ".join(packaged_worlds())
            raise WorldError(
                f"{source}: cannot read the world file ({reason}); check the path, "
                f"name a packaged world ({names}), or omit it to use the packaged default world."
            ) from exc
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise WorldError(f"{source}: the world file is not UTF-8; save it as UTF-8.") from exc
    except tomllib.TOMLDecodeError as exc:
        raise WorldError(f"{source}: the world file is not valid TOML ({exc}); fix it.") from exc
    return World.from_dict(data, source=source)


def packaged_worlds() -> tuple[str, ...]:
    """The names of the worlds packaged with mxprobe (``world`` is the default)."""
    files = resources.files("streams.sandbox").iterdir()
    return tuple(sorted(f.name.removesuffix(".toml") for f in files if f.name.endswith(".toml")))


def _packaged_file(path: str | Path | None) -> str | None:
    """The packaged file ``path`` stands for, or None when it is a path to read."""
    if path is None:
        return "world.toml"
    name = str(path)
    if not _WORLD_NAME.fullmatch(name) or Path(name).exists():
        return None  # an existing file wins over a packaged world of the same name
    return f"{name}.toml" if name in packaged_worlds() else None
