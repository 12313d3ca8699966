"""Free ports on loopback: the one place mxprobe picks a port for a socket it listens on.

Every listening socket binds to loopback unless the operator asks otherwise
(nothing mxprobe serves is meant for other machines by default), so a free
port is looked for there.
"""

from __future__ import annotations

import socket

__all__ = ["LOOPBACK", "LoopbackBroker", "free_port"]

#: The address every socket mxprobe listens on binds to by default.
LOOPBACK = "127.0.0.1"


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port nobody listens on at ``host`` right now (the OS picks it).

    Another process may take it before the caller binds it; a caller that
    cannot afford that retries with a new port.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


class LoopbackBroker:
    """Where a Kafka-protocol broker that mxprobe runs on loopback is reached.

    The subclass keeps its port in ``_port`` (0 until it is chosen).
    """

    _port: int

    @property
    def bootstrap(self) -> str:
        """``127.0.0.1:PORT``, for Kafka clients (aiokafka ``bootstrap_servers``)."""
        return f"{LOOPBACK}:{self._port}"

    @property
    def url(self) -> str:
        """``kafka://127.0.0.1:PORT``, the form of ``--broker`` / ``MXPROBE_BROKER``."""
        return f"kafka://{self.bootstrap}"
