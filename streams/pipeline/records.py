"""The pipeline's events as Python values, mirroring the Avro schemas in ``schemas/``.

One frozen dataclass per top-level schema; the nested records are the core's
own values (``Flags``, ``Evidence``, ``Address``, ``Signals``, ``Target``),
whose field names the schemas share, so converting to and from the core
costs nothing. Times are timezone-aware UTC :class:`~datetime.datetime`
values with millisecond precision (Avro ``timestamp-millis``);
:func:`datetime_from_seconds` makes one from the core's epoch seconds.

:func:`to_avro` and :func:`from_avro` turn a record into the dict form
fastavro writes, and back. They run for every event, so they are written
out per type rather than discovered by reflection on each call.
"""

from __future__ import annotations

import dataclasses
import math
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final, TypeVar

from streams.core.address import Address
from streams.core.lists import Signals
from streams.core.route import DomainRoute, Target
from streams.core.verdict import Evidence, Flags, Reason, Status, Verdict
from streams.errors import CodecError

__all__ = [
    "RECORD_TYPES",
    "VERDICT_SCHEMA_VERSION",
    "AddressRequest",
    "DeadLetter",
    "DomainTask",
    "DomainTasks",
    "HostTask",
    "HostTasks",
    "Record",
    "RetryEvent",
    "VerdictRecord",
    "datetime_from_millis",
    "datetime_from_seconds",
    "email_field",
    "from_avro",
    "seconds_from_datetime",
    "to_avro",
    "verdict_record",
]

#: The version a Verdict written by this code carries in ``schema_version``;
#: raise it with every change of ``schemas/Verdict.avsc``.
VERDICT_SCHEMA_VERSION: Final = 1

#: The most characters of the submitted address a verdict repeats in ``email``:
#: beyond any address (254 octets), and a verdict stays a few kB whatever came in.
EMAIL_FIELD_LIMIT: Final = 1024

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_STATUS: Final = {status.value: status for status in Status}  # 20 times faster than Status(...)
_MILLISECOND: Final = timedelta(milliseconds=1)


def datetime_from_seconds(seconds: float) -> datetime:
    """The UTC datetime of ``seconds`` since the epoch, cut to whole milliseconds.

    Cutting here makes a record equal to itself after an Avro round trip.
    """
    # Rounding first: 1.001 s is 1000.9999999999999 ms in binary floating point.
    return datetime_from_millis(math.floor(round(seconds * 1000, 6)))


def datetime_from_millis(millis: int) -> datetime:
    """The UTC datetime of ``millis`` milliseconds since the epoch."""
    return _EPOCH + timedelta(milliseconds=millis)


def seconds_from_datetime(moment: datetime) -> float:
    """Seconds since the epoch of an aware datetime (the core's clock values)."""
    return (moment - _EPOCH).total_seconds()


@dataclass(frozen=True, slots=True, kw_only=True)
class AddressRequest:
    """A request to verify one address (``io.mxprobe.AddressRequest``)."""

    request_id: str  # the caller's idempotency key
    email: str  # exactly as the caller has it
    submitted_at: datetime
    source: str  # signup, import, replay, ...
    max_age_s: int = 0  # oldest cached fact accepted, in seconds; 0: always probe fresh
    attributes: Mapping[str, str] = field(default_factory=dict)  # passed through


