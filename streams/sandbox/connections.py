"""Client connections of the sandbox servers: one task each, all closed on stop.

``asyncio.start_server`` does not close accepted connections when the server
closes (Python 3.11), and cancelling the task it creates for a coroutine
callback makes its done-callback raise. So the servers pass
:meth:`ConnectionTasks.accept` as a plain callback and own the tasks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

__all__ = ["ConnectionTasks", "close_writer"]

_log = logging.getLogger(__name__)

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def close_writer(writer: asyncio.StreamWriter, *, abort: bool = False) -> None:
    """Close a connection and wait (briefly) until it is closed; never raises.

    Args:
        writer: the connection.
        abort: drop it at once (no TLS close_notify, no flushing).
    """
    if abort:
        writer.transport.abort()
    else:
        writer.close()
    with contextlib.suppress(Exception):
        async with asyncio.timeout(2.0):
            await writer.wait_closed()
    if not writer.transport.is_closing():  # pragma: no cover - wait_closed timed out
        writer.transport.abort()


class ConnectionTasks:
    """Runs ``handler`` once per accepted connection and can stop them all.

    Args:
        handler: serves one connection; the writer is closed after it returns.
        name: names the tasks and log lines (e.g. the host name).
    """

    def __init__(self, handler: Handler, *, name: str) -> None:
        self._handler = handler
        self._name = name
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = False

    def accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """The ``client_connected_cb`` for :func:`asyncio.start_server`."""
        if self._stopping:
            writer.transport.abort()
            return
        task = asyncio.get_running_loop().create_task(
            self._run(reader, writer), name=f"sandbox {self._name} connection"
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await self._handler(reader, writer)
        except asyncio.CancelledError:
            # Only stop_all() cancels these tasks; the connection ends quietly.
            pass
        except (OSError, TimeoutError, EOFError):
            pass  # the peer went away or stalled: nothing to report
        except Exception:  # pragma: no cover - a sandbox bug must not kill the server
            _log.exception("sandbox %s: unexpected error serving a connection", self._name)
        finally:
            await close_writer(writer, abort=self._stopping)

    async def stop_all(self) -> None:
        """Cancel every connection task and wait until all are closed."""
        self._stopping = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
