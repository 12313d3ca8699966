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
from streams.core.host_state import DEFAULT_LIMITS, HostLimits
from streams.core.politeness import Politeness
from streams.core.retry import Cause, RetryPolicy, format_attempts, parse_attempts, parse_delays
from streams.errors import ConfigError
from streams.verifier import VerifierConfig

__all__ = ["ENV_ONLY", "Settings", "VerifierConfig", "load_settings", "where"]

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


# The defaults of the sub-configs are the defaults of their settings: one definition.
_PROBE = ProbeConfig()
_RESOLVER = ResolverConfig()
_VERIFIER = VerifierConfig()
_RETRY = RetryPolicy()

#: Settings read from the environment only (deployment knobs): no command has
#: an option for them, so an error names only their variable.
ENV_ONLY = frozenset(
    {
        "free_domain",
        "role_account",
        "max_rcpt_per_session",
        "max_rcpt_per_transaction",
        "max_mx_hosts",
        "mx_ttl_floor",
        "mx_ttl_ceiling",
        "catch_all_max_age",
        "broker_kind",
        "processing_guarantee",
        "app_id",
        "input_topic",
        "bulk_topic",
        "verdict_topic",
        "dlq_topic",
        "partitions",
        "replication_factor",
        "batch_size",
        "batch_within",
    }
)


def where(field: str) -> str:
    """How messages name a setting: its option (``--field-name``) and its variable."""
    variable = f"MXPROBE_{field.upper()}"
    if field in ENV_ONLY:
        return variable
    return f"--{field.replace('_', '-')} / {variable}"


