"""The Avro schemas of the pipeline's events: loaded once, checked, fingerprinted.

The ``.avsc`` files in ``schemas/`` at the top of the repository are the wire
contract (``schemas/previous/`` keeps the version before the current one, so
data written with it stays readable). A file may refer to a named type that
another file defines (``"type": "io.mxprobe.DomainTask"``); :func:`load_schemas`
resolves those references and turns every file into a *self-contained*
schema (each named type defined at its first use), the form a consumer
outside mxprobe, a schema registry or a warehouse loader can take as is.

fastavro does the resolving: ``fastavro.schema.load_schema`` asks a schema
repository for each type a schema refers to but does not define, and inlines
it at its first use, which is the self-contained form. Its default repository
looks for a file named after the type's *full* name (``io.mxprobe.Verdict.avsc``);
ours are named after the short name (``Verdict.avsc``), so :class:`_NamedTypes`
serves the directory's named types by full name instead. That is simpler than
``load_schema_ordered``, which wants for each file the list of files it
depends on, dependencies first, and than ``parse_schema`` with one
``named_schemas`` over the files in dependency order, which leaves references
as names (not self-contained); ``expand_schema`` defines a type again at each
use, which Avro forbids. Two things fastavro does not check are checked
first, from what ``parse_schema`` finds in each file parsed alone: that no
type is defined twice (the later definition would silently win), and that no
two files refer to each other (fastavro 1.13.1's compiled loader then
recurses until the process dies of a segmentation fault).

Each schema gets the 8-byte CRC-64-AVRO fingerprint of its Parsing Canonical
Form (Avro specification, "Schema Fingerprints"). The codecs put it in front
of every event (Avro "Single object encoding"), so a reader knows which
version of a schema wrote the bytes it holds. Documentation and defaults are
not part of the canonical form: editing a ``doc`` changes no fingerprint.

Parsing is cached: each directory is read and parsed once per process.
"""

from __future__ import annotations

import copy
import functools
import graphlib
import io
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro.repository import AbstractSchemaRepository
from fastavro.schema import (
    SchemaParseException,
    UnknownType,
    fingerprint,
    load_schema,
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

#: Stands in for a type another file defines while one file is parsed alone
#: (fastavro only looks up the name of a type it is given).
_ELSEWHERE: Final = object()

#: What fastavro raises for a schema that is not valid Avro.
_PARSE_ERRORS = (SchemaParseException, TypeError, ValueError, KeyError, AttributeError)


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
    directory, in any order; each named type must be defined exactly once,
    and two files may not refer to each other.

    Args:
        directory: A directory of ``.avsc`` files (``SCHEMA_DIR``, ``PREVIOUS_DIR``).

    Returns:
        The schemas by full name of their top-level type.

    Raises:
        CodecError: (reason ``schema_invalid``) a file is missing, is not
            JSON, is not a valid Avro schema, refers to a type no file
            defines, defines a type another file defines too, or is part of
            a circle of files referring to each other.
    """
    files = {path: _read_json(path) for path in sorted(directory.glob("*.avsc"))}
    if not files:
        raise _invalid(f"No Avro schema (*.avsc) found in {directory}; check the installation.")
    top: dict[Path, str] = {}  # the full name of each file's top-level type
    defined: dict[str, Any] = {}  # every named type of the directory, parsed
    owner: dict[str, Path] = {}
    references: dict[Path, set[str]] = {}
    for path, schema in files.items():
        top[path], types, references[path] = _survey(path, schema)
        twice = sorted(types.keys() & defined.keys())
        if twice:
            raise _invalid(
                f"{path} defines {', '.join(twice)}, which another file defines too; "
                "refer to it by its full name instead."
            )
        defined |= types
        owner |= dict.fromkeys(types, path)
    unknown = {path: sorted(names - defined.keys()) for path, names in references.items()}
    if any(unknown.values()):
        problems = "; ".join(
            f"{path.name} refers to {', '.join(names)}" for path, names in unknown.items() if names
        )
        raise _invalid(
            f"Unknown Avro types in {directory}: {problems}; "
            "no file defines them (check the spelling and the namespace)."
        )
    needs = {path: {owner[name] for name in names} for path, names in references.items()}
    try:
        graphlib.TopologicalSorter(needs).prepare()
    except graphlib.CycleError as exc:
        circle = " → ".join(path.name for path in exc.args[1])
        raise _invalid(
            f"The Avro schemas in {directory} refer to each other in a circle ({circle}); "
            "define types that refer to each other in one file."
        ) from exc
    repository = _NamedTypes(defined)
    schemas = (_resolve(path, top[path], repository) for path in files)
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


class _NamedTypes(AbstractSchemaRepository):
    """The named types of one directory, by full name: where ``load_schema`` looks them up."""

    def __init__(self, types: Mapping[str, Any]) -> None:
        self._types = types

    def load(self, name: str) -> Any:
        # A copy: fastavro's loader writes the types it inlines into what it is given.
        return copy.deepcopy(self._types[name])


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _invalid(f"Cannot read the Avro schema {path}: {exc}.") from exc


def _survey(path: Path, schema: Any) -> tuple[str, dict[str, Any], set[str]]:
    """Parse one file alone: its top-level name, the types it defines, those it refers to.

    Each type fastavro does not know (``UnknownType``) is one the file refers
    to; it stands in as :data:`_ELSEWHERE` for the next try, until the file parses.
    """
    named: dict[str, Any] = {}
    while True:
        trial = dict(named)  # a failed parse leaves half its names behind
        try:
            parsed = parse_schema(schema, trial, _write_hint=False)
            break
        except UnknownType as exc:
            if not isinstance(exc.name, str) or exc.name in named:
                raise _invalid(f"{path} is not a valid Avro schema: unknown type {exc}.") from exc
            named[exc.name] = _ELSEWHERE
        except _PARSE_ERRORS as exc:
            raise _invalid(f"{path} is not a valid Avro schema: {exc}.") from exc
    if not isinstance(parsed, dict) or parsed.get("type") not in _NAMED:
        raise _invalid(f"{path} must define one named type (a record) at its top level.")
    types = {name: node for name, node in trial.items() if node is not _ELSEWHERE}
    return parsed["name"], types, trial.keys() - types.keys()


def _resolve(path: Path, name: str, repository: _NamedTypes) -> AvroSchema:
    """One file made self-contained (fastavro inlines what it refers to), parsed, fingerprinted."""
    try:
        definition = load_schema(name, repo=repository, _write_hint=False)
        standalone = parse_schema(definition)
    except _PARSE_ERRORS as exc:  # e.g. a type it defines comes in again with another file's
        raise _invalid(f"{path} is not a valid Avro schema: {exc}.") from exc
    assert isinstance(definition, dict) and isinstance(standalone, dict)  # a record in and out
    canonical = to_parsing_canonical_form(definition)
    return AvroSchema(
        name=name,
        path=path,
        definition=definition,
        parsed=standalone,
        fingerprint=bytes.fromhex(fingerprint(canonical, "CRC-64-AVRO")),
    )


def _invalid(message: str) -> CodecError:
    return CodecError(message, reason="schema_invalid")
