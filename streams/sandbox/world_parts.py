"""The parts a sandbox world is made of: its servers, mail hosts, domains and expectations.

Plain frozen values. :mod:`streams.sandbox.world_reader` reads them from a
world file's tables; :class:`~streams.sandbox.world.World` holds them.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

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
    # Hostile peers: each breaks SMTP in one way (what it sends: sandbox.behaviours).
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
    # Hostile DNS. A CNAME name has no other records (RFC 1034 §3.6.2);
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
