"""Child processes that never outlive mxprobe: the brokers it starts.

A broker runs in its own process group (Ctrl-C on the terminal reaches
mxprobe only, which then stops its broker after its own clients), and on
Linux the kernel SIGKILLs it when mxprobe dies without cleaning up
(``PR_SET_PDEATHSIG``, tied to the *thread* that started the child).
Stopping is SIGTERM to the group, then SIGKILL after a grace period.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable

__all__ = ["POLL", "die_with_parent_hook", "signal_group", "stop_sync", "wait_async", "wait_sync"]

POLL = 0.02  # seconds between checks of a child process
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def die_with_parent_hook() -> Callable[[], None] | None:
    """A ``preexec_fn`` asking Linux to SIGKILL the child when its parent dies."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def hook() -> None:  # runs in the child between fork and exec: keep it minimal
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return hook


def signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    # Only called while proc.poll() is None: the pid (and its group) is still ours.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)


def wait_sync(proc: subprocess.Popen[bytes], timeout: float) -> bool:
    # Polling, not proc.wait(): a wait interrupted by a signal handler that calls
    # stop() again must not deadlock on Popen's internal lock.
    deadline = time.monotonic() + timeout
    while proc.poll() is None:
        if time.monotonic() > deadline:
            return False
        time.sleep(POLL)
    return True


async def wait_async(proc: subprocess.Popen[bytes], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while proc.poll() is None:
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(POLL)
    return True

def stop_sync(proc: subprocess.Popen[bytes], timeout: float) -> None:
    """SIGTERM ``proc``'s group, then SIGKILL it if it is still there after ``timeout``."""
    if proc.poll() is not None:
        return
    signal_group(proc, signal.SIGTERM)
    if not wait_sync(proc, timeout):
        signal_group(proc, signal.SIGKILL)
        wait_sync(proc, timeout)
