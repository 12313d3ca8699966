"""Codecs: Avro single-object encoding, JSON for people, Faust codecs, record conversions."""

from __future__ import annotations

import base64
import dataclasses
import io
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import fastavro
import pytest
from faust.exceptions import ValueDecodeError
from faust.serializers import Registry
from faust.serializers import codecs as faust_codecs
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from streams.core.address import Address
from streams.core.catchall import CatchAll
from streams.core.lists import Signals
from streams.core.replies import Phase, SmtpReply
from streams.core.route import DomainRoute, Target
from streams.core.verdict import Evidence, Facts, Flags, Reason, Status, Verdict, decide
from streams.errors import CodecError
from streams.pipeline import codecs, schemas
from streams.pipeline.codecs import (
    CODEC_NAMES,
    MAGIC,
    CodecProblem,
    decode,
    encode,
    to_json,
)
from streams.pipeline.records import (
    VERDICT_SCHEMA_VERSION,
    AddressRequest,
    DeadLetter,
    DomainTask,
    DomainTasks,
    HostTask,
    HostTasks,
    Record,
    RetryEvent,
    VerdictRecord,
    datetime_from_seconds,
    seconds_from_datetime,
    verdict_record,
)

# -- strategies ----------------------------------------------------------------------

INTS = st.integers(-(2**31), 2**31 - 1)
LONGS = st.integers(-(2**63), 2**63 - 1)
TEXT = st.text(max_size=30)
MAYBE_TEXT = st.none() | TEXT
ATTRIBUTES = st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=3)
# Avro timestamp-millis keeps whole milliseconds.
MOMENTS = st.datetimes(
    min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31), timezones=st.just(UTC)
).map(lambda moment: moment.replace(microsecond=moment.microsecond // 1000 * 1000))

REQUESTS = st.builds(
    AddressRequest,
    request_id=TEXT,
    email=TEXT,
    submitted_at=MOMENTS,
    source=TEXT,
    max_age_s=LONGS,
    attributes=ATTRIBUTES,
)
FLAGS = st.builds(
    Flags,
    disposable=st.booleans(),
    role=st.booleans(),
    free_provider=st.booleans(),
    accept_all=st.booleans(),
)
EVIDENCE = st.builds(
    Evidence,
    mail_host=MAYBE_TEXT,
    mail_host_address=MAYBE_TEXT,
    phase=st.none() | st.sampled_from([phase.value for phase in Phase]),
    reply_code=st.none() | INTS,
    enhanced_status=MAYBE_TEXT,
    reply_text=MAYBE_TEXT,
    catch_all=st.sampled_from([state.value for state in CatchAll]),
    dns=MAYBE_TEXT,
    attempts=INTS,
    syntax=MAYBE_TEXT,
)
VERDICTS = st.builds(
    VerdictRecord,
    request_id=TEXT,
    email=TEXT,
    normalized_email=MAYBE_TEXT,
    ascii_email=MAYBE_TEXT,
    status=st.sampled_from(Status),
    reason=TEXT,
    flags=FLAGS,
    confidence=st.floats(allow_nan=False, allow_infinity=False),
    evidence=EVIDENCE,
    did_you_mean=MAYBE_TEXT,
    detail=TEXT,
    verified_at=MOMENTS,
    latency_ms=LONGS,
    attributes=ATTRIBUTES,
    schema_version=INTS,
)
ADDRESSES = st.builds(
    Address,
    original=TEXT,
    local_part=TEXT,
    domain=TEXT,
    ascii_domain=TEXT,
    normalized=TEXT,
    ascii_email=MAYBE_TEXT,
    smtputf8=st.booleans(),
)
SIGNALS = st.builds(
    Signals,
    disposable=st.booleans(),
    role=st.booleans(),
    free_provider=st.booleans(),
    did_you_mean=MAYBE_TEXT,
)
DOMAIN_TASKS = st.builds(
    DomainTask,
    request=REQUESTS,
    address=ADDRESSES,
    signals=SIGNALS,
    first_seen_at=MOMENTS,
    attempt=INTS,
)
HOST_TASKS = st.builds(
    HostTask,
    domain_task=DOMAIN_TASKS,
    targets=st.lists(st.builds(Target, host=TEXT, address=TEXT), min_size=1, max_size=3).map(tuple),
    route_expires_at=MOMENTS,
)
RETRIES = st.builds(RetryEvent, host_task=HOST_TASKS, due_at=MOMENTS, last_verdict=VERDICTS)
DEAD_LETTERS = st.builds(
    DeadLetter,
    key=st.none() | st.binary(max_size=20),
    value=st.binary(max_size=60),
    topic=TEXT,
    partition=INTS,
    offset=LONGS,
    error=TEXT,
    failed_at=MOMENTS,
)
RECORDS: st.SearchStrategy[Record] = st.one_of(
    REQUESTS, VERDICTS, DOMAIN_TASKS, HOST_TASKS, RETRIES, DEAD_LETTERS
)
KINDS: list[type[Record]] = [
    AddressRequest,
    VerdictRecord,
    DomainTask,
    HostTask,
    RetryEvent,
    DeadLetter,
]

NOW = datetime(2025, 1, 31, 12, 0, tzinfo=UTC)
ADDRESS = Address(
    original="ann@example.com",
    local_part="ann",
    domain="example.com",
    ascii_domain="example.com",
    normalized="ann@example.com",
    ascii_email="ann@example.com",
    smtputf8=False,
)
PLAIN = Signals(disposable=False, role=False, free_provider=False, did_you_mean=None)
REQUEST = AddressRequest(
    request_id="r-1", email="ann@example.com", submitted_at=NOW, source="signup"
)
TASK = DomainTask(request=REQUEST, address=ADDRESS, signals=PLAIN, first_seen_at=NOW)


def core_verdict(**changes: Any) -> Verdict:
    """The core verdict of an accepted ann@example.com, with ``changes``."""
    reply = SmtpReply(250, "2.1.5 OK", "2.1.5")
    facts = Facts(
        email="ann@example.com",
        address=ADDRESS,
        signals=PLAIN,
        reply=reply,
        phase=Phase.RCPT,
        mail_host="mx.example.com",
        mail_host_address="192.0.2.25",
        attempts=1,
    )
    return dataclasses.replace(decide(facts), **changes)


_EXAMPLES: dict[type[Any], Any] = {
    AddressRequest: REQUEST,
    VerdictRecord: verdict_record(core_verdict(), REQUEST, verified_at=NOW),
    DomainTask: TASK,
    HostTask: HostTask(
        domain_task=TASK, targets=(Target("mx", "192.0.2.1"),), route_expires_at=NOW
    ),
    DeadLetter: DeadLetter(
        key=b"k", value=b"v", topic="addresses", partition=0, offset=1, error="Bad.", failed_at=NOW
    ),
}
_EXAMPLES[DomainTasks] = DomainTasks((TASK, dataclasses.replace(TASK, attempt=2)))
_EXAMPLES[HostTasks] = HostTasks(
    (
        _EXAMPLES[HostTask],
        dataclasses.replace(_EXAMPLES[HostTask], targets=(Target("mx2", "192.0.2.2"),)),
    )
)
_EXAMPLES[RetryEvent] = RetryEvent(
    host_task=_EXAMPLES[HostTask], due_at=NOW, last_verdict=_EXAMPLES[VerdictRecord]
)

_SCHEMA_OF = {
    "io.mxprobe.AddressRequest": AddressRequest,
    "io.mxprobe.Verdict": VerdictRecord,
    "io.mxprobe.DomainTask": DomainTask,
    "io.mxprobe.DomainTasks": DomainTasks,
    "io.mxprobe.HostTask": HostTask,
    "io.mxprobe.HostTasks": HostTasks,
    "io.mxprobe.RetryEvent": RetryEvent,
    "io.mxprobe.DeadLetter": DeadLetter,
}


# -- Avro round trips and the wire format ---------------------------------------------


@settings(max_examples=200)
@given(RECORDS)
def test_every_record_survives_an_avro_round_trip(record: Record) -> None:
    """decode(encode(x)) == x for every record type."""
    assert decode(encode(record), type(record)) == record


def people_json(value: object) -> str:
    """A time or bytes value as to_json promises to write it, spelled out without the codecs."""
    if isinstance(value, datetime):
        assert value.utcoffset() == timedelta(0)
        day = f"{value.year:04d}-{value.month:02d}-{value.day:02d}"
        second = f"{value.hour:02d}:{value.minute:02d}:{value.second:02d}"
        return f"{day}T{second}.{value.microsecond // 1000:03d}Z"
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    raise TypeError(f"no JSON form for {value!r}")


def in_order(text: str) -> Any:
    """JSON with each object as its list of (key, value) pairs, so key order counts too."""
    return json.loads(text, object_pairs_hook=list)


@given(RECORDS)
def test_json_holds_every_field_of_every_record_type(record: Record) -> None:
    """to_json(x) is x's fields in order, nested records as objects, ISO times, base64 bytes."""
    expected = json.dumps(dataclasses.asdict(record), default=people_json)
    assert in_order(to_json(record)) == in_order(expected)


@given(RECORDS)
def test_encoding_is_single_object_with_the_current_fingerprint(record: Record) -> None:
    """Bytes start with C3 01 and the 8-byte fingerprint of the record's current schema."""
    name = {kind: schema for schema, kind in _SCHEMA_OF.items()}[type(record)]
    fingerprint = schemas.current_schemas()[name].fingerprint
    assert encode(record)[:10] == b"\xc3\x01" + fingerprint


def test_body_is_the_avro_binary_encoding() -> None:
    """After the header come the fields in Avro binary: zig-zag varints, length-prefixed strings."""
    request = AddressRequest(
        request_id="r",
        email="a@b",
        submitted_at=datetime(1970, 1, 1, 0, 0, 0, 1000, tzinfo=UTC),  # 1 ms
        source="s",
        max_age_s=-1,
        attributes={"k": "v"},
    )
    body = bytes.fromhex(
        "02 72"  # "r"
        "06 61 40 62"  # "a@b"
        "02"  # 1 ms, zig-zag
        "02 73"  # "s"
        "01"  # -1, zig-zag
        "02 02 6b 02 76 00"  # one map entry "k": "v", then the end of the map
    )
    assert encode(request)[10:] == body


def test_times_keep_whole_milliseconds() -> None:
    """Microseconds are cut on the wire (timestamp-millis)."""
    request = dataclasses.replace(REQUEST, submitted_at=NOW + timedelta(microseconds=1999))
    assert decode(encode(request), AddressRequest).submitted_at == NOW + timedelta(milliseconds=1)


# -- bad bytes: CodecError and nothing else -------------------------------------------


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.__name__)
@given(data=st.binary(max_size=200))
def test_garbage_is_a_codec_error(kind: type[Record], data: bytes) -> None:
    """Random bytes: CodecError, never another exception."""
    with pytest.raises(CodecError):
        decode(data, kind)


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.__name__)
@given(body=st.binary(max_size=200))
def test_garbage_after_a_valid_header_is_a_record_or_a_codec_error(
    kind: type[Record], body: bytes
) -> None:
    """A valid header and random bytes: a record of the kind, or CodecError; nothing else."""
    header = encode(_EXAMPLES[kind])[:10]
    try:
        result = decode(header + body, kind)
    except CodecError:
        return
    assert type(result) is kind


