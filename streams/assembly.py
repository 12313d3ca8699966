"""Assembling the use case from settings: the one place adapters are built."""

from __future__ import annotations

import functools
import socket
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from streams.adapters.resolver import Resolver
from streams.adapters.smtp_probe import SmtpProber
from streams.errors import ConfigError
from streams.packaged_lists import packaged_lists
from streams.sandbox.world import World
from streams.settings import Settings, load_settings
from streams.verifier import Verifier

__all__ = [
    "SANDBOX_HELO",
    "build_verifier",
    "check_bindable",
    "sandbox_settings",
    "verifier_factory",
]

#: The EHLO name of probes of a sandbox world.
SANDBOX_HELO = "probe.mxprobe.test"


def build_verifier(
    settings: Settings, *, extra_disposable: Sequence[str] = (), **stores: Any
) -> Verifier:
    """Wire a Verifier from settings (the one place adapters are built).

    Raises:
        ConfigError: when the source address is not one of this machine's, or an
            extra list entry is not a domain name.
    """
    if settings.source_address is not None:
        check_bindable(settings.source_address)
    try:
        lists = packaged_lists(
            extra_disposable=(*settings.disposable_domain, *extra_disposable),
            extra_free=settings.free_domain,
            extra_role=settings.role_account,
        )
    except ValueError as exc:
        raise ConfigError(
            f"Invalid setting --disposable-domain / MXPROBE_FREE_DOMAIN / MXPROBE_ROLE_ACCOUNT: "
            f"{str(exc).rstrip('.')}."
        ) from None
    return Verifier(
        Resolver(settings.resolver_config()),
        SmtpProber(settings.probe_config()),
        lists,
        settings.verifier_config(),
        **stores,
    )


def check_bindable(address: str) -> None:
    """Refuse a source address this machine does not have, before any probe fails on it."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.bind((address, 0))
    except OSError as exc:
        raise ConfigError(
            f"Invalid setting --source-address / MXPROBE_SOURCE_ADDRESS: {address} is not an "
            f"address of this machine ({exc.strerror or exc}); use one of its own IP addresses."
        ) from None


def verifier_factory(
    settings: Settings, *, extra_disposable: Sequence[str] = ()
) -> Callable[..., Verifier]:
    """A ``make_verifier(routes=..., catch_all=...)`` for the pipeline, from settings."""
    return functools.partial(build_verifier, settings, extra_disposable=extra_disposable)


def sandbox_settings(
    world: World, dns_server: str, smtp_port: int, options: Mapping[str, Any] | None = None
) -> Settings:
    """Probe settings that reach a sandbox serving ``world``, under ``options``.

    Options left unset (None or empty) take the world's: its zones as allowed
    TLDs, its probe sender and timeout, and :data:`SANDBOX_HELO`.

    Raises:
        ConfigError: an option is invalid.
    """
    given = {key: value for key, value in (options or {}).items() if value not in (None, ())}
    given.setdefault("allow_tld", world.dns.zones)
    given.setdefault("mail_from", world.probe.mail_from)
    given.setdefault("helo", SANDBOX_HELO)
    given.setdefault("timeout", world.probe.timeout)
    given.update(dns_server=(dns_server,), smtp_port=smtp_port, allow_private_mx=True)
    return load_settings(**given)