@dataclass(frozen=True, slots=True, kw_only=True)
class VerdictRecord:
    """The final answer for one request (``io.mxprobe.Verdict``)."""

    request_id: str
    email: str  # exactly as submitted
    normalized_email: str | None  # Unicode form
    ascii_email: str | None
    status: Status
    reason: str  # a Reason value; a string so that newer reasons still read
    flags: Flags
    confidence: float
    evidence: Evidence
    did_you_mean: str | None = None
    detail: str = ""
    verified_at: datetime
    latency_ms: int  # from the request's submitted_at to verified_at
    attributes: Mapping[str, str] = field(default_factory=dict)
    schema_version: int = VERDICT_SCHEMA_VERSION

    def to_verdict(self) -> Verdict:
        """The core verdict this record carries.

        Raises:
            CodecError: (reason ``unknown_reason``) the reason is not one this
                version of mxprobe knows (a newer writer made it).
        """
        try:
            reason = Reason(self.reason)
        except ValueError:
            raise CodecError(
                f"The verdict for request {self.request_id!r} has the reason {self.reason!r}, "
                "which this version of mxprobe does not know; upgrade mxprobe to read it.",
                reason="unknown_reason",
                schema="io.mxprobe.Verdict",
            ) from None
        return Verdict(
            email=self.email,
            normalized=self.normalized_email,
            ascii_email=self.ascii_email,
            status=self.status,
            reason=reason,
            flags=self.flags,
            confidence=self.confidence,
            evidence=self.evidence,
            did_you_mean=self.did_you_mean,
            detail=self.detail,
        )


def email_field(email: str) -> str:
    """The submitted address as a verdict repeats it: whole, or cut to EMAIL_FIELD_LIMIT."""
    if len(email) > EMAIL_FIELD_LIMIT:
        return email[: EMAIL_FIELD_LIMIT - 1] + "…"
    return email


