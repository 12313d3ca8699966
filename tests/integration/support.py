"""Run a sandbox mail world in a background thread for integration tests.

The sandbox gets its own event loop in its own thread, so tests can drive
mxprobe in theirs (or in a subprocess, for the CLI) exactly as a user would.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

from broker import RunningBroker

from streams.embedded import EmbeddedBroker
from streams.pipeline.inputs import InputRequest
from streams.sandbox import Sandbox, World
from streams.settings import Settings, load_settings

T = TypeVar("T")

#: Default-world domains whose hosts answer promptly (no tarpit, greylisting or drops).
FAST_DOMAINS = (
    "strict.test",
    "catchall.test",
    "multiline.test",
    "failover.test",
    "implicit.test",
    "nullmx.test",
    "blocked.test",
    "cannotverify.test",
    "tls.test",
    "oldhelo.test",
    "nosuchdomain.test",
    "nomail.test",
    "servfail.test",
    "norelay.test",
    "throwaway.test",
    "nullsender.test",
    "ratelimited.test",
    "deadmx.test",
)


class SandboxThread:
    """A started :class:`Sandbox` on free ports, served from a daemon thread."""

    def __init__(self, world: World) -> None:
        self.sandbox = Sandbox(world, dns_port=0, smtp_port=0)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="sandbox", daemon=True)
        self._ready = threading.Event()
        self._error: BaseException | None = None

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self.sandbox.start())
        except BaseException as exc:  # reported to the starting thread
            self._error = exc
            self._ready.set()
            self._loop.close()
            return
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(self.sandbox.stop())
        self._loop.run_until_complete(self._loop.shutdown_asyncgens())
        self._loop.close()

    def __enter__(self) -> SandboxThread:
        self._thread.start()
        self._ready.wait(timeout=30)
        if self._error is not None:
            raise self._error
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)

    def call(self, func: Callable[[], T]) -> T:
        """Run ``func`` on the sandbox's loop (for reading or resetting its counters)."""
        future = asyncio.run_coroutine_threadsafe(_call(func), self._loop)
        return future.result(timeout=10)

    def env(self) -> dict[str, str]:
        """MXPROBE_* variables that point mxprobe at this sandbox."""
        return {
            "MXPROBE_DNS_SERVER": self.sandbox.dns_server,
            "MXPROBE_SMTP_PORT": str(self.sandbox.smtp_port),
            "MXPROBE_ALLOW_PRIVATE_MX": "1",
            "MXPROBE_ALLOW_TLD": "test",
            "MXPROBE_HELO": "probe.mxprobe.test",
            "MXPROBE_MAIL_FROM": "probe@mxprobe.test",
            "MXPROBE_TIMEOUT": "2",
            **{f"MXPROBE_{key.upper()}": value for key, value in FAST_POLITENESS_ENV.items()},
        }

    def app_env(self, broker: EmbeddedBroker | RunningBroker, app: str) -> dict[str, str]:
        """:meth:`env` on ``broker``, in the topics of app id ``app`` (no other test's)."""
        return {
            **self.env(),
            **{f"MXPROBE_{key.upper()}": value for key, value in app_names(broker, app).items()},
        }

    def pipeline_settings(
        self, broker: EmbeddedBroker | RunningBroker, *, app: str | None = None, **extra: Any
    ) -> Settings:
        """:meth:`settings` for one pipeline test: its own app id and topics on ``broker``
        (those of app id ``app``, as :meth:`app_env` gives a worker process, if given)."""
        names = app_names(broker, app or f"t{uuid.uuid4().hex[:10]}")
        return self.settings(**{**names, "partitions": 2, **extra})

    def settings(self, **overrides: Any) -> Settings:
        """Settings that reach this sandbox (2 s timeouts), with ``overrides`` on top."""
        values: dict[str, Any] = {
            "dns_server": (self.sandbox.dns_server,),
            "smtp_port": self.sandbox.smtp_port,
            "allow_private_mx": True,
            "allow_tld": ("test",),
            "helo": "probe.mxprobe.test",
            "mail_from": "probe@mxprobe.test",
            "timeout": 2.0,
            **FAST_POLITENESS,
        }
        values.update(overrides)
        return load_settings(**values)


#: Budgets far above what the tests send, and retry tiers of a second or two:
#: tests of politeness and retries set their own.
FAST_POLITENESS: dict[str, Any] = {
    "host_rcpt_per_second": 10_000.0,
    "host_rcpt_burst": 10_000,
    "host_connections_per_minute": 60_000.0,
    "host_max_sessions": 4,
    "retry_delays": (1.0, 2.0),
    "retry_attempts": "timeout=1,dns=1,throttled=1,temporary=1",
}
FAST_POLITENESS_ENV: dict[str, str] = {
    "host_rcpt_per_second": "10000",
    "host_rcpt_burst": "10000",
    "host_connections_per_minute": "60000",
    "host_max_sessions": "4",
    "retry_delays": "1,2",
    "retry_attempts": "timeout=1,dns=1,throttled=1,temporary=1",
}


def kind_of(broker: EmbeddedBroker | RunningBroker) -> str:
    """``tansu`` or ``kafka``, as MXPROBE_BROKER_KIND names the broker."""
    return "tansu" if isinstance(broker, EmbeddedBroker) else broker.kind


def app_names(broker: EmbeddedBroker | RunningBroker, app: str) -> dict[str, str]:
    """The settings that put app id ``app`` on ``broker``, in topics of its own."""
    return {
        "broker": broker.url,
        "broker_kind": kind_of(broker),
        "app_id": app,
        "input_topic": f"{app}.addresses",
        "bulk_topic": f"{app}.bulk",
        "verdict_topic": f"{app}.verdicts",
        "dlq_topic": f"{app}.dlq",
    }


def requests_for(emails: list[str], max_age_s: int = 3600) -> list[InputRequest]:
    """One request per address, each with a fresh request id."""
    return [InputRequest(email, str(uuid.uuid4()), "test", max_age_s) for email in emails]


async def _call(func: Callable[[], T]) -> T:
    return func()


def clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment without MXPROBE_* variables, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MXPROBE_")}
    env.update(extra or {})
    return env


def mxprobe(
    *args: str, env: dict[str, str] | None = None, stdin: str | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run the mxprobe command with a clean MXPROBE_* environment plus ``env``."""
    return subprocess.run(
        [sys.executable, "-m", "streams", *args],
        capture_output=True,
        text=True,
        env=clean_env(env),
        input=stdin,
        timeout=timeout,
        check=False,
    )
