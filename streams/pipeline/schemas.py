"""The Avro schemas of the pipeline's events: loaded once, checked, fingerprinted.

The ``.avsc`` files in ``schemas/`` at the top of the repository are the wire
contract (``schemas/previous/`` keeps the version before the current one, so
data written with it stays readable). A file may refer to a named type that
another file defines (``"type": "io.mxprobe.DomainTask"``); :func:`load_schemas`
resolves those references and turns every file into a *self-contained*
schema (each named type defined at its first use), the form a consumer
outside mxprobe, a schema registry or a warehouse loader can take as is.

Each schema gets the 8-byte CRC-64-AVRO fingerprint of its Parsing Canonical
Form (Avro specification, "Schema Fingerprints"). The codecs put it in front
of every event (Avro "Single object encoding"), so a reader knows which
version of a schema wrote the bytes it holds. Documentation and defaults are
not part of the canonical form: editing a ``doc`` changes no fingerprint.

Parsing is cached: each directory is read and parsed once per process.
"""

from __future__ import annotations

import functools
import io
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro.schema import (
    SchemaParseException,
    UnknownType,
    fingerprint,
    to_parsing_canonical_form,
)

from streams.errors import CodecError

__all__ = [
    "NAMESPACE",
    "PREVIOUS_DIR",
    "SCHEMA_DIR",
    "AvroSchema",
    "current_schemas",
    "load_schemas",
    "previous_schemas",
    "read_as",
]

#: The namespace of every mxprobe schema.
NAMESPACE = "io.mxprobe"

#: The current schemas (``schemas/`` at the top of the repository).
SCHEMA_DIR = Path(__file__).resolve().parents[2] / "schemas"

#: The previous version of each schema, kept so data written with it stays readable.
PREVIOUS_DIR = SCHEMA_DIR / "previous"

_NAMED = frozenset({"record", "error", "enum", "fixed"})


@dataclass(frozen=True, slots=True)
class AvroSchema:
    """One schema file, resolved and parsed.

    Attributes:
        name: The full name of the top-level type, e.g. ``io.mxprobe.Verdict``.
        path: The file it was read from.
        definition: The self-contained schema (JSON-ready; named types defined
            at their first use, full names everywhere).
        parsed: The same, parsed by fastavro (what its readers and writers take).
        fingerprint: The CRC-64-AVRO fingerprint of the Parsing Canonical Form,
            8 bytes, little-endian (as in Avro single-object encoding).
    """

    name: str
    path: Path
    definition: dict[str, Any]  # not to be changed
    parsed: dict[str, Any]  # not to be changed
    fingerprint: bytes


@functools.cache
def load_schemas(directory: Path) -> Mapping[str, AvroSchema]:
    """Read, resolve and parse every ``*.avsc`` file of ``directory`` (once per process).

    Files may refer to named types defined in other files of the same
    directory, in any order; each named type must be defined exactly once.

    Args:
        directory: A directory of ``.avsc`` files (``SCHEMA_DIR``, ``PREVIOUS_DIR``).

    Returns:
        The schemas by full name of their top-level type.

    Raises:
        CodecError: (reason ``schema_invalid``) a file is missing, is not
            JSON, is not a valid Avro schema, refers to a type no file
            defines, or defines a type another file defines too.
    """
    raw = {path: _read_json(path) for path in sorted(directory.glob("*.avsc"))}
    if not raw:
        raise _invalid(f"No Avro schema (*.avsc) found in {directory}; check the installation.")
    named: dict[str, Any] = {}
    parsed_files: dict[Path, dict[str, Any]] = {}
    pending = dict(raw)
    while pending:
        waiting = len(pending)
        missing: dict[Path, str] = {}  # files that refer to a type not parsed yet
        for path, schema in list(pending.items()):
            trial = dict(named)  # a failed parse must not leave half its names behind
            try:
                parsed = parse_schema(schema, trial, _write_hint=False)
            except UnknownType as exc:
                missing[path] = exc.name
                continue
            except (SchemaParseException, TypeError, ValueError, KeyError, AttributeError) as exc:
                raise _invalid(f"{path} is not a valid Avro schema: {exc}.") from exc
            if not isinstance(parsed, dict) or parsed.get("type") not in _NAMED:
                raise _invalid(f"{path} must define one named type (a record) at its top level.")
            twice = sorted(_defined_names(parsed) & named.keys())
            if twice:
                raise _invalid(
                    f"{path} defines {', '.join(twice)}, which another file defines too; "
                    "refer to it by its full name instead."
                )
            named = trial
            parsed_files[path] = parsed
            del pending[path]
        if len(pending) == waiting:  # a whole pass parsed no file: the rest can never parse
            problems = "; ".join(f"{path.name} refers to {name}" for path, name in missing.items())
            raise _invalid(
                f"Unknown Avro types in {directory}: {problems}; "
                "no file defines them (check the spelling and the namespace)."
            )
    schemas = (_resolve(path, parsed, named) for path, parsed in parsed_files.items())
    return {schema.name: schema for schema in schemas}