@given(record=RECORDS, data=st.data())
def test_truncated_bytes_are_a_codec_error(record: Record, data: st.DataObject) -> None:
    """Any proper prefix of an encoding: CodecError (not_avro or truncated)."""
    encoded = encode(record)
    cut = data.draw(st.integers(0, len(encoded) - 1))
    with pytest.raises(CodecError) as caught:
        decode(encoded[:cut], type(record))
    assert caught.value.reason in ("not_avro", "truncated")


@given(record=RECORDS, extra=st.binary(min_size=1, max_size=5))
def test_trailing_bytes_are_a_codec_error(record: Record, extra: bytes) -> None:
    """Bytes left over after the record: CodecError (trailing_bytes)."""
    with pytest.raises(CodecError) as caught:
        decode(encode(record) + extra, type(record))
    assert caught.value.reason == "trailing_bytes"


@given(record=RECORDS, kind=st.sampled_from(KINDS))
def test_another_schemas_bytes_are_a_codec_error(record: Record, kind: type[Record]) -> None:
    """A record decoded as another type: CodecError (wrong_schema) naming what it is."""
    if type(record) is kind:
        return
    with pytest.raises(CodecError) as caught:
        decode(encode(record), kind)
    assert caught.value.reason == "wrong_schema"


def test_unknown_fingerprint_is_a_codec_error() -> None:
    """Bytes from a schema version this reader does not know: CodecError (unknown_schema)."""
    encoded = encode(REQUEST)
    with pytest.raises(CodecError, match="does not know") as caught:
        decode(MAGIC + bytes(8) + encoded[10:], AddressRequest)
    assert caught.value.reason == "unknown_schema"


