"""Run a sandbox world: its name server and every listening mail host, on loopback.

Example::

    async with Sandbox(load_world(), dns_port=0, smtp_port=0) as sandbox:
        resolver.nameservers, resolver.port = [sandbox.world.dns.address], sandbox.dns_port
        ...  # probe hosts on sandbox.smtp_port
        assert sandbox.stats("mx.strict.test").data_commands == 0
"""

from __future__ import annotations

import asyncio
import errno
import socket
import ssl
import time
from collections.abc import Mapping
from types import TracebackType

from streams.errors import SandboxError
from streams.sandbox.dns_server import DnsServer
from streams.sandbox.smtp_server import SmtpHostServer
from streams.sandbox.stats import HostStats
from streams.sandbox.tls import server_context
from streams.sandbox.world import World

__all__ = ["Sandbox"]

_FREE_PORT_ATTEMPTS = 5


class Sandbox:
    """The sandbox mail world on loopback: one name server, one SMTP server per host.

    Args:
        world: the world to serve.
        dns_port: the name server's UDP and TCP port; None for the world's
            ``[dns] port``, 0 to pick a free one.
        smtp_port: the port every mail host listens on (each on its own
            address); None for the world's ``[smtp] port``, 0 to pick one
            that is free on every host address.

    Raises:
        SandboxError: a port is outside 0..65535.
    """

    def __init__(
        self, world: World, *, dns_port: int | None = None, smtp_port: int | None = None
    ) -> None:
        self._world = world
        self._wanted_dns_port = world.dns.port if dns_port is None else dns_port
        self._wanted_smtp_port = world.smtp.port if smtp_port is None else smtp_port
        for option, port in (("--dns-port", dns_port), ("--smtp-port", smtp_port)):
            if port is not None and not 0 <= port <= 65535:
                raise SandboxError(f"Port {port} is not a TCP/UDP port; give {option} 0..65535.")
        self._stats = {host.name: HostStats() for host in world.hosts}
        self._dns: DnsServer | None = None
        self._smtp: list[SmtpHostServer] = []
        self._idle_smtp_port = 0  # the port reported when no host listens
        self._started = False

    @property
    def world(self) -> World:
        """The world being served."""
        return self._world

    @property
    def dns_port(self) -> int:
        """The name server's port (before :meth:`start`: the port asked for, maybe 0)."""
        return self._dns.port if self._dns is not None else self._wanted_dns_port

    @property
    def dns_server(self) -> str:
        """The name server as ``address:port``, e.g. ``"127.0.53.53:10053"``."""
        return f"{self._world.dns.address}:{self.dns_port}"

    @property
    def smtp_port(self) -> int:
        """The SMTP port of every host (before :meth:`start`: the port asked for, maybe 0)."""
        if self._smtp:
            return self._smtp[0].port
        return self._idle_smtp_port or self._wanted_smtp_port

    def stats(self, host_name: str) -> HostStats:
        """The live counters of the host called ``host_name``.

        Raises:
            KeyError: the world has no such host.
        """
        return self._stats[self._world.host(host_name).name]

    def dns_queries(self) -> Mapping[tuple[str, str], int]:
        """A snapshot of the queries received per (name, type), e.g. ``("strict.test", "MX")``."""
        return dict(self._dns.queries) if self._dns is not None else {}

    def reset_stats(self) -> None:
        """Zero every host's counters and the DNS query counts."""
        for stats in self._stats.values():
            stats.reset()
        if self._dns is not None:
            self._dns.authority.queries.clear()
            self._dns.authority.truncated.clear()

    async def start(self) -> None:
        """Make the TLS certificates, then bind the name server and every mail host.

        Raises:
            SandboxError: an address or port cannot be bound, ``openssl`` is
                missing, or the sandbox was already started.
        """
        if self._started:
            raise SandboxError("The sandbox is already running; stop it before starting it again.")
        self._started = True
        try:
            tls = await self._tls_contexts()
            dns = DnsServer(self._world)
            try:
                await dns.start(self._wanted_dns_port)
            except OSError as exc:
                await dns.stop()
                address, port = self._world.dns.address, self._wanted_dns_port
                raise _bind_error(exc, "the name server", address, port, "--dns-port") from exc
            self._dns = dns
            await self._start_smtp(tls)
        except BaseException:
            await self.stop()
            raise

    async def _tls_contexts(self) -> dict[str, ssl.SSLContext]:
        names = [h.name for h in self._world.hosts if h.listens and h.starttls]
        contexts = await asyncio.gather(*(asyncio.to_thread(server_context, n) for n in names))
        return dict(zip(names, contexts, strict=True))

    async def _start_smtp(self, tls: Mapping[str, ssl.SSLContext]) -> None:
        hosts = [host for host in self._world.hosts if host.listens]
        wanted = self._wanted_smtp_port
        if not hosts:
            # Nothing listens, but clients still need a port number to be refused on.
            self._idle_smtp_port = wanted or _unused_port(self._world.dns.address)
            return
        attempts = _FREE_PORT_ATTEMPTS if wanted == 0 else 1
        for attempt in range(1, attempts + 1):
            servers = [
                SmtpHostServer(
                    host,
                    self._world,
                    tls=tls.get(host.name),
                    idle_timeout=self._world.smtp.idle_timeout,
                    clock=time.monotonic,
                    stats=self._stats[host.name],
                )
                for host in hosts
            ]
            port, address = wanted, ""
            try:
                for server in servers:
                    # With port 0 the first host picks a free port; the others must share it.
                    address = server.host.address
                    await server.start(port)
                    port = server.port
                self._smtp = servers
                return
            except OSError as exc:
                await asyncio.gather(*(server.stop() for server in servers))
                retry = wanted == 0 and exc.errno == errno.EADDRINUSE and attempt < attempts
                if not retry:
                    raise _bind_error(exc, "SMTP", address, port, "--smtp-port") from exc

    async def stop(self) -> None:
        """Close every server and every open connection; safe to call twice."""
        servers, self._smtp, self._idle_smtp_port = self._smtp, [], 0
        dns, self._dns = self._dns, None
        await asyncio.gather(*(server.stop() for server in servers))
        if dns is not None:
            await dns.stop()
        self._started = False

    async def __aenter__(self) -> Sandbox:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()


def _unused_port(address: str) -> int:
    """A TCP port free on ``address`` right now (for a world where no host listens)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((address, 0))
        return int(probe.getsockname()[1])


def _bind_error(exc: OSError, what: str, address: str, port: int, option: str) -> SandboxError:
    """Say which address:port could not be bound, why, and how to fix it."""
    where = f"{address}:{port}"
    if exc.errno == errno.EADDRINUSE:
        return SandboxError(
            f"Cannot start {what} on {where}: the port is already in use; stop the program "
            f"using it or choose another port with {option}."
        )
    if exc.errno == errno.EADDRNOTAVAIL:
        return SandboxError(
            f"Cannot start {what} on {where}: the address is not configured on this machine; "
            f"add it to the loopback interface (macOS: sudo ifconfig lo0 alias {address}) "
            "or change the address in the world file."
        )
    if exc.errno == errno.EACCES:
        return SandboxError(
            f"Cannot start {what} on {where}: binding that port needs privileges; "
            f"choose a port above 1023 with {option}."
        )
    reason = (exc.strerror or str(exc)).lower()
    return SandboxError(
        f"Cannot start {what} on {where} ({reason}); choose another port with {option} "
        "or check the address in the world file."
    )
