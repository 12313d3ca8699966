"""Events to bytes and back: Avro for topics, JSON for people, Faust codecs.

Wire format: Avro *single-object encoding* (Avro specification, "Single
object encoding"): the two bytes ``C3 01``, the 8-byte CRC-64-AVRO
fingerprint of the writer's schema (little-endian), then the record in
fastavro's schemaless binary encoding. The fingerprint tells a reader which
version of a schema wrote the bytes, so :func:`decode` reads data written
with the current schema or the previous one (``schemas/previous/``,
resolved to the current one), and says *which* schema wrote bytes it cannot
read, instead of misreading them. Other Avro libraries read and write the
format (Java ``BinaryMessageDecoder``, for one).

Every failure comes out as :class:`~streams.errors.CodecError` with a stable
``reason`` (a :class:`CodecProblem`); no fastavro, ``struct``, ``EOFError``
or JSON error escapes. Schemas are parsed once per process (see
:mod:`streams.pipeline.schemas`), never per call.

Nothing happens at import: :func:`register_codecs` registers the Faust codecs
(``avro-verdict``, ...) when the first app is built, once per process.
"""

from __future__ import annotations

import base64
import enum
import functools
import io
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, cast

from fastavro import parse_schema, schemaless_reader, schemaless_writer
from faust.serializers import codecs as faust_codecs
from faust.types.codecs import CodecT

from streams.errors import CodecError
from streams.pipeline.records import (
    RECORD_TYPES,
    AddressRequest,
    DeadLetter,
    DomainTask,
    DomainTasks,
    HostTask,
    HostTasks,
    R,
    Record,
    RetryEvent,
    VerdictRecord,
    datetime_from_millis,
    from_avro,
    to_avro,
)
from streams.pipeline.schemas import AvroSchema, current_schemas, previous_schemas

__all__ = [
    "CODEC_NAMES",
    "MAGIC",
    "AvroCodec",
    "CodecProblem",
    "decode",
    "decode_any",
    "encode",
    "register_codecs",
    "to_json",
]

#: The marker that starts an Avro single-object encoded event.
MAGIC: Final = b"\xc3\x01"
_HEADER: Final = len(MAGIC) + 8  # marker + fingerprint

#: The Faust codec name of each record type (``value_serializer="avro-verdict"``).
CODEC_NAMES: Final[Mapping[str, type[Record]]] = {
    "avro-address-request": AddressRequest,
    "avro-verdict": VerdictRecord,
    "avro-domain-task": DomainTask,
    "avro-domain-tasks": DomainTasks,
    "avro-host-task": HostTask,
    "avro-host-tasks": HostTasks,
    "avro-retry-event": RetryEvent,
    "avro-dead-letter": DeadLetter,
}


class CodecProblem(enum.StrEnum):
    """Stable identifiers of what was wrong, carried as ``CodecError.reason``."""

    NOT_AVRO = "not_avro"  # too short, or no single-object marker
    WRONG_SCHEMA = "wrong_schema"  # another record type (a topic with the wrong serializer)
    UNKNOWN_SCHEMA = "unknown_schema"  # a schema version this reader does not know
    TRUNCATED = "truncated"  # the bytes end in the middle of the record
    MALFORMED = "malformed"  # the bytes do not follow the schema
    TRAILING_BYTES = "trailing_bytes"  # bytes left over after the record
    INVALID_VALUE = "invalid_value"  # a value to encode does not fit its schema
    # Raised by the modules below this one, with these same values:
    SCHEMA_INVALID = "schema_invalid"  # schemas: a schema file is broken
    INCOMPATIBLE = "incompatible"  # schemas.read_as: a reader cannot read a writer's data
    UNKNOWN_REASON = "unknown_reason"  # records: a verdict reason newer than this code


@dataclass(frozen=True, slots=True)
class _Spec:
    """One record type: its current schema and the writers its readers accept."""

    kind: type[Record]
    schema: AvroSchema
    header: bytes
    previous: Mapping[bytes, dict[str, Any]]  # fingerprint → writer schema to resolve from
    named: Mapping[str, Any]  # the named types of the schema's definition, for JSON


@functools.cache
def _specs() -> tuple[Mapping[type[Record], _Spec], Mapping[bytes, str]]:
    """Every record type's spec, and the schema name of every fingerprint known."""
    current, previous = current_schemas(), previous_schemas()
    specs: dict[type[Record], _Spec] = {}
    names: dict[bytes, str] = {}
    for kind, name in RECORD_TYPES.items():
        schema = current[name]
        older = previous.get(name)
        resolvable: dict[bytes, dict[str, Any]] = {}
        if older is not None and older.fingerprint != schema.fingerprint:
            resolvable[older.fingerprint] = older.parsed
            names[older.fingerprint] = f"{name} (previous version)"
        header = MAGIC + schema.fingerprint
        specs[kind] = _Spec(kind, schema, header, resolvable, _named_types(schema.definition))
        names[schema.fingerprint] = name
    return specs, names


