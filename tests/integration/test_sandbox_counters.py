"""The sandbox SMTP server feeds its HostStats: QUITs, 421 replies, RCPT and connection times.

Real servers on loopback (free port) in the test's event loop, driven by a raw
client so every command is exactly what the test sends.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from streams.sandbox import HostStats, Sandbox, World

pytestmark = pytest.mark.integration

HOST = "127.0.53.125"


def one_host_world(behaviour: str = "strict", *, idle: float = 30.0, **host: Any) -> World:
    """mx.count.test serving count.test (alice)."""
    mx = [{"preference": 10, "host": "mx.count.test"}]
    return World.from_dict(
        {
            "smtp": {"idle_timeout": idle},
            "hosts": [{"name": "mx.count.test", "address": HOST, "behaviour": behaviour, **host}],
            "domains": [{"name": "count.test", "mx": mx, "users": ["alice"]}],
        }
    )


class Client:
    """A raw SMTP client: one command line in, the reply's last line out."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def reply(self) -> str:
        """The last line of the next reply; "" when the server closed the connection."""
        async with asyncio.timeout(5.0):
            while True:
                line = (await self.reader.readline()).decode()
                if not line or line[3:4] != "-":
                    return line.rstrip("\r\n")

    async def send(self, command: str) -> str:
        self.writer.write(command.encode() + b"\r\n")
        await self.writer.drain()
        return await self.reply()


@contextlib.asynccontextmanager
async def serving(world: World) -> AsyncIterator[tuple[Sandbox, HostStats]]:
    async with Sandbox(world, dns_port=0, smtp_port=0) as sandbox:
        yield sandbox, sandbox.stats("mx.count.test")


@contextlib.asynccontextmanager
async def connected(sandbox: Sandbox) -> AsyncIterator[Client]:
    reader, writer = await asyncio.open_connection(HOST, sandbox.smtp_port)
    try:
        yield Client(reader, writer)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def test_quit_is_counted() -> None:
    """Each QUIT received counts once, answered 221."""
    async with serving(one_host_world()) as (sandbox, stats):
        for _ in range(2):
            async with connected(sandbox) as client:
                await client.reply()
                assert (await client.send("QUIT")).startswith("221 ")
        assert stats.quits == 2


@pytest.mark.parametrize(
    ("world", "commands"),
    [
        (one_host_world("rate_limit", max_connections=0), []),
        (one_host_world("rate_limit", max_rcpt=0), ["EHLO c.test", "MAIL FROM:<>"]),
        (one_host_world(idle=0.2), ["EHLO c.test"]),
    ],
    ids=["at the greeting", "at RCPT", "on an idle timeout"],
)
async def test_421_replies_are_counted(world: World, commands: list[str]) -> None:
    """A 421 counts wherever the host sends it; the test waits for it and sees it sent."""
    async with serving(world) as (sandbox, stats), connected(sandbox) as client:
        banner = await client.reply()
        for command in commands:
            assert (await client.send(command)).startswith("250")
        last = banner if not commands else await client.send("RCPT TO:<alice@count.test>")
        if not last.startswith("421"):  # the idle timeout: the host speaks first
            last = await client.reply()
        assert last.startswith("421 ")
        assert stats.replies_421 == 1


async def test_rcpt_and_connection_times() -> None:
    """Each RCPT and each connection is stamped with the server's monotonic clock."""
    async with serving(one_host_world()) as (sandbox, stats):
        before = time.monotonic()
        async with connected(sandbox) as client:
            await client.reply()
            await client.send("EHLO c.test")
            await client.send("MAIL FROM:<>")
            for local in ("alice", "bob", "carol"):
                await client.send(f"RCPT TO:<{local}@count.test>")
        after = time.monotonic()
        assert len(stats.connection_times) == 1 and len(stats.rcpt_times) == 3
        assert before <= stats.connection_times[0] <= stats.rcpt_times[0]
        assert stats.rcpt_times == sorted(stats.rcpt_times) and stats.rcpt_times[-1] <= after
        assert stats.peak("rcpt_times", after - before + 1.0) == 3
        stats.reset()
        assert stats.rcpt_times == stats.connection_times == []
