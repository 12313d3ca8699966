"""Reading and validating world data (the TOML file's tables) into the fields of a World.

Every table is read through a :class:`~streams.sandbox.toml_table.TomlTable`,
which refuses unknown keys (suggesting the closest known one) and values of
the wrong type or range, so every message names the file, the entry and the
fix.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Collection, Mapping
from typing import Any, TypedDict

from streams.errors import WorldError
from streams.sandbox.toml_table import LOOPBACK, TomlTable
from streams.sandbox.world_parts import (
    STATUSES,
    Behaviour,
    DnsConfig,
    Domain,
    Expectation,
    Host,
    MxRef,
    ProbeConfig,
    SmtpConfig,
)

__all__ = ["WorldFields", "read_world"]


class WorldFields(TypedDict):
    """The fields of a validated :class:`~streams.sandbox.world.World`, by name."""

    dns: DnsConfig
    smtp: SmtpConfig
    probe: ProbeConfig
    hosts: tuple[Host, ...]
    domains: tuple[Domain, ...]
    expectations: tuple[Expectation, ...]
    disposable: tuple[str, ...]
    source: str


_REASON = re.compile(r"^[a-z][a-z0-9_]*$")

# Default instances: with slots, ``DnsConfig.port`` is a descriptor, not the default.
_DNS, _SMTP, _PROBE = DnsConfig(), SmtpConfig(), ProbeConfig()
_HOST = Host(name="", address="")

_TOP_KEYS = ("dns", "smtp", "probe", "hosts", "domains", "expect", "signals")
_DNS_KEYS = ("address", "port", "ttl", "zones", "negative_ttl")
_SMTP_KEYS = ("port", "idle_timeout")
_PROBE_KEYS = ("mail_from", "timeout")
_SIGNALS_KEYS = ("disposable",)
_MX_KEYS = ("preference", "host")
_EXPECT_KEYS = ("address", "status", "reason", "behaviour", "note", "after_retry")
_DOMAIN_KEYS = (
    *("name", "mx", "a", "aaaa", "null_mx", "txt", "users"),
    *("served", "servfail", "drop", "ttl"),
    *("cname", "private_a", "a_network", "junk_mx"),
)
# Stand-ins for private addresses: documentation only (RFC 5737), so that a
# probe that wrongly tries one reaches nobody.
_DOCUMENTATION = tuple(
    ipaddress.IPv4Network(net) for net in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24")
)
_MAX_A_NETWORK = 1024  # addresses: their A answer still fits one TCP message
_MAX_JUNK_MX = 1000  # records: their MX answer still fits one TCP message (RFC 1035 §4.2.2)
# Record keys a CNAME excludes (RFC 1034 §3.6.2: a CNAME has no other data).
_RECORD_KEYS = ("mx", "a", "aaaa", "null_mx", "txt", "private_a", "a_network", "junk_mx")
# Parameters that only mean something for one behaviour; the rest apply to all.
_BEHAVIOUR_PARAMS: Mapping[Behaviour, tuple[str, ...]] = {
    Behaviour.GREYLIST: ("greylist_delay",),
    Behaviour.RATE_LIMIT: ("max_connections", "max_rcpt", "window"),
    Behaviour.TARPIT: ("banner_delay", "reply_delay"),
    Behaviour.NULL_SENDER_REFUSED: ("reject_at",),
}
_HOST_KEYS = (
    *("name", "address", "behaviour", "starttls", "listen"),
    *(key for keys in _BEHAVIOUR_PARAMS.values() for key in keys),
)


def read_world(data: Mapping[str, Any], *, source: str) -> WorldFields:
    """Read and validate TOML-shaped ``data`` (see :meth:`World.from_dict`, which calls this).

    Raises:
        WorldError: the data does not describe a valid world.
    """
    top = TomlTable(data, source=source, where="top level", keys=_TOP_KEYS)
    dns = _read_dns(TomlTable(data.get("dns", {}), source=source, where="[dns]", keys=_DNS_KEYS))
    smtp_table = TomlTable(data.get("smtp", {}), source=source, where="[smtp]", keys=_SMTP_KEYS)
    smtp = SmtpConfig(
        port=smtp_table.integer("port", _SMTP.port, high=65535),
        idle_timeout=smtp_table.number("idle_timeout", _SMTP.idle_timeout, positive=True),
    )
    probe_table = TomlTable(data.get("probe", {}), source=source, where="[probe]", keys=_PROBE_KEYS)
    probe = ProbeConfig(
        mail_from=probe_table.text("mail_from", _PROBE.mail_from),
        timeout=probe_table.number("timeout", _PROBE.timeout, positive=True),
    )
    signals = TomlTable(
        data.get("signals", {}), source=source, where="[signals]", keys=_SIGNALS_KEYS
    )
    disposable = tuple(signals.name("disposable", item) for item in signals.texts("disposable"))
    hosts = tuple(_read_host(entry, source, i) for i, entry in enumerate(top.entries("hosts"), 1))
    domains = tuple(
        _read_domain(entry, source, i) for i, entry in enumerate(top.entries("domains"), 1)
    )
    expectations = tuple(
        _read_expectation(entry, source, i) for i, entry in enumerate(top.entries("expect"), 1)
    )
    world = WorldFields(
        dns=dns,
        smtp=smtp,
        probe=probe,
        hosts=hosts,
        domains=domains,
        expectations=expectations,
        disposable=disposable,
        source=source,
    )
    _check_world(world)
    return world


def _read_dns(table: TomlTable) -> DnsConfig:
    zones = tuple(table.name("zones", zone) for zone in table.texts("zones"))
    if "zones" in table.data and not zones:
        raise table.error("zones is empty", 'name at least one zone, e.g. zones = ["test"]')
    return DnsConfig(
        address=table.loopback("address") if "address" in table.data else _DNS.address,
        port=table.integer("port", _DNS.port, high=65535),
        ttl=table.integer("ttl", _DNS.ttl),
        zones=zones or _DNS.zones,
        negative_ttl=table.integer("negative_ttl", _DNS.negative_ttl),
    )


def _read_host(data: object, source: str, index: int) -> Host:
    table = TomlTable(
        data, source=source, where="[[hosts]]", keys=_HOST_KEYS, index=index, label="name"
    )
    name = table.name("name")
    raw_behaviour = table.text("behaviour", Behaviour.STRICT.value)
    try:
        behaviour = Behaviour(raw_behaviour)
    except ValueError:
        raise table.error(
            f"behaviour {raw_behaviour!r} is unknown",
            "use one of: " + ", ".join(b.value for b in Behaviour),
        ) from None
    for other, params in _BEHAVIOUR_PARAMS.items():
        for param in params:
            if param in table.data and other is not behaviour:
                raise table.error(
                    f"{param} applies only to behaviour {other.value!r}",
                    f'remove it or set behaviour = "{other.value}"',
                )
    return Host(
        name=name,
        address=table.loopback("address"),
        behaviour=behaviour,
        greylist_delay=table.number("greylist_delay", _HOST.greylist_delay),
        max_connections=table.optional_integer("max_connections"),
        max_rcpt=table.optional_integer("max_rcpt"),
        window=table.number("window", _HOST.window),
        banner_delay=table.number("banner_delay", _HOST.banner_delay),
        reply_delay=table.number("reply_delay", _HOST.reply_delay),
        reject_at=_reject_at(table),
        starttls=table.flag("starttls", _HOST.starttls),
        listen=table.flag("listen", _HOST.listen),
    )


def _reject_at(table: TomlTable) -> str:
    value = table.text("reject_at", _HOST.reject_at)
    if value not in ("mail", "rcpt"):
        raise table.error(
            f"reject_at {value!r} is unknown",
            'use "mail" (refuse MAIL FROM:<>) or "rcpt" (refuse at RCPT, as Postfix does)',
        )
    return value


def _read_domain(data: object, source: str, index: int) -> Domain:
    table = TomlTable(
        data, source=source, where="[[domains]]", keys=_DOMAIN_KEYS, index=index, label="name"
    )
    name = table.name("name")
    mx: list[MxRef] = []
    for number, entry in enumerate(table.entries("mx"), 1):
        ref = TomlTable(entry, source=source, where=f"{table.where} mx {number}", keys=_MX_KEYS)
        preference = ref.integer("preference", 10, high=65535)
        mx.append(MxRef(preference, ref.name("host")))
    aaaa = table.texts("aaaa")
    for text in aaaa:
        try:
            v6 = ipaddress.IPv6Address(text)
        except ValueError:
            v6 = None
        if v6 is None or not v6.is_loopback:
            raise table.error(f"aaaa {text!r} is not ::1", "the sandbox answers only loopback")
    users = table.texts("users")
    for user in users:
        if not user or "@" in user or any(c.isspace() for c in user):
            raise table.error(f"user {user!r} is not a local part", "write it without @ or spaces")
    txt = table.texts("txt")
    domain = Domain(
        name=name,
        mx=tuple(mx),
        a=(*(table.loopback("a", text) for text in table.texts("a")), *_a_network(table)),
        aaaa=("::1",) if aaaa else (),
        null_mx=table.flag("null_mx", False),
        txt=txt,
        users=frozenset(user.lower() for user in users),
        served=table.flag("served", True),
        servfail=table.flag("servfail", False),
        drop=table.flag("drop", False),
        ttl=table.optional_integer("ttl"),
        cname=table.name("cname") if "cname" in table.data else None,
        private_a=tuple(_documentation(table, text) for text in table.texts("private_a")),
        junk_mx=table.integer("junk_mx", 0, high=_MAX_JUNK_MX),
    )
    records = [key for key in _RECORD_KEYS if table.data.get(key)]
    if domain.cname is not None and records:
        raise table.error(
            f"cname is given with {', '.join(records)}",
            "a CNAME name has no other records (RFC 1034 §3.6.2): keep only the cname",
        )
    if domain.null_mx and domain.mx:
        raise table.error(
            "null_mx = true but mx entries are given",
            "a null MX must be the only MX record (RFC 7505 §3): remove the mx entries",
        )
    if domain.servfail and domain.drop:
        raise table.error("servfail and drop are both true", "choose one of them")
    return domain


def _documentation(table: TomlTable, text: str) -> str:
    """A ``private_a`` entry: an IPv4 documentation address (RFC 5737)."""
    try:
        address = ipaddress.IPv4Address(text.strip())
    except ValueError:
        address = None
    if address is None or not any(address in net for net in _DOCUMENTATION):
        raise table.error(
            f"private_a {text!r} is not an RFC 5737 documentation address",
            "use 192.0.2.x, 198.51.100.x or 203.0.113.x (they stand for private addresses "
            "and reach nobody if a probe wrongly tries them)",
        )
    return str(address)


def _a_network(table: TomlTable) -> tuple[str, ...]:
    """The A records of ``a_network``: every host address of a loopback network."""
    text = table.text("a_network", "")
    if not text:
        return ()
    try:
        network = ipaddress.IPv4Network(text.strip())
    except ValueError:
        problem = f"a_network {text!r} is not an IPv4 network"
        fix = 'write a network address and prefix, e.g. "127.0.54.0/23"'
        raise table.error(problem, fix) from None
    if not network.subnet_of(LOOPBACK) or network.num_addresses > _MAX_A_NETWORK:
        raise table.error(
            f"a_network {text!r} is not a loopback network of at most {_MAX_A_NETWORK} addresses",
            "use a prefix of /22 or longer inside 127.0.0.0/8, e.g. 127.0.54.0/23",
        )
    return tuple(str(address) for address in network.hosts())


def _read_expectation(data: object, source: str, index: int) -> Expectation:
    table = TomlTable(
        data, source=source, where="[[expect]]", keys=_EXPECT_KEYS, index=index, label="address"
    )
    address = table.text("address").strip()
    local, _, domain = address.rpartition("@")
    if not local or not domain:
        raise table.error(f"address {address!r} has no local part or domain", "use user@domain")
    domain = table.name("address", domain)
    status = table.text("status")
    reason = table.text("reason")
    after_retry = table.text("after_retry", "")
    checks = [("status", status, "reason", reason)]
    if after_retry:
        retry_status, _, retry_reason = after_retry.partition("/")
        checks.append(("after_retry status", retry_status, "after_retry reason", retry_reason))
    for status_key, one_status, reason_key, one_reason in checks:
        if one_status not in STATUSES:
            choices = ", ".join(sorted(STATUSES))
            problem = f"{status_key} {one_status!r} is unknown"
            raise table.error(problem, f"use one of: {choices} (after_retry: status/reason)")
        if not _REASON.match(one_reason):
            problem = f"{reason_key} {one_reason!r} is not a reason code"
            raise table.error(problem, "use a snake_case code such as mailbox_not_found")
    return Expectation(
        address=f"{local}@{domain}",
        status=status,
        reason=reason,
        behaviour=table.text("behaviour", ""),
        note=table.text("note", ""),
        after_retry=after_retry,
    )


def _check_world(world: WorldFields) -> None:
    """Cross-entry rules: unique names and addresses, references, zones."""
    source, dns = world["source"], world["dns"]

    def fail(where: str, problem: str, fix: str) -> WorldError:
        return WorldError(f"{source}: {where}: {problem}; {fix}.")

    # What World.domain() finds: a domain by its (lower case, no final dot) name.
    all_domains = {domain.name for domain in world["domains"]}
    name_servers = {f"ns.{zone}" for zone in dns.zones}
    owners: dict[str, str] = {dns.address: "[dns]"}
    host_names: set[str] = set()
    for host in world["hosts"]:
        where = f"[[hosts]] {host.name!r}"
        if host.name in host_names:
            raise fail(where, "the host is defined twice", "remove or rename one entry")
        host_names.add(host.name)
        if host.address in owners:
            raise fail(
                where,
                f"address {host.address} is already used by {owners[host.address]}",
                "give every host its own loopback address",
            )
        owners[host.address] = where
    domain_names: set[str] = set()
    for domain in world["domains"]:
        where = f"[[domains]] {domain.name!r}"
        if domain.name in domain_names:
            raise fail(where, "the domain is defined twice", "merge the two entries")
        domain_names.add(domain.name)
        for ref in domain.mx:
            if ref.host not in host_names and ref.host.lower().rstrip(".") not in all_domains:
                raise fail(
                    where,
                    f"MX host {ref.host!r} is referenced but not defined",
                    f'add a [[hosts]] entry with name = "{ref.host}" (or a [[domains]] '
                    "entry for a name with A records or a cname) or fix the name",
                )
        if domain.cname is not None and not _in_zones(domain.cname, dns.zones):
            raise fail(
                where,
                f"cname {domain.cname!r} is outside the zones {list(dns.zones)}",
                "point it at a name inside the zones (the sandbox answers only for them)",
            )
    for kind, names in (("hosts", host_names), ("domains", domain_names)):
        for name in sorted(names):
            if name in name_servers:
                raise fail(
                    f"[[{kind}]] {name!r}",
                    "the name is reserved for the sandbox's name server",
                    "rename the entry",
                )
            if not _in_zones(name, dns.zones):
                raise fail(
                    f"[[{kind}]] {name!r}",
                    f"the name is outside the zones {list(dns.zones)}",
                    "add its zone to [dns] zones or rename the entry",
                )


def _in_zones(name: str, zones: Collection[str]) -> bool:
    return any(name == zone or name.endswith("." + zone) for zone in zones)
