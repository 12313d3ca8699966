"""The sandbox world: name server, mail hosts, domains and expected verdicts.

A world is read from TOML (stdlib :mod:`tomllib`) by :func:`load_world`, or
built in code with :meth:`World.from_dict`. Every problem raises
:class:`~streams.errors.WorldError` with one sentence naming the file, the
entry and the fix; reading is done by :mod:`streams.sandbox.world_reader`.

The sandbox binds only to loopback, so every address in a world lies in
``127.0.0.0/8`` (AAAA records may only be ``::1``).
"""

from __future__ import annotations

import enum
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
]

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

        A domain with MX records is hosted by its MX hosts; one without MX
        records (and no null MX) by the host its A records point at - the
        implicit MX of RFC 5321 §5.1.
        """
        if domain.null_mx:
            return False
        if domain.mx:
            return any(ref.host == host.name for ref in domain.mx)
        return host.address in domain.a


def load_world(path: str | Path | None = None) -> World:
    """Read and validate a world file.

    Args:
        path: the TOML file, or None for the packaged default world
            (``streams/sandbox/world.toml``).

    Returns:
        The validated world.

    Raises:
        WorldError: the file cannot be read, is not valid TOML, or describes
            an invalid world; the message names the file, entry and fix.
    """
    if path is None:
        source = "streams/sandbox/world.toml (packaged)"
        raw = resources.files("streams.sandbox").joinpath("world.toml").read_bytes()
    else:
        source = str(path)
        try:
            raw = Path(path).read_bytes()
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise WorldError(
                f"{source}: cannot read the world file ({reason}); check the path "
                "or omit it to use the packaged default world."
            ) from exc
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise WorldError(f"{source}: the world file is not UTF-8; save it as UTF-8.") from exc
    except tomllib.TOMLDecodeError as exc:
        raise WorldError(f"{source}: the world file is not valid TOML ({exc}); fix it.") from exc
    return World.from_dict(data, source=source)