def test_a_decode_error_names_the_schema() -> None:
    """CodecError carries the schema's full name."""
    with pytest.raises(CodecError) as caught:
        decode(b"", VerdictRecord)
    assert caught.value.schema == "io.mxprobe.Verdict"


# -- data written with the previous schema version ------------------------------------


def test_data_written_with_the_previous_version_is_resolved_to_the_current(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A previous AddressRequest without attributes reads as one with the default {}."""
    older = json.loads((schemas.SCHEMA_DIR / "AddressRequest.avsc").read_text(encoding="utf-8"))
    older["fields"] = [f for f in older["fields"] if f["name"] != "attributes"]
    (tmp_path / "AddressRequest.avsc").write_text(json.dumps(older), encoding="utf-8")
    old = schemas.load_schemas(tmp_path)["io.mxprobe.AddressRequest"]
    monkeypatch.setattr(codecs, "previous_schemas", lambda: {old.name: old})
    codecs._specs.cache_clear()
    try:
        body = io.BytesIO()
        fastavro.schemaless_writer(
            body,
            old.parsed,
            {"request_id": "r", "email": "a@b", "submitted_at": NOW, "source": "s", "max_age_s": 9},
        )
        decoded = decode(MAGIC + old.fingerprint + body.getvalue(), AddressRequest)
    finally:
        codecs._specs.cache_clear()
    assert decoded == AddressRequest(
        request_id="r", email="a@b", submitted_at=NOW, source="s", max_age_s=9, attributes={}
    )


# -- encoding values that do not fit -------------------------------------------------


@pytest.mark.parametrize(
    "record",
    [
        dataclasses.replace(REQUEST, submitted_at=datetime(2025, 1, 31)),  # naive
        dataclasses.replace(REQUEST, email="ann\udc80@example.com"),  # lone surrogate
        dataclasses.replace(REQUEST, max_age_s=2**63),  # beyond a long
        dataclasses.replace(REQUEST, source=None),  # type: ignore[arg-type]
        {"request_id": "r-1"},  # not a record
    ],
    ids=["naive time", "surrogate", "out of range", "None for a string", "a dict"],
)
def test_a_value_that_does_not_fit_is_a_codec_error(record: Any) -> None:
    """encode refuses what the schema cannot hold: CodecError (invalid_value)."""
    with pytest.raises(CodecError) as caught:
        encode(record)
    assert caught.value.reason == "invalid_value"


# -- JSON for people ------------------------------------------------------------------


def test_json_uses_schema_names_iso_times_and_base64_bytes() -> None:
    """Times are ISO 8601 UTC with milliseconds; bytes are base64; Unicode stays readable."""
    letter = DeadLetter(
        value=b"\xff\x00", topic="addresses", partition=1, offset=7, error="Bücher", failed_at=NOW
    )
    assert json.loads(to_json(letter)) == {
        "key": None,
        "value": "/wA=",
        "topic": "addresses",
        "partition": 1,
        "offset": 7,
        "error": "Bücher",
        "failed_at": "2025-01-31T12:00:00.000Z",
    }
    assert "Bücher" in to_json(letter)


def test_json_refuses_a_confidence_that_is_not_a_number() -> None:
    """NaN has no JSON form: CodecError rather than non-standard JSON."""
    verdict = dataclasses.replace(_EXAMPLES[VerdictRecord], confidence=float("nan"))
    with pytest.raises(CodecError):
        to_json(verdict)


# -- Faust codecs -----------------------------------------------------------------------


@pytest.fixture
def faust_registry(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """Faust's codec registry as in a fresh process (no codec of ours yet), restored after."""
    registry = {name: c for name, c in faust_codecs.codecs.items() if name not in CODEC_NAMES}
    monkeypatch.setattr(faust_codecs, "codecs", registry)
    codecs.register_codecs.cache_clear()  # as if register_codecs had never run
    yield registry
    codecs.register_codecs.cache_clear()  # the real registry may lack them: register anew


def test_importing_the_codecs_registers_nothing() -> None:
    """Import has no side effects: the Faust registry does not know avro-verdict yet."""
    program = (
        "import streams.pipeline.codecs\n"
        "from faust.serializers import codecs\n"
        "assert 'avro-verdict' not in codecs.codecs, sorted(codecs.codecs)\n"
    )
    subprocess.run([sys.executable, "-c", program], check=True, cwd=Path(__file__).parents[2])


def test_register_codecs_registers_one_codec_per_record_type(
    faust_registry: dict[str, Any],
) -> None:
    """avro-address-request ... avro-dead-letter, each for its own record type."""
    codecs.register_codecs()
    assert {name: faust_registry[name].kind for name in CODEC_NAMES} == {
        "avro-address-request": AddressRequest,
        "avro-verdict": VerdictRecord,
        "avro-domain-task": DomainTask,
        "avro-domain-tasks": DomainTasks,
        "avro-host-task": HostTask,
        "avro-host-tasks": HostTasks,
        "avro-retry-event": RetryEvent,
        "avro-dead-letter": DeadLetter,
    }


def test_register_codecs_writes_into_faust_once_per_process(
    faust_registry: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Later calls (one per Pipeline) write nothing into Faust's global registry."""
    codecs.register_codecs()
    first = {name: faust_registry[name] for name in CODEC_NAMES}
    writes: list[str] = []
    monkeypatch.setattr(faust_codecs, "register", lambda name, codec: writes.append(name))
    codecs.register_codecs()
    codecs.register_codecs()
    assert writes == []
    assert all(faust_registry[name] is codec for name, codec in first.items())


@pytest.mark.parametrize("name", sorted(CODEC_NAMES))
def test_a_faust_codec_round_trips_its_records(faust_registry: dict[str, Any], name: str) -> None:
    """Faust's dumps/loads with the registered name give back the record, as Avro bytes."""
    codecs.register_codecs()
    record = _EXAMPLES[CODEC_NAMES[name]]
    data = faust_codecs.dumps(name, record)
    assert data == encode(record)
    assert faust_codecs.loads(name, data) == record


def test_a_faust_codec_refuses_another_record_type(faust_registry: dict[str, Any]) -> None:
    """Sending a request to a verdict topic is a CodecError, not a silently wrong event."""
    codecs.register_codecs()
    with pytest.raises(CodecError, match="VerdictRecord codec was given a AddressRequest"):
        faust_codecs.dumps("avro-verdict", REQUEST)


def test_faust_wraps_a_codec_error_in_value_decode_error(faust_registry: dict[str, Any]) -> None:
    """In Faust's own decoding, our CodecError arrives as ValueDecodeError (the message is kept)."""
    codecs.register_codecs()
    with pytest.raises(ValueDecodeError, match="no Avro single-object encoding"):
        Registry().loads_value(None, b"garbage", serializer="avro-verdict")


# -- parsing is cached ----------------------------------------------------------------


def test_schemas_are_parsed_once_not_per_event(monkeypatch: pytest.MonkeyPatch) -> None:
    """After the first event, encoding, decoding and JSON parse or load no schema."""
    calls: list[object] = []

    def counting(real: Any) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            calls.append(args[0])
            return real(*args, **kwargs)

        return call

    for module, function in [
        (schemas, "parse_schema"),
        (schemas, "load_schema"),
        (codecs, "parse_schema"),
    ]:
        monkeypatch.setattr(module, function, counting(getattr(module, function)))
    schemas.load_schemas.cache_clear()
    codecs._specs.cache_clear()
    try:
        decode(encode(REQUEST), AddressRequest)
        to_json(REQUEST)
        first = len(calls)
        for _ in range(50):
            decode(encode(REQUEST), AddressRequest)
            to_json(REQUEST)
    finally:
        schemas.load_schemas.cache_clear()
        codecs._specs.cache_clear()
    assert first > 0
    assert len(calls) == first


# -- records and the core ---------------------------------------------------------------


def test_verdict_record_counts_latency_from_submission() -> None:
    """latency_ms is verified_at - submitted_at, in milliseconds."""
    record = verdict_record(core_verdict(), REQUEST, verified_at=NOW + timedelta(seconds=1.25))
    assert (record.latency_ms, record.request_id, record.attributes) == (1250, "r-1", {})


def test_verdict_record_carries_the_schema_version() -> None:
    """A new verdict says which Verdict schema version wrote it."""
    assert verdict_record(core_verdict(), REQUEST, verified_at=NOW).schema_version == (
        VERDICT_SCHEMA_VERSION
    )


@pytest.mark.parametrize("reason", list(Reason))
def test_a_record_gives_back_its_core_verdict(reason: Reason) -> None:
    """to_verdict() inverts verdict_record() for every reason."""
    verdict = core_verdict(reason=reason)
    assert verdict_record(verdict, REQUEST, verified_at=NOW).to_verdict() == verdict


def test_an_unknown_reason_is_a_codec_error() -> None:
    """A reason from a newer writer reads fine but has no core value: CodecError."""
    record = dataclasses.replace(
        verdict_record(core_verdict(), REQUEST, verified_at=NOW), reason="quantum_bounce"
    )
    with pytest.raises(CodecError, match="quantum_bounce") as caught:
        record.to_verdict()
    assert caught.value.reason == "unknown_reason"


def test_a_host_task_keeps_the_route() -> None:
    """from_route keeps the targets in order and the expiry; mail_host is the first host."""
    targets = (Target("mx1.example.com", "192.0.2.1"), Target("mx2.example.com", "192.0.2.2"))
    route = DomainRoute(targets=targets, expires_at=seconds_from_datetime(NOW))
    task = HostTask.from_route(TASK, route)
    assert (task.targets, task.route_expires_at, task.mail_host) == (
        targets,
        NOW,
        "mx1.example.com",
    )


def test_a_route_without_targets_makes_no_host_task() -> None:
    """A domain without a mail host gets a verdict, not a probe task."""
    with pytest.raises(ValueError, match="no mail host"):
        HostTask.from_route(TASK, DomainRoute(problem=None, expires_at=0.0))


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [
        (0.0, datetime(1970, 1, 1, tzinfo=UTC)),
        (1.001, datetime(1970, 1, 1, 0, 0, 1, 1000, tzinfo=UTC)),
        (1.0019, datetime(1970, 1, 1, 0, 0, 1, 1000, tzinfo=UTC)),
        (-0.0005, datetime(1969, 12, 31, 23, 59, 59, 999000, tzinfo=UTC)),
        (1738324800.5, datetime(2025, 1, 31, 12, 0, 0, 500000, tzinfo=UTC)),
    ],
)
def test_datetime_from_seconds_cuts_to_the_millisecond(seconds: float, expected: datetime) -> None:
    """Epoch seconds → aware UTC datetime, floored to whole milliseconds."""
    assert datetime_from_seconds(seconds) == expected


def test_reasons_raised_below_the_codecs_are_codec_problems(tmp_path: Path) -> None:
    """Errors from schemas and records carry reasons that CodecProblem documents."""
    current = schemas.current_schemas()
    verdict = dataclasses.replace(_EXAMPLES[VerdictRecord], reason="quantum_bounce")
    failures = [
        lambda: schemas.load_schemas(tmp_path),  # no schema files
        lambda: schemas.read_as(
            {"request_id": "r", "email": "e", "submitted_at": 0, "source": "s"},
            writer=current["io.mxprobe.AddressRequest"],
            reader=current["io.mxprobe.Verdict"],
        ),
        verdict.to_verdict,
    ]
    reasons = []
    for fail in failures:
        with pytest.raises(CodecError) as caught:
            fail()
        reasons.append(CodecProblem(caught.value.reason))
    assert len(set(reasons)) == len(failures)


# -- hostile bytes ----------------------------------------------------------------------
#
# Whatever arrives on a topic, decode gives a record of the kind asked for or
# a CodecError with a documented reason; nothing else escapes, and nothing
# takes long, whatever lengths and counts the bytes claim.

#: Every header a reader may meet: C3 01 and a fingerprint of a current or previous schema.
KNOWN_HEADERS = sorted(
    {
        MAGIC + schema.fingerprint
        for schema in [*schemas.current_schemas().values(), *schemas.previous_schemas().values()]
    }
)
REASONS = {problem.value for problem in CodecProblem}


def decoded_or_reason(data: bytes, kind: type[Record]) -> Record | str:
    """The record ``data`` holds, or the reason of the CodecError (any other error escapes)."""
    try:
        return decode(data, kind)
    except CodecError as exc:
        return exc.reason


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.__name__)
@given(header=st.sampled_from(KNOWN_HEADERS), body=st.binary(max_size=300))
def test_garbage_after_any_known_header_is_a_record_or_a_codec_error(
    kind: type[Record], header: bytes, body: bytes
) -> None:
    """Any known fingerprint (any type, current or previous) before random bytes: no other error."""
    result = decoded_or_reason(header + body, kind)
    assert type(result) is kind or result in REASONS


