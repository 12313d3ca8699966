"""One frozen, typed Settings object, read once at the edge.

Every field is also an environment variable: ``MXPROBE_`` + the field name in
upper case (``MXPROBE_SMTP_PORT=2525``, ``MXPROBE_ALLOW_PRIVATE_MX=1``). List
fields take comma- or space-separated values (``MXPROBE_ALLOW_TLD=test,example``).
Command-line options override the environment. Below the CLI nothing reads
``os.environ``: components get the small config objects built here.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from streams.adapters.resolver import ResolverConfig, name_servers_from
from streams.adapters.smtp_probe import ProbeConfig
from streams.core.address import UNALLOWABLE_TLDS, SyntaxProblem, parse_address
from streams.core.politeness import Politeness
from streams.core.retry import RetryPolicy, parse_attempts, parse_delays
from streams.core.throttle import HostLimits
from streams.errors import ConfigError
from streams.verifier import VerifierConfig

__all__ = ["Settings", "VerifierConfig", "load_settings"]

_LIST_SPLIT = re.compile(r"[,\s]+")
# A host name for EHLO/HELO: LDH labels (RFC 5321 §4.1.2 Domain, RFC 1123 §2.1).
_HELO = re.compile(
    r"(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?"
)


def _address_literal(value: str) -> bool:
    """``[192.0.2.1]`` or ``[IPv6:2001:db8::1]`` (RFC 5321 §4.1.3)."""
    if not (value.startswith("[") and value.endswith("]")):
        return False
    inner = value[1:-1]
    inner = inner[5:] if inner.lower().startswith("ipv6:") else inner
    try:
        ipaddress.ip_address(inner)
    except ValueError:
        return False
    return True


# The option that sets each field, for error messages.
_OPTION_NAMES = {
    "dns_server": "--dns-server",
    "smtp_port": "--smtp-port",
    "helo": "--helo",
    "mail_from": "--mail-from",
    "timeout": "--timeout",
    "allow_private_mx": "--allow-private-mx",
    "allow_tld": "--allow-tld",
    "concurrency": "--concurrency",
    "starttls": "--starttls",
    "source_address": "--source-address",
    "disposable_domain": "--disposable-domain",
    "broker": "--broker",
    "retry_delays": "--retry-delays",
    "retry_attempts": "--retry-attempts",
    "retry_max_age": "--retry-max-age",
    "host_rcpt_per_second": "--host-rcpt-per-second",
    "host_rcpt_burst": "--host-rcpt-burst",
    "host_connections_per_minute": "--host-connections-per-minute",
    "host_max_sessions": "--host-max-sessions",
    "politeness_file": "--politeness-file",
    "session_idle": "--session-idle",
}


class Settings(BaseSettings):
    """All of mxprobe's settings, validated once."""

    model_config = SettingsConfigDict(env_prefix="MXPROBE_", frozen=True, extra="ignore")

    dns_server: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(), description="Name servers as HOST[:PORT]; empty: the system resolver."
    )
    smtp_port: int = Field(default=25, ge=1, le=65535, description="SMTP port of mail hosts.")
    helo: str | None = Field(default=None, description="EHLO/HELO name; default: this host's FQDN.")
    mail_from: str | None = Field(
        default=None, description="Probe sender used when a host refuses the null sender <>."
    )
    timeout: float = Field(
        default=10.0,
        gt=0,
        le=600,
        description="Seconds per network phase (connect, banner, each SMTP command, DNS).",
    )
    connect_timeout: float | None = Field(
        default=None, gt=0, le=600, description="Seconds to open a TCP connection; unset: timeout."
    )
    banner_timeout: float | None = Field(
        default=None, gt=0, le=600, description="Seconds for a mail host's 220; unset: timeout."
    )
    command_timeout: float | None = Field(
        default=None, gt=0, le=600, description="Seconds for each SMTP reply; unset: timeout."
    )
    dns_timeout: float | None = Field(
        default=None, gt=0, le=600, description="Seconds for each DNS lookup; unset: timeout."
    )
    allow_private_mx: bool = Field(
        default=False, description="Probe mail hosts on loopback/private/reserved addresses."
    )
    allow_tld: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(), description="Special-use TLDs to accept (e.g. test)."
    )
    concurrency: int = Field(default=20, ge=1, le=1000, description="Concurrent SMTP sessions.")
    starttls: bool = Field(default=False, description="Use STARTTLS when offered (no cert check).")
    source_address: str | None = Field(default=None, description="Local IP to probe from.")
    disposable_domain: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(), description="Extra disposable domains."
    )
    free_domain: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(), description="Extra free-provider domains."
    )
    role_account: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(), description="Extra role-account local parts."
    )
    max_rcpt_per_session: int = Field(default=50, ge=1, le=1000)
    max_rcpt_per_transaction: int = Field(default=25, ge=1, le=1000)
    max_mx_hosts: int = Field(default=5, ge=1, le=50)
    mx_ttl_floor: int = Field(default=60, ge=0)
    mx_ttl_ceiling: int = Field(default=86_400, ge=1)
    catch_all_max_age: float = Field(default=86_400.0, gt=0)

    # --- politeness (per mail host; DESIGN "Pipeline", issue 4) ---------------
    host_rcpt_per_second: float = Field(
        allow_inf_nan=False,
        default=1.0,
        gt=0,
        le=10_000,
        description="Sustained RCPTs per second to one mail host.",
    )
    host_rcpt_burst: int = Field(
        default=20, ge=1, le=100_000, description="RCPTs one mail host may get in a burst."
    )
    host_connections_per_minute: float = Field(
        allow_inf_nan=False,
        default=6.0,
        gt=0,
        le=100_000,
        description="New SMTP connections per minute to one host.",
    )
    host_max_sessions: int = Field(
        default=2, ge=1, le=100, description="Concurrent SMTP sessions to one mail host."
    )
    politeness_file: Path | None = Field(
        default=None,
        description="TOML file of per-provider limits, taking precedence over the packaged ones.",
    )
    session_idle: float = Field(
        allow_inf_nan=False,
        default=2.0,
        ge=0,
        le=300,
        description="Seconds an idle SMTP session is kept for the next batch (0: QUIT at once).",
    )

    # --- retries (the pipeline's retry tiers) ----------------------------------
    retry_delays: Annotated[tuple[float, ...], NoDecode] = Field(
        default=(60.0, 300.0, 900.0, 1800.0),
        description="Seconds of delay of each retry tier (one topic per tier).",
    )
    retry_attempts: str = Field(
        default="",
        description="Attempt limits per cause over the defaults, e.g. greylisted=5,timeout=1.",
    )
    retry_max_age: float = Field(
        allow_inf_nan=False,
        default=7200.0,
        gt=0,
        description="No retry later than this many seconds after intake.",
    )

    # --- the streaming pipeline (Kafka) ---------------------------------------
    broker: str | None = Field(
        default=None,
        description="Kafka bootstrap server(s), kafka://HOST:PORT[,HOST:PORT]; "
        "unset: the embedded broker.",
    )
    broker_kind: Literal["kafka", "tansu"] = Field(
        default="kafka",
        description="tansu: the broker is Tansu (another mxprobe's embedded broker); "
        "enables the workarounds for its deviations. The embedded broker sets it itself.",
    )
    app_id: str = Field(default="mxprobe", pattern=r"^[A-Za-z0-9._-]+$")
    input_topic: str = Field(default="addresses", pattern=r"^[A-Za-z0-9._-]+$")
    bulk_topic: str = Field(default="addresses.bulk", pattern=r"^[A-Za-z0-9._-]+$")
    verdict_topic: str = Field(default="verdicts", pattern=r"^[A-Za-z0-9._-]+$")
    dlq_topic: str = Field(default="addresses.dlq", pattern=r"^[A-Za-z0-9._-]+$")
    partitions: int = Field(default=4, ge=1, le=1024)
    replication_factor: int = Field(default=1, ge=1, le=16)
    web_port: int | None = Field(default=None, ge=0, le=65535)
    web_bind: str = Field(default="127.0.0.1")
    batch_size: int = Field(default=200, ge=1, le=10_000)
    batch_within: float = Field(default=0.05, gt=0, le=10)

    @field_validator(
        "dns_server", "allow_tld", "disposable_domain", "free_domain", "role_account", mode="before"
    )
    @classmethod
    def _split_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(part for part in _LIST_SPLIT.split(value) if part)
        if isinstance(value, list | tuple):
            parts: list[str] = []
            for item in value:
                parts.extend(p for p in _LIST_SPLIT.split(str(item)) if p)
            return tuple(parts)
        return value

    @field_validator("retry_delays", mode="before")
    @classmethod
    def _parse_delays(cls, value: Any) -> Any:
        if isinstance(value, str):
            return parse_delays(value)
        return value

    @field_validator("retry_delays")
    @classmethod
    def _check_delays(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        RetryPolicy(delays=value)  # raises ValueError sentences
        return value

    @field_validator("retry_attempts")
    @classmethod
    def _check_attempts(cls, value: str) -> str:
        parse_attempts(value)
        return value

    @field_validator("allow_tld")
    @classmethod
    def _check_tlds(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        tlds = tuple(dict.fromkeys(t.strip(".").lower() for t in value))
        for tld in tlds:
            if tld in UNALLOWABLE_TLDS:
                raise ValueError(
                    f"the TLD {tld!r} can never carry deliverable mail and cannot be allowed"
                )
            if not tld or not re.fullmatch(r"[a-z0-9-]+", tld):
                raise ValueError(f"{tld!r} is not a top-level domain name")
        return tlds

    @field_validator("dns_server")
    @classmethod
    def _check_dns(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        try:
            name_servers_from(value)
        except ConfigError as exc:
            raise ValueError(str(exc).rstrip(".")) from None
        return value

    @field_validator("helo")
    @classmethod
    def _check_helo(cls, value: str | None) -> str | None:
        if value is None or _HELO.fullmatch(value) or _address_literal(value):
            return value
        raise ValueError(
            f"{value!r} is not a host name (letters, digits, hyphens and dots, RFC 5321 §4.1.1.1) "
            "or an address literal like [192.0.2.1]"
        )

    @field_validator("source_address")
    @classmethod
    def _check_source_address(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                ipaddress.ip_address(value)
            except ValueError:
                raise ValueError(f"{value!r} is not an IP address of this machine") from None
        return value

    @field_validator("broker")
    @classmethod
    def _check_broker(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        servers = value.strip().removeprefix("kafka://")
        for server in servers.split(","):
            host, _, port = server.rpartition(":")
            if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
                raise ValueError(
                    f"{value!r} is not a broker address; use kafka://HOST:PORT (several "
                    "separated by commas)"
                )
        return f"kafka://{servers}"

    @model_validator(mode="after")
    def _check_mail_from(self) -> Settings:
        if self.mail_from is not None:
            parsed = parse_address(self.mail_from, allowed_tlds=self.allow_tld)
            if isinstance(parsed, SyntaxProblem):
                raise ValueError(f"mail_from: {parsed.message}")
            if parsed.smtputf8 or not self.mail_from.isascii():
                raise ValueError(
                    "mail_from: the probe sender must be an ASCII address, "
                    "so that hosts without SMTPUTF8 can accept it"
                )
        if self.mx_ttl_floor > self.mx_ttl_ceiling:
            raise ValueError("mx_ttl_floor: must not be above mx_ttl_ceiling")
        return self

    def to_env(self) -> dict[str, str]:
        """These settings as ``MXPROBE_*`` environment variables (for a child worker)."""
        env: dict[str, str] = {}
        for name, value in self.model_dump().items():
            if value is None:
                continue
            if isinstance(value, bool):
                text = "1" if value else "0"
            elif isinstance(value, tuple | list):
                text = ",".join(str(item) for item in value)
            else:
                text = str(value)
            env[f"MXPROBE_{name.upper()}"] = text
        return env

    def retry_policy(self) -> RetryPolicy:
        """The retry tiers, attempt limits and maximum age."""
        return RetryPolicy(
            delays=self.retry_delays,
            attempts=parse_attempts(self.retry_attempts),
            max_age=self.retry_max_age,
        )

    def host_limits(self) -> HostLimits:
        """The limits of a mail host no provider rule names."""
        return HostLimits(
            rcpt_per_second=self.host_rcpt_per_second,
            rcpt_burst=self.host_rcpt_burst,
            connections_per_minute=self.host_connections_per_minute,
            max_sessions=self.host_max_sessions,
            rcpt_per_session=self.max_rcpt_per_session,
        )

    def politeness(self) -> Politeness:
        """Per-host limits: the packaged provider rules, the user's file on top.

        Raises:
            ConfigError: the politeness file cannot be read or is invalid.
        """
        extra = None
        where = "--politeness-file / MXPROBE_POLITENESS_FILE"
        if self.politeness_file is not None:
            try:
                extra = self.politeness_file.read_text(encoding="utf-8")
            except (OSError, UnicodeError) as exc:
                raise ConfigError(
                    f"Invalid setting {where}: cannot read {self.politeness_file} "
                    f"({exc.strerror if isinstance(exc, OSError) else exc}); "
                    "give the path of a readable TOML file."
                ) from None
        try:
            return Politeness.packaged(
                self.host_limits(),
                extra=extra,
                extra_source=f"the politeness file {self.politeness_file}",
            )
        except ValueError as exc:
            raise ConfigError(f"Invalid setting {where}: {str(exc).rstrip('.')}.") from None

    def resolver_config(self) -> ResolverConfig:
        """The resolver's sub-config."""
        return ResolverConfig(
            name_servers=name_servers_from(self.dns_server),
            lifetime=self._phase_timeout(self.dns_timeout),
            ttl_floor=self.mx_ttl_floor,
            ttl_ceiling=self.mx_ttl_ceiling,
        )

    def probe_config(self, *, default_helo: str | None = None) -> ProbeConfig:
        """The SMTP prober's sub-config.

        Args:
            default_helo: the EHLO name when ``helo`` is unset (default: this
                host's FQDN, the one place that fallback is made).
        """
        return ProbeConfig(
            port=self.smtp_port,
            helo=self.helo or default_helo or socket.getfqdn(),
            mail_from=self.mail_from,
            connect_timeout=self._phase_timeout(self.connect_timeout),
            banner_timeout=self._phase_timeout(self.banner_timeout),
            command_timeout=self._phase_timeout(self.command_timeout),
            starttls=self.starttls,
            source_address=self.source_address,
            rcpt_per_transaction=self.max_rcpt_per_transaction,
            idle_timeout=self.session_idle,
        )

    def _phase_timeout(self, value: float | None) -> float:
        """A phase's own timeout, or ``timeout`` when it has none."""
        return self.timeout if value is None else value

    def verifier_config(self) -> VerifierConfig:
        """The verifier's sub-config.

        Raises:
            ConfigError: the politeness file cannot be read or is invalid.
        """
        return VerifierConfig(
            politeness=self.politeness(),
            allow_private_mx=self.allow_private_mx,
            allowed_tlds=self.allow_tld,
            catch_all_max_age=self.catch_all_max_age,
            concurrency=self.concurrency,
            max_mx_hosts=self.max_mx_hosts,
        )


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment, with ``overrides`` (None values ignored) on top.

    Raises:
        ConfigError: naming the first invalid setting, its option and environment
            variable, and what is wrong with it.
    """
    given = {key: value for key, value in overrides.items() if value is not None}
    try:
        return Settings(**given)
    except ValidationError as exc:
        error = exc.errors()[0]
        field = str(error["loc"][0]) if error["loc"] else ""
        message = str(error["msg"]).removeprefix("Value error, ")
        if not field and ":" in message:
            field, _, message = message.partition(": ")
        option = _OPTION_NAMES.get(field, field.replace("_", "-"))
        where = f"{option} / MXPROBE_{field.upper()}" if field else "settings"
        raise ConfigError(f"Invalid setting {where}: {message.rstrip('.')}.") from None