def _spec(kind: type[Any]) -> _Spec:  # any type: a wrong one is a CodecError
    try:
        return _specs()[0][kind]
    except KeyError:
        raise CodecError(
            f"{getattr(kind, '__name__', kind)!s} is not an mxprobe record; "
            f"encode one of {', '.join(k.__name__ for k in RECORD_TYPES)}.",
            reason=CodecProblem.INVALID_VALUE,
        ) from None


def encode(record: Record) -> bytes:
    """The Avro single-object encoding of ``record`` with its current schema.

    Raises:
        CodecError: (reason ``invalid_value``) ``record`` is not a record, or a
            value in it does not fit the schema (a naive datetime, a string
            with a lone surrogate, a number out of range).
    """
    spec = _spec(type(record))
    buffer = io.BytesIO()
    buffer.write(spec.header)
    try:
        schemaless_writer(buffer, spec.schema.parsed, to_avro(record))
    except Exception as exc:  # fastavro raises TypeError, ValueError, OverflowError, ...
        raise CodecError(
            f"Cannot encode this {type(record).__name__} as {spec.schema.name}: {exc}.",
            reason=CodecProblem.INVALID_VALUE,
            schema=spec.schema.name,
        ) from exc
    return buffer.getvalue()


def decode(data: bytes, kind: type[R]) -> R:
    """The record of type ``kind`` that ``data`` holds.

    Data written with the current schema or the previous one is read; the
    previous is resolved to the current (Avro "Schema Resolution").

    Raises:
        CodecError: whatever is wrong with ``data``; ``reason`` says what
            (see :class:`CodecProblem`).
    """
    return cast(R, _decode(data, kind))


def decode_any(data: bytes, kinds: tuple[type[R], ...]) -> R:
    """The record of whichever of ``kinds`` wrote ``data``, told by its schema fingerprint.

    A topic that carries two record types (the probe stage reads new tasks and
    tasks back from a retry tier) is read with this.

    Raises:
        CodecError: as :func:`decode` with ``kinds[0]`` when no kind matches.
    """
    fingerprint = data[2:_HEADER]
    for kind in kinds:
        spec = _spec(kind)
        if fingerprint == spec.header[2:] or fingerprint in spec.previous:
            return cast(R, _decode(data, kind))
    return cast(R, _decode(data, kinds[0]))


def _decode(data: bytes, kind: type[Any]) -> Record:
    spec = _spec(kind)
    name = spec.schema.name
    if len(data) < _HEADER or data[:2] != MAGIC:
        raise CodecError(
            f"These {len(data)} bytes are no Avro single-object encoding of {name} "
            "(no C3 01 marker); check the serializer of the producer.",
            reason=CodecProblem.NOT_AVRO,
            schema=name,
        )
    writer, reader = spec.schema.parsed, None
    if data[2:_HEADER] != spec.header[2:]:
        older = spec.previous.get(data[2:_HEADER])
        if older is None:
            raise _unknown_writer(data[2:_HEADER], name)
        writer, reader = older, spec.schema.parsed
    buffer = io.BytesIO(data)
    buffer.seek(_HEADER)
    try:
        datum = schemaless_reader(buffer, writer, reader)
    except Exception as exc:  # EOFError, IndexError, UnicodeDecodeError, OverflowError, ...
        if isinstance(exc, EOFError) or buffer.tell() == len(data):
            # fastavro's compiled reader raises IndexError for a number cut short.
            raise CodecError(
                f"The {name} ends early ({len(data)} bytes); the message was cut.",
                reason=CodecProblem.TRUNCATED,
                schema=name,
            ) from exc
        raise _malformed(name, exc) from exc
    if buffer.tell() != len(data):
        raise CodecError(
            f"{len(data) - buffer.tell()} bytes are left over after the {name}; "
            "the message is corrupt or was written by another serializer.",
            reason=CodecProblem.TRAILING_BYTES,
            schema=name,
        )
    try:
        if not isinstance(datum, dict):
            raise TypeError(f"read a {type(datum).__name__}, not a record")
        return from_avro(kind, datum)
    except (KeyError, TypeError, ValueError) as exc:
        raise _malformed(name, exc) from exc