def verdict_record(
    verdict: Verdict, request: AddressRequest, *, verified_at: datetime
) -> VerdictRecord:
    """The record of ``verdict``, the answer to ``request``, made at ``verified_at``.

    ``latency_ms`` counts from the request's ``submitted_at``; it is negative
    when the caller's clock runs ahead of the pipeline's.
    """
    return VerdictRecord(
        request_id=request.request_id,
        email=email_field(verdict.email),
        normalized_email=verdict.normalized,
        ascii_email=verdict.ascii_email,
        status=verdict.status,
        reason=verdict.reason.value,
        flags=verdict.flags,
        confidence=verdict.confidence,
        evidence=verdict.evidence,
        did_you_mean=verdict.did_you_mean,
        detail=verdict.detail,
        verified_at=verified_at,
        latency_ms=(verified_at - request.submitted_at) // _MILLISECOND,
        attributes=request.attributes,
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class DomainTask:
    """A parsed request on its way to DNS, keyed by its ASCII domain (``io.mxprobe.DomainTask``)."""

    request: AddressRequest
    address: Address
    signals: Signals
    first_seen_at: datetime  # when intake first read the request
    attempt: int = 0  # probe rounds already made (raised by the retry stage)
    bulk: bool = False  # from the bulk topic: live requests go first


@dataclass(frozen=True, slots=True, kw_only=True)
class HostTask:
    """A resolved request on its way to SMTP, keyed by its mail host (``io.mxprobe.HostTask``)."""

    domain_task: DomainTask
    targets: tuple[Target, ...]  # in order; empty only in a DNS retry
    route_expires_at: datetime

    @classmethod
    def from_route(cls, domain_task: DomainTask, route: DomainRoute) -> HostTask:
        """The task of probing ``domain_task`` along a resolved ``route``.

        Raises:
            ValueError: the route has no targets (such a domain gets a verdict instead).
        """
        if not route.targets:
            raise ValueError(
                f"The route of {domain_task.address.ascii_domain} has no mail host to probe "
                f"({route.problem}); give the request its DNS verdict instead."
            )
        return cls(
            domain_task=domain_task,
            targets=route.targets,
            route_expires_at=datetime_from_seconds(route.expires_at),
        )

    @property
    def mail_host(self) -> str:
        """The mail host tried first: the key of the probe stage."""
        return self.targets[0].host


@dataclass(frozen=True, slots=True)
class DomainTasks:
    """Several tasks of one domain in one event (``io.mxprobe.DomainTasks``)."""

    tasks: tuple[DomainTask, ...]


@dataclass(frozen=True, slots=True)
class HostTasks:
    """Several tasks of one mail host in one event (``io.mxprobe.HostTasks``)."""

    tasks: tuple[HostTask, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryEvent:
    """A request waiting in a retry tier until ``due_at`` (``io.mxprobe.RetryEvent``)."""

    host_task: HostTask  # targets empty: a DNS retry, back to resolution
    due_at: datetime
    last_verdict: VerdictRecord  # the final verdict when the retries run out
    cause: str = "greylisted"  # a streams.core.retry.Cause value
    tier: int = 0  # the retry tier whose topic holds it
    retries: Mapping[str, int] = field(default_factory=dict)  # scheduled so far, per cause


@dataclass(frozen=True, slots=True, kw_only=True)
class DeadLetter:
    """An event the pipeline could not process, kept byte for byte (``io.mxprobe.DeadLetter``)."""

    key: bytes | None = None
    value: bytes
    topic: str
    partition: int
    offset: int
    error: str  # a sentence a person can act on
    failed_at: datetime


#: Any top-level record.
Record = (
    AddressRequest
    | VerdictRecord
    | DomainTask
    | DomainTasks
    | HostTask
    | HostTasks
    | RetryEvent
    | DeadLetter
)

#: Each record type with the full name of its Avro schema.
RECORD_TYPES: Final[Mapping[type[Record], str]] = {
    AddressRequest: "io.mxprobe.AddressRequest",
    VerdictRecord: "io.mxprobe.Verdict",
    DomainTask: "io.mxprobe.DomainTask",
    DomainTasks: "io.mxprobe.DomainTasks",
    HostTask: "io.mxprobe.HostTask",
    HostTasks: "io.mxprobe.HostTasks",
    RetryEvent: "io.mxprobe.RetryEvent",
    DeadLetter: "io.mxprobe.DeadLetter",
}

R = TypeVar("R", bound=Record)  # a record type, or the union of them all


def to_avro(record: Record) -> dict[str, Any]:
    """The dict fastavro writes for ``record`` (times as epoch milliseconds).

    Raises:
        TypeError: ``record`` is not a record, or holds a naive datetime.
    """
    try:
        convert = _TO_AVRO[type(record)]
    except KeyError:
        raise TypeError(f"{type(record).__name__} is not an mxprobe record") from None
    return convert(record)


def from_avro(kind: type[Record], datum: Mapping[str, Any]) -> Record:
    """The record of type ``kind`` that fastavro read as ``datum``.

    Raises:
        KeyError, TypeError, ValueError: ``datum`` does not have the schema's shape.
    """
    result: Record = _FROM_AVRO[kind](datum)
    return result


def _plain(kind: type[Any]) -> Callable[[Any], dict[str, Any]]:
    """The converter of a dataclass whose fields are the schema's and need no conversion."""
    names = tuple(field.name for field in dataclasses.fields(kind))
    values = operator.attrgetter(*names)
    return lambda value: dict(zip(names, values(value), strict=True))


_flags_to = _plain(Flags)
_evidence_to = _plain(Evidence)
_address_to = _plain(Address)
_signals_to = _plain(Signals)
_target_to = _plain(Target)


def _millis(moment: datetime) -> int:
    # A naive datetime cannot be subtracted from an aware one: TypeError, which is
    # the point (fastavro would read it as local time).
    return (moment - _EPOCH) // _MILLISECOND


def _request_to(r: AddressRequest) -> dict[str, Any]:
    return {
        "request_id": r.request_id,
        "email": r.email,
        "submitted_at": _millis(r.submitted_at),
        "source": r.source,
        "max_age_s": r.max_age_s,
        "attributes": r.attributes,
    }


def _request_from(d: Mapping[str, Any]) -> AddressRequest:
    return AddressRequest(**d)


def _verdict_to(v: VerdictRecord) -> dict[str, Any]:
    return {
        "request_id": v.request_id,
        "email": v.email,
        "normalized_email": v.normalized_email,
        "ascii_email": v.ascii_email,
        "status": v.status.value,
        "reason": v.reason,
        "flags": _flags_to(v.flags),
        "confidence": v.confidence,
        "evidence": _evidence_to(v.evidence),
        "did_you_mean": v.did_you_mean,
        "detail": v.detail,
        "verified_at": _millis(v.verified_at),
        "latency_ms": v.latency_ms,
        "attributes": v.attributes,
        "schema_version": v.schema_version,
    }


def _verdict_from(d: Mapping[str, Any]) -> VerdictRecord:
    flags, evidence = Flags(**d["flags"]), Evidence(**d["evidence"])
    return VerdictRecord(
        **{**d, "status": _STATUS[d["status"]], "flags": flags, "evidence": evidence}
    )


def _domain_task_to(t: DomainTask) -> dict[str, Any]:
    return {
        "request": _request_to(t.request),
        "address": _address_to(t.address),
        "signals": _signals_to(t.signals),
        "first_seen_at": _millis(t.first_seen_at),
        "attempt": t.attempt,
        "bulk": t.bulk,
    }


def _domain_task_from(d: Mapping[str, Any]) -> DomainTask:
    return DomainTask(
        request=_request_from(d["request"]),
        address=Address(**d["address"]),
        signals=Signals(**d["signals"]),
        first_seen_at=d["first_seen_at"],
        attempt=d["attempt"],
        bulk=d["bulk"],
    )


def _host_task_to(t: HostTask) -> dict[str, Any]:
    return {
        "domain_task": _domain_task_to(t.domain_task),
        "targets": [_target_to(target) for target in t.targets],
        "route_expires_at": _millis(t.route_expires_at),
    }


def _host_task_from(d: Mapping[str, Any]) -> HostTask:
    return HostTask(
        domain_task=_domain_task_from(d["domain_task"]),
        targets=tuple(Target(**target) for target in d["targets"]),
        route_expires_at=d["route_expires_at"],
    )


def _domain_tasks_to(t: DomainTasks) -> dict[str, Any]:
    return {"tasks": [_domain_task_to(task) for task in t.tasks]}


def _domain_tasks_from(d: Mapping[str, Any]) -> DomainTasks:
    return DomainTasks(tuple(_domain_task_from(task) for task in d["tasks"]))


def _host_tasks_to(t: HostTasks) -> dict[str, Any]:
    return {"tasks": [_host_task_to(task) for task in t.tasks]}


def _host_tasks_from(d: Mapping[str, Any]) -> HostTasks:
    return HostTasks(tuple(_host_task_from(task) for task in d["tasks"]))


def _retry_to(e: RetryEvent) -> dict[str, Any]:
    return {
        "host_task": _host_task_to(e.host_task),
        "due_at": _millis(e.due_at),
        "last_verdict": _verdict_to(e.last_verdict),
        "cause": e.cause,
        "tier": e.tier,
        "retries": e.retries,
    }


def _retry_from(d: Mapping[str, Any]) -> RetryEvent:
    return RetryEvent(
        host_task=_host_task_from(d["host_task"]),
        due_at=d["due_at"],
        last_verdict=_verdict_from(d["last_verdict"]),
        cause=d["cause"],
        tier=d["tier"],
        retries=d["retries"],
    )


def _dead_letter_to(e: DeadLetter) -> dict[str, Any]:
    return {
        "key": e.key,
        "value": e.value,
        "topic": e.topic,
        "partition": e.partition,
        "offset": e.offset,
        "error": e.error,
        "failed_at": _millis(e.failed_at),
    }


def _dead_letter_from(d: Mapping[str, Any]) -> DeadLetter:
    return DeadLetter(**d)


_TO_AVRO: Final[Mapping[type[Any], Callable[[Any], dict[str, Any]]]] = {
    AddressRequest: _request_to,
    VerdictRecord: _verdict_to,
    DomainTask: _domain_task_to,
    DomainTasks: _domain_tasks_to,
    HostTask: _host_task_to,
    HostTasks: _host_tasks_to,
    RetryEvent: _retry_to,
    DeadLetter: _dead_letter_to,
}
_FROM_AVRO: Final[Mapping[type[Any], Callable[[Mapping[str, Any]], Any]]] = {
    AddressRequest: _request_from,
    VerdictRecord: _verdict_from,
    DomainTask: _domain_task_from,
    DomainTasks: _domain_tasks_from,
    HostTask: _host_task_from,
    HostTasks: _host_tasks_from,
    RetryEvent: _retry_from,
    DeadLetter: _dead_letter_from,
}
