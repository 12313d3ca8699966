"""``mxprobe broker``: a Kafka-protocol broker in the foreground, for separate processes."""

from __future__ import annotations

import contextlib
import errno
import signal
import socket
import sys
import time
from types import FrameType

import click

from streams.apache_kafka import KafkaNode, kafka_version
from streams.embedded import EmbeddedBroker
from streams.errors import BrokerError, ConfigError
from streams.loopback import LOOPBACK

__all__ = ["broker"]

_POLL = 0.2  # seconds between checks that the broker still runs
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class _Stop(BaseException):
    """SIGINT or SIGTERM arrived: stop the broker (raised by the signal handler)."""


@click.command()
@click.option(
    "--kind",
    type=click.Choice(["tansu", "kafka"]),
    default="tansu",
    show_default=True,
    help="tansu: the embedded broker, memory only (all data is gone when it stops); "
    "kafka: Apache Kafka from its Maven jars (needs Java; its data directory is a "
    "temporary one, removed when it stops).",
)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=0,
    show_default=True,
    help="Port to listen on, on 127.0.0.1 only (0: a free one).",
)
def broker(kind: str, port: int) -> None:
    """Run a Kafka broker on 127.0.0.1 in the foreground until Ctrl-C or SIGTERM.

    For `worker`, `submit`, `verdicts` and `hosts` as separate processes.
    Once it answers, prints its URL and the `export MXPROBE_BROKER=…` lines
    (with MXPROBE_BROKER_KIND=tansu for Tansu) on stdout. Nothing is kept:
    Tansu holds everything in memory, and Apache Kafka's data directory is
    a temporary one, removed when it stops.

    Exit status 0 when stopped by Ctrl-C or SIGTERM (not 130/143: stopping
    it is the normal end of a broker), 1 if the broker exits by itself, 2 if
    it cannot start (port in use, Java or the jars missing).
    """
    _check_port(port)
    server: EmbeddedBroker | KafkaNode
    if kind == "tansu":
        server, name = EmbeddedBroker(port=port), "Tansu"
    else:
        server, name = KafkaNode(port=port), f"Apache Kafka {kafka_version()}"
        click.echo(f"Starting {name} (the first start fetches its jars with Maven)…", err=True)
    try:
        for signum in _STOP_SIGNALS:  # explicit: a shell may start us with SIGINT ignored
            signal.signal(signum, _on_signal)
        try:
            server.start()
        except BrokerError:
            _check_port(port)  # taken between our check and the broker's bind
            raise
        click.echo(server.url)
        click.echo(f"export MXPROBE_BROKER={server.url}")
        if kind == "tansu":
            click.echo("export MXPROBE_BROKER_KIND=tansu")
        kept = "memory only" if kind == "tansu" else "temporary data directory"
        click.echo(f"mxprobe broker: {name} on {server.bootstrap} ({kept}).", err=True)
        click.echo("Ctrl-C stops it.", err=True)
        while _running(server):
            time.sleep(_POLL)
        died = f"The broker ({name}) on {server.bootstrap} exited by itself{_last_words(server)}."
    except _Stop:
        died = None
    finally:
        for signum in _STOP_SIGNALS:  # a second Ctrl-C must not interrupt the stop
            signal.signal(signum, signal.SIG_IGN)
        server.stop()
    if died is not None:
        click.echo(f"Error: {died}", err=True)
        sys.exit(1)
    click.echo("mxprobe broker: stopped.", err=True)


def _on_signal(signum: int, frame: FrameType | None) -> None:
    raise _Stop


def _check_port(port: int) -> None:
    """Raise ConfigError if 127.0.0.1:``port`` cannot be listened on (0: nothing to check)."""
    if not port:
        return
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the brokers bind
        try:
            probe.bind((LOOPBACK, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ConfigError(
                    f"Port {port} on {LOOPBACK} is already in use; stop what listens there, "
                    "or give another --port (0, the default, picks a free one)."
                ) from None
            raise ConfigError(
                f"Cannot listen on {LOOPBACK}:{port} ({exc.strerror}); give another --port "
                "(0, the default, picks a free one)."
            ) from None


def _running(server: EmbeddedBroker | KafkaNode) -> bool:
    if isinstance(server, EmbeddedBroker):
        return server.returncode is None
    return server.pid is not None


def _last_words(server: EmbeddedBroker | KafkaNode) -> str:
    """What to say about the dead broker's log, before stop() may remove it."""
    if isinstance(server, EmbeddedBroker):
        code = server.returncode
        status = f" (status {code})" if code is not None and code >= 0 else ""
        if code is not None and code < 0:
            with contextlib.suppress(ValueError):
                status = f" (killed by {signal.Signals(-code).name})"
        with contextlib.suppress(BrokerError):
            server.check()  # marks it failed, so that stop() keeps its log
        return f"{status}; its log is {server.log_path}"
    path = server.log_path
    if path is None or not path.exists():
        return ""
    lines = path.read_text("utf-8", errors="replace").strip().splitlines()
    return f"; its log ended with: {lines[-1][:300]}" if lines else ""