def to_json(record: Record) -> str:
    """``record`` as one line of JSON for people (and ``--format json``).

    Fields are named as in the schema; times are ISO 8601 in UTC with
    milliseconds (``2025-01-31T12:00:00.000Z``), bytes are base64.

    Raises:
        CodecError: (reason ``invalid_value``) as :func:`encode`.
    """
    spec = _spec(type(record))
    try:
        value = _jsonable(to_avro(record), spec.schema.definition, spec.named)
        return json.dumps(value, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise CodecError(
            f"Cannot write this {type(record).__name__} as JSON: {exc}.",
            reason=CodecProblem.INVALID_VALUE,
            schema=spec.schema.name,
        ) from exc


class AvroCodec(faust_codecs.Codec):
    """A Faust codec for one record type (``value_serializer="avro-verdict"``).

    ``dumps`` takes a record of that type, ``loads`` returns one; both raise
    :class:`~streams.errors.CodecError`, which Faust wraps in its own
    ``ValueDecodeError`` when it decodes.
    """

    def __init__(self, kind: type[Record], children: tuple[CodecT, ...] | None = None) -> None:
        """A codec of ``kind`` records (``children`` as Faust's chaining passes them)."""
        super().__init__(children, kind=kind)
        self.kind = kind

    def _dumps(self, s: Any) -> bytes:
        if type(s) is not self.kind:
            raise CodecError(
                f"The {self.kind.__name__} codec was given a {type(s).__name__}; "
                "send records of its own type to this topic.",
                reason=CodecProblem.INVALID_VALUE,
                schema=RECORD_TYPES[self.kind],
            )
        return encode(s)

    def _loads(self, s: bytes) -> Any:
        return _decode(s, self.kind)


@functools.cache
def register_codecs() -> None:
    """Register an :class:`AvroCodec` under each name of :data:`CODEC_NAMES` with Faust.

    Faust's codec registry is global to the process, so this writes into it
    once per process, on the first call; later calls (one per ``Pipeline``)
    do nothing.
    """
    for name, kind in CODEC_NAMES.items():
        faust_codecs.register(name, AvroCodec(kind))


def _unknown_writer(fingerprint: bytes, name: str) -> CodecError:
    other = _specs()[1].get(fingerprint)
    if other is not None:
        return CodecError(
            f"These bytes hold {other}, not {name}; check the serializer of the topic.",
            reason=CodecProblem.WRONG_SCHEMA,
            schema=name,
        )
    return CodecError(
        f"These bytes were written with a schema this version of mxprobe does not know "
        f"(fingerprint {fingerprint.hex()}), not the current or previous {name}; "
        "upgrade mxprobe, or replay the message once it is upgraded.",
        reason=CodecProblem.UNKNOWN_SCHEMA,
        schema=name,
    )


def _malformed(name: str, exc: Exception) -> CodecError:
    return CodecError(
        f"These bytes do not follow the {name} schema ({type(exc).__name__}: {exc}); "
        "the message is corrupt.",
        reason=CodecProblem.MALFORMED,
        schema=name,
    )


def _named_types(definition: Mapping[str, Any]) -> Mapping[str, Any]:
    """Every named type of a self-contained schema, by full name (fastavro collects them)."""
    found: dict[str, Any] = {}
    parse_schema(dict(definition), found, _write_hint=False)
    return found


def _jsonable(value: Any, schema: Any, named: Mapping[str, Any]) -> Any:
    """A datum in fastavro's form as JSON-ready values (times ISO 8601, bytes base64)."""
    schema = named.get(schema, schema) if isinstance(schema, str) else schema
    if value is None:
        return None
    if isinstance(schema, list):  # [null, X]: the value is not null
        return _jsonable(value, _non_null(schema), named)
    if isinstance(schema, str):
        return base64.b64encode(value).decode("ascii") if schema == "bytes" else value
    kind = schema["type"]
    if schema.get("logicalType") == "timestamp-millis":
        moment = datetime_from_millis(value) if isinstance(value, int) else value
        return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    if kind == "record":
        return {f["name"]: _jsonable(value[f["name"]], f["type"], named) for f in schema["fields"]}
    if kind == "array":
        return [_jsonable(item, schema["items"], named) for item in value]
    if kind == "map":
        return {key: _jsonable(item, schema["values"], named) for key, item in value.items()}
    return _jsonable(value, kind, named)  # enum symbol, or {"type": "string"}


def _non_null(union: list[Any]) -> Any:
    branches = [branch for branch in union if branch != "null"]
    if len(branches) != 1:
        raise TypeError(f"only [null, X] unions are supported, not {union}")
    return branches[0]