@given(record=RECORDS, data=st.data())
def test_a_corrupted_encoding_is_a_record_or_a_codec_error(
    record: Record, data: st.DataObject
) -> None:
    """An encoding with a few bytes of its body changed: a record of its type, or CodecError."""
    encoded = bytearray(encode(record))
    for _ in range(data.draw(st.integers(min_value=1, max_value=4))):
        at = data.draw(st.integers(min_value=10, max_value=len(encoded) - 1))
        encoded[at] = data.draw(st.integers(min_value=0, max_value=255))
    result = decoded_or_reason(bytes(encoded), type(record))
    assert type(result) is type(record) or result in REASONS


@given(
    fingerprint=st.binary(min_size=8, max_size=8),
    body=st.binary(max_size=100),
    kind=st.sampled_from(KINDS),
)
def test_any_unknown_fingerprint_is_unknown_schema(
    fingerprint: bytes, body: bytes, kind: type[Record]
) -> None:
    """C3 01 and a fingerprint no schema has: CodecError (unknown_schema), naming it."""
    assume(MAGIC + fingerprint not in KNOWN_HEADERS)
    with pytest.raises(CodecError, match=fingerprint.hex()) as caught:
        decode(MAGIC + fingerprint + body, kind)
    assert caught.value.reason == "unknown_schema"