def current_schemas() -> Mapping[str, AvroSchema]:
    """The current schemas (``SCHEMA_DIR``), by full name."""
    return load_schemas(SCHEMA_DIR)


def previous_schemas() -> Mapping[str, AvroSchema]:
    """The previous version of each schema (``PREVIOUS_DIR``), by full name."""
    return load_schemas(PREVIOUS_DIR)


def read_as(datum: Mapping[str, Any], *, writer: AvroSchema, reader: AvroSchema) -> dict[str, Any]:
    """Write ``datum`` with one schema and read it back with another.

    This is Avro schema resolution (specification, "Schema Resolution"): the
    check that ``reader`` can read data written with ``writer``. A field the
    reader adds needs a default; an enum symbol the reader lacks needs the
    reader's enum default; a type may only be promoted (int to long, ...).

    Args:
        datum: A value of ``writer`` in fastavro's form (dicts for records).
        writer: The schema the data is written with (e.g. the previous version).
        reader: The schema the data is read with (e.g. the current version).

    Returns:
        The datum as ``reader`` sees it.

    Raises:
        CodecError: reason ``invalid_value`` when ``datum`` does not fit
            ``writer``; reason ``incompatible`` when ``reader`` cannot read it.
    """
    buffer = io.BytesIO()
    try:
        schemaless_writer(buffer, writer.parsed, dict(datum))
    except Exception as exc:  # fastavro raises many types for a value that does not fit
        raise CodecError(
            f"The value does not fit {writer.name} of {writer.path}: {exc}.",
            reason="invalid_value",
            schema=writer.name,
        ) from exc
    buffer.seek(0)
    try:
        result = schemaless_reader(buffer, writer.parsed, reader.parsed)
    except Exception as exc:  # SchemaResolutionError, or a decoding error of any type
        raise CodecError(
            f"{reader.name} of {reader.path} cannot read data written with {writer.path}: "
            f"{exc}. Give new fields a default, keep enum defaults, and add "
            "rather than remove or rename (see README, Schemas).",
            reason="incompatible",
            schema=reader.name,
        ) from exc
    if not isinstance(result, dict):
        raise CodecError(
            f"{reader.name} read a {type(result).__name__}, not a record.",
            reason="incompatible",
            schema=reader.name,
        )
    return result


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _invalid(f"Cannot read the Avro schema {path}: {exc}.") from exc


def _resolve(path: Path, parsed: dict[str, Any], named: Mapping[str, Any]) -> AvroSchema:
    """Make one parsed file self-contained, parse that, and fingerprint it."""
    definition: dict[str, Any] = _inline(parsed, named, set())
    canonical = to_parsing_canonical_form(definition)
    standalone = parse_schema(definition)
    assert isinstance(standalone, dict)  # a record in, a record out
    return AvroSchema(
        name=definition["name"],
        path=path,
        definition=definition,
        parsed=standalone,
        fingerprint=bytes.fromhex(fingerprint(canonical, "CRC-64-AVRO")),
    )


def _inline(node: Any, named: Mapping[str, Any], seen: set[str]) -> Any:
    """``node`` with each named type defined at its first use and referred to after.

    ``node`` is in fastavro's parsed form: full names everywhere, references
    to named types as strings, bookkeeping keys starting with ``__``.
    """
    if isinstance(node, str):
        if node in named and node not in seen:
            return _inline(named[node], named, seen)
        return node
    if isinstance(node, list):
        return [_inline(branch, named, seen) for branch in node]
    if not isinstance(node, dict):
        return node
    out = {key: value for key, value in node.items() if not key.startswith("__")}
    if out.get("type") in _NAMED:
        seen.add(out["name"])
    if "fields" in out:
        out["fields"] = [
            {**field, "type": _inline(field["type"], named, seen)} for field in out["fields"]
        ]
    for key in ("items", "values"):
        if key in out:
            out[key] = _inline(out[key], named, seen)
    return out


def _defined_names(node: Any) -> set[str]:
    """Full names of the named types ``node`` (parsed form) defines, not those it refers to."""
    if isinstance(node, list):
        return set().union(*map(_defined_names, node)) if node else set()
    if not isinstance(node, dict):
        return set()
    names = {node["name"]} if node.get("type") in _NAMED else set()
    for field in node.get("fields", ()):
        names |= _defined_names(field["type"])
    for key in ("items", "values"):
        if key in node:
            names |= _defined_names(node[key])
    return names


def _invalid(message: str) -> CodecError:
    return CodecError(message, reason="schema_invalid")
