"""The sandbox world: name server, mail hosts, domains and expected verdicts.

A world is read from TOML (stdlib :mod:`tomllib`) by :func:`load_world`, or
built in code with :meth:`World.from_dict`. Every problem raises
:class:`~streams.errors.WorldError` with one sentence naming the file, the
entry and the fix; reading is done by :mod:`streams.sandbox.world_reader`.
The parts of a world (hosts, domains…) are in :mod:`streams.sandbox.world_parts`
and are re-exported here.

The sandbox binds only to loopback, so every address in a world lies in
``127.0.0.0/8`` (AAAA records may only be ``::1``), except a domain's
``private_a``: RFC 5737 documentation addresses standing for private ones,
where nothing answers.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from streams.errors import WorldError
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
from streams.sandbox.world_reader import read_world

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
        return cls(**read_world(data, source=source))

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