class Settings(BaseSettings):
    """All of mxprobe's settings, validated once."""

    model_config = SettingsConfigDict(env_prefix="MXPROBE_", frozen=True, extra="ignore")

    dns_server: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(),
        description="Name server to ask, HOST[:PORT] (repeatable; [v6]:port for IPv6). "
        "Default: the system resolver.",
    )
    smtp_port: int = Field(
        default=_PROBE.port, ge=1, le=65535, description="SMTP port of mail hosts."
    )
    helo: str | None = Field(
        default=None, description="The EHLO/HELO name. Default: this host's FQDN."
    )
    mail_from: str | None = Field(
        default=None,
        description="Probe sender used when a host refuses the null sender <>. Default: none.",
    )
    timeout: float = Field(
        default=_PROBE.command_timeout,
        gt=0,
        le=600,
        description="Seconds each network phase may take (connect, banner, each SMTP "
        "command, each DNS lookup); the phase options below override it.",
    )
    connect_timeout: float | None = Field(
        default=None,
        gt=0,
        le=600,
        description="Seconds to open a TCP connection. Default: timeout.",
    )
    banner_timeout: float | None = Field(
        default=None,
        gt=0,
        le=600,
        description="Seconds for a mail host's 220 greeting. Default: timeout.",
    )
    command_timeout: float | None = Field(
        default=None,
        gt=0,
        le=600,
        description="Seconds for the whole reply to each SMTP command. Default: timeout.",
    )
    dns_timeout: float | None = Field(
        default=None,
        gt=0,
        le=600,
        description="Seconds for each DNS lookup, retries included. Default: timeout.",
    )
    allow_private_mx: bool = Field(
        default=False,
        description="Probe mail hosts on loopback, private, link-local or reserved addresses.",
    )
    allow_tld: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(), description="Accept addresses in this special-use TLD, e.g. test (repeatable)."
    )
    concurrency: int = Field(
        default=_VERIFIER.concurrency, ge=1, le=1000, description="SMTP sessions at once, in all."
    )
    starttls: bool = Field(
        default=False, description="Use STARTTLS when offered (certificates are not validated)."
    )
    source_address: str | None = Field(
        default=None, description="Local IP address to probe from. Default: any."
    )
    disposable_domain: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(),
        description="Treat this domain as disposable, beside the packaged list (repeatable).",
    )
    free_domain: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(), description="Extra free-provider domains."
    )
    role_account: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(), description="Extra role-account local parts."
    )
    max_rcpt_per_session: int = Field(
        default=DEFAULT_LIMITS.rcpt_per_session,
        ge=1,
        le=1000,
        description="Recipients one SMTP session asks about, at most.",
    )
    max_rcpt_per_transaction: int = Field(
        default=_PROBE.rcpt_per_transaction,
        ge=1,
        le=1000,
        description="Recipients per MAIL transaction (RSET between transactions).",
    )
    max_mx_hosts: int = Field(
        default=_VERIFIER.max_mx_hosts, ge=1, le=50, description="MX hosts looked up at a time."
    )
    mx_ttl_floor: int = Field(
        default=_RESOLVER.ttl_floor, ge=0, description="DNS answers are kept at least this long."
    )
    mx_ttl_ceiling: int = Field(
        default=_RESOLVER.ttl_ceiling, ge=1, description="...and at most this long (seconds)."
    )
    catch_all_max_age: float = Field(
        default=_VERIFIER.catch_all_max_age,
        gt=0,
        description="Seconds a domain's catch-all state stays fresh.",
    )

    # --- politeness (per mail host: owed to the server, not the domain) ------
    host_rcpt_per_second: float = Field(
        allow_inf_nan=False,
        default=DEFAULT_LIMITS.rcpt_per_second,
        gt=0,
        le=10_000,
        description="Sustained RCPTs per second to one mail host.",
    )
    host_rcpt_burst: int = Field(
        default=DEFAULT_LIMITS.rcpt_burst,
        ge=1,
        le=100_000,
        description="RCPTs one mail host may get in a burst.",
    )
    host_connections_per_minute: float = Field(
        allow_inf_nan=False,
        default=DEFAULT_LIMITS.connections_per_minute,
        gt=0,
        le=100_000,
        description="New SMTP connections per minute to one mail host "
        f"(burst {DEFAULT_LIMITS.connection_burst}).",
    )
    host_max_sessions: int = Field(
        default=DEFAULT_LIMITS.max_sessions,
        ge=1,
        le=100,
        description="SMTP sessions to one mail host at once.",
    )
    politeness_file: Path | None = Field(
        default=None,
        description="TOML file of per-provider limits, over the packaged ones. Default: none.",
    )
    session_idle: float = Field(
        allow_inf_nan=False,
        default=_PROBE.idle_timeout,
        ge=0,
        le=300,
        description="Seconds an idle SMTP session is kept for the next batch (0: QUIT at once).",
    )

    # --- retries (the pipeline's retry tiers) ----------------------------------
    retry_delays: Annotated[tuple[float, ...], NoDecode] = Field(
        default=_RETRY.delays,
        description="Delay in seconds of each retry tier (one topic per tier).",
    )
    retry_attempts: Annotated[dict[Cause, int], NoDecode] = Field(
        default_factory=dict,
        description="Attempt limits per cause over the defaults, e.g. greylisted=5,timeout=1.",
    )
    retry_max_age: float = Field(
        allow_inf_nan=False,
        default=_RETRY.max_age,
        gt=0,
        description="No retry later than this many seconds after intake.",
    )

    # --- the streaming pipeline (Kafka) ---------------------------------------
    broker: str | None = Field(
        default=None,
        description="Kafka bootstrap server(s), kafka://HOST:PORT[,HOST:PORT]. "
        "Default: the embedded broker.",
    )
    broker_kind: Literal["kafka", "tansu"] = Field(
        default="kafka",
        description="tansu: the broker is Tansu (another mxprobe's embedded broker); "
        "enables the workarounds for its deviations. The embedded broker sets it itself.",
    )
    processing_guarantee: Literal["auto", "at_least_once", "exactly_once"] = Field(
        default="auto",
        description="at_least_once: a crash may repeat a verdict (byte for byte); "
        "exactly_once (Apache Kafka with a transaction coordinator, still under test): "
        "Kafka transactions, each verdict once for a read_committed consumer. "
        "auto: at_least_once, for now.",
    )
    app_id: str = Field(default="mxprobe", pattern=r"^[A-Za-z0-9._-]+$")
    input_topic: str = Field(default="addresses", pattern=r"^[A-Za-z0-9._-]+$")
    bulk_topic: str = Field(default="addresses.bulk", pattern=r"^[A-Za-z0-9._-]+$")
    verdict_topic: str = Field(default="verdicts", pattern=r"^[A-Za-z0-9._-]+$")
    dlq_topic: str = Field(default="addresses.dlq", pattern=r"^[A-Za-z0-9._-]+$")
    partitions: int = Field(default=4, ge=1, le=1024)
    replication_factor: int = Field(default=1, ge=1, le=16)
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

    @field_validator("retry_attempts", mode="before")
    @classmethod
    def _parse_attempts(cls, value: Any) -> Any:
        if isinstance(value, str):
            return parse_attempts(value)
        return value

    @field_validator("retry_attempts")
    @classmethod
    def _check_attempts(cls, value: dict[Cause, int]) -> dict[Cause, int]:
        RetryPolicy(attempts=value)  # raises ValueError sentences
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
            elif isinstance(value, dict):
                text = format_attempts(value)
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
            attempts=self.retry_attempts,
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
        setting = where("politeness_file")
        if self.politeness_file is not None:
            try:
                extra = self.politeness_file.read_text(encoding="utf-8")
            except (OSError, UnicodeError) as exc:
                raise ConfigError(
                    f"Invalid setting {setting}: cannot read {self.politeness_file} "
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
            raise ConfigError(f"Invalid setting {setting}: {str(exc).rstrip('.')}.") from None

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
        setting = where(field) if field else "settings"
        raise ConfigError(f"Invalid setting {setting}: {message.rstrip('.')}.") from None
