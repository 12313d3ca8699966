"""The one exception tree of mxprobe.

Expected outcomes of verification (a 550, a timeout, NXDOMAIN, a bad address)
are *values* (``SmtpReply``, ``DnsOutcome``, ``SyntaxProblem``), never
exceptions. Exceptions are for our own machinery failing or being misused::

    MxprobeError
    ├── ConfigError (ValueError)      a setting or option is wrong; says which and the fix
    ├── SandboxError                  the sandbox mail world cannot start
    │   └── WorldError (ValueError)   a world file is invalid
    └── ProbeError                    an adapter failed in a way it could not turn into a value
"""

from __future__ import annotations

__all__ = ["ConfigError", "MxprobeError", "ProbeError", "SandboxError", "WorldError"]


class MxprobeError(Exception):
    """Base of every exception mxprobe raises on purpose."""


class ConfigError(MxprobeError, ValueError):
    """A setting or command-line option is invalid.

    The message is one sentence naming the setting and how to fix it.
    """


class SandboxError(MxprobeError):
    """The sandbox mail world could not start (a port in use, an address not bindable)."""


class WorldError(SandboxError, ValueError):
    """A sandbox world file is invalid; the message names the file, the entry and the fix."""


class ProbeError(MxprobeError):
    """An adapter failed in a way it could not express as a value."""

    def __init__(self, message: str, *, host: str | None = None) -> None:
        super().__init__(message)
        self.host = host