SHARED_TOPICS: list[tuple[type[Record], ...]] = [
    (DomainTask, DomainTasks, RetryEvent),
    (HostTask, HostTasks, RetryEvent),
]


@pytest.mark.parametrize("kinds", SHARED_TOPICS, ids=lambda ks: "|".join(k.__name__ for k in ks))
@given(
    data=st.binary(max_size=200)
    | st.builds(bytes.__add__, st.sampled_from(KNOWN_HEADERS), st.binary(max_size=200))
)
def test_decode_any_gives_one_of_its_kinds_or_a_codec_error(
    kinds: tuple[type[Record], ...], data: bytes
) -> None:
    """Random bytes on a topic of two record types: one of them, or CodecError."""
    try:
        result = codecs.decode_any(data, kinds)
    except CodecError as exc:
        assert exc.reason in REASONS
        return
    assert type(result) in kinds


@given(
    task=DOMAIN_TASKS
    | HOST_TASKS
    | RETRIES
    | st.lists(DOMAIN_TASKS, max_size=5).map(lambda tasks: DomainTasks(tuple(tasks)))
    | st.lists(HOST_TASKS, max_size=5).map(lambda tasks: HostTasks(tuple(tasks)))
)
def test_decode_any_round_trips_the_records_of_a_shared_topic(
    task: DomainTask | DomainTasks | HostTask | HostTasks | RetryEvent,
) -> None:
    """A task, several, or a retry event comes back from decode_any as itself, told
    by its fingerprint."""
    kinds: tuple[type[Record], ...] = (
        (DomainTask, DomainTasks, RetryEvent)
        if isinstance(task, DomainTask | DomainTasks)
        else (HostTask, HostTasks, RetryEvent)
    )
    assert codecs.decode_any(encode(task), kinds) == task


