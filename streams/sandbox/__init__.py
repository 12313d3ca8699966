"""The sandbox mail world: an authoritative name server and SMTP servers on loopback.

Hosts with known behaviours (strict, catch-all, greylisting, rate limiting,
tarpit, policy block, dead MX, implicit MX, null MX, ...) let the demo, the
integration tests and users' own integrations exercise a verifier without
touching the Internet. Everything binds to 127.0.0.0/8 only.

    from streams.sandbox import Sandbox, load_world

    async with Sandbox(load_world(), dns_port=0, smtp_port=0) as sandbox:
        ...

Importing this package starts nothing.
"""

from streams.errors import SandboxError, WorldError
from streams.sandbox.runner import Sandbox
from streams.sandbox.stats import HostStats
from streams.sandbox.world import (
    Behaviour,
    DnsConfig,
    Domain,
    Expectation,
    Host,
    MxRef,
    ProbeConfig,
    SmtpConfig,
    World,
    load_world,
)

__all__ = [
    "Behaviour",
    "DnsConfig",
    "Domain",
    "Expectation",
    "Host",
    "HostStats",
    "MxRef",
    "ProbeConfig",
    "Sandbox",
    "SandboxError",
    "SmtpConfig",
    "World",
    "WorldError",
    "load_world",
]