def avro_long(number: int) -> bytes:
    """``number`` as Avro writes a long: zig-zag, then base-128 varint (Avro spec, "Encodings")."""
    value = (number << 1) ^ (number >> 63)
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


_REQUEST_BYTES = encode(dataclasses.replace(REQUEST, attributes={}))


def test_the_request_bytes_end_with_the_empty_map() -> None:
    """The claims below replace the last byte: the attribute map's closing block count 0."""
    assert decode(_REQUEST_BYTES[:-1] + avro_long(0), AddressRequest).attributes == {}


# Bytes after a valid AddressRequest header that claim far more than they hold.
CLAIMS = {
    "a string of 2**62 bytes": _REQUEST_BYTES[:10] + avro_long(2**62) + b"abc",
    "a string of -5 bytes": _REQUEST_BYTES[:10] + avro_long(-5) + b"abc",
    "a varint that never ends": _REQUEST_BYTES[:10] + b"\xff" * 64,
    "a map of 2**62 entries": _REQUEST_BYTES[:-1] + avro_long(2**62) + b"\x02k\x02v",
    "a map block of -2**62 entries": _REQUEST_BYTES[:-1] + avro_long(-(2**62)) + avro_long(4),
    "a map of 2**20 empty entries": _REQUEST_BYTES[:-1] + avro_long(2**20) + b"\x00\x00" * 100,
}


@pytest.mark.parametrize("data", CLAIMS.values(), ids=CLAIMS.keys())
def test_lengths_and_counts_beyond_the_data_are_a_quick_codec_error(data: bytes) -> None:
    """Claimed sizes are never trusted: CodecError (truncated or malformed) at once."""
    started = time.perf_counter()
    with pytest.raises(CodecError) as caught:
        decode(data, AddressRequest)
    assert time.perf_counter() - started < 1
    assert caught.value.reason in ("truncated", "malformed")
