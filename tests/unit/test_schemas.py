"""Avro schemas: the house rules, loading, fingerprints and backward compatibility."""

from __future__ import annotations

import copy
import dataclasses
import json
import re
import shutil
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import fastavro
import pytest
from fastavro.schema import to_parsing_canonical_form
from hypothesis import Phase, given, settings
from hypothesis import strategies as st

from streams.core.address import Address
from streams.core.lists import Signals
from streams.core.route import Target
from streams.core.verdict import Evidence, Flags, Status
from streams.errors import CodecError
from streams.pipeline.records import RECORD_TYPES
from streams.pipeline.schemas import (
    NAMESPACE,
    PREVIOUS_DIR,
    SCHEMA_DIR,
    AvroSchema,
    current_schemas,
    load_schemas,
    previous_schemas,
    read_as,
)

CURRENT_FILES = sorted(SCHEMA_DIR.glob("*.avsc"))
ALL_FILES = CURRENT_FILES + sorted(PREVIOUS_DIR.glob("*.avsc"))
NAMES = sorted(RECORD_TYPES.values())


def raw(path: Path) -> Any:
    """The JSON of a schema file, as written."""
    return json.loads(path.read_text(encoding="utf-8"))


def walk(node: Any, where: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every schema dict in ``node`` (named types, fields' types), with a path for messages."""
    if isinstance(node, list):
        for branch in node:
            yield from walk(branch, where)
    elif isinstance(node, dict):
        yield where, node
        for field in node.get("fields", ()):
            yield f"{where}.{field['name']}", field
            yield from walk(field["type"], f"{where}.{field['name']}")
        for key in ("items", "values"):
            if key in node:
                yield from walk(node[key], f"{where}[{key}]")


# -- the house rules, for every file (current and previous) -----------------------

#: Files whose fields only refer to types other files define (no time of their own).
ONLY_REFERENCES = {"DomainTasks", "HostTasks"}


@pytest.mark.parametrize("path", ALL_FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_top_level_record_is_in_the_namespace_and_named_as_its_file(path: Path) -> None:
    """Verdict.avsc defines io.mxprobe.Verdict, a record."""
    schema = raw(path)
    assert (schema["type"], schema["namespace"], schema["name"]) == ("record", NAMESPACE, path.stem)


@pytest.mark.parametrize("path", ALL_FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_named_type_and_field_has_a_doc(path: Path) -> None:
    """A doc on every record, enum and field."""
    undocumented = [
        where or path.stem
        for where, node in walk(raw(path))
        if ("name" in node) and not str(node.get("doc", "")).strip()
    ]
    assert undocumented == []


@pytest.mark.parametrize("path", ALL_FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_enum_has_a_default_symbol(path: Path) -> None:
    """Enums name a default among their symbols, so new symbols don't break old readers."""
    enums = [node for _, node in walk(raw(path)) if node.get("type") == "enum"]
    assert all(node.get("default") in node["symbols"] for node in enums)


@pytest.mark.parametrize("path", ALL_FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_times_are_timestamp_millis(path: Path) -> None:
    """Every field named *_at is a long with logical type timestamp-millis."""
    times = [field for _, field in walk(raw(path)) if field.get("name", "").endswith("_at")]
    assert times or path.stem in ONLY_REFERENCES
    assert all(
        field["type"] == {"type": "long", "logicalType": "timestamp-millis"} for field in times
    )


@pytest.mark.parametrize("path", ALL_FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_unions_are_nullable_values_with_a_null_default(path: Path) -> None:
    """Unions are [null, X], X not a record, defaulting to null (flat enough for a warehouse)."""
    for where, field in walk(raw(path)):
        if isinstance(field.get("type"), list) and "name" in field:
            branches = field["type"]
            assert len(branches) == 2 and branches[0] == "null", where
            assert not (isinstance(branches[1], dict) and branches[1]["type"] == "record"), where
            assert field.get("default", "missing") is None, where


def test_every_current_schema_has_a_previous_version() -> None:
    """schemas/previous/ holds a file for every file of schemas/."""
    assert sorted(p.name for p in PREVIOUS_DIR.glob("*.avsc")) == [p.name for p in CURRENT_FILES]


def test_the_schemas_are_those_of_the_record_types() -> None:
    """One schema per record type, no more."""
    assert sorted(current_schemas()) == NAMES


# -- records mirror the schemas ----------------------------------------------------


def schema_fields(name: str) -> list[str]:
    """Field names, in order, of the named record ``name`` wherever it is defined."""
    for schema in current_schemas().values():
        for _, node in walk(schema.definition):
            if node.get("type") == "record" and node["name"] == name:
                return [field["name"] for field in node["fields"]]
    raise AssertionError(f"no record {name}")


MIRRORS = [(kind, name) for kind, name in RECORD_TYPES.items()] + [
    (Flags, "io.mxprobe.Flags"),
    (Evidence, "io.mxprobe.Evidence"),
    (Address, "io.mxprobe.Address"),
    (Signals, "io.mxprobe.Signals"),
    (Target, "io.mxprobe.Target"),
]


@pytest.mark.parametrize(("kind", "name"), MIRRORS, ids=[name for _, name in MIRRORS])
def test_python_values_have_the_schema_fields_in_order(kind: type, name: str) -> None:
    """Each dataclass has exactly the fields of its Avro record, in the same order."""
    assert [f.name for f in dataclasses.fields(kind)] == schema_fields(name)


def test_status_symbols_are_the_core_statuses() -> None:
    """The Status enum of the Verdict schema has the symbols of streams.core.verdict.Status."""
    verdict = current_schemas()["io.mxprobe.Verdict"].definition
    (status,) = [node for _, node in walk(verdict) if node.get("name") == "io.mxprobe.Status"]
    assert status["symbols"] == [member.value for member in Status]


# -- loading -----------------------------------------------------------------------


def write_schemas(directory: Path, *schemas: dict[str, Any]) -> Path:
    """Write each schema as <name>.avsc into ``directory``."""
    directory.mkdir(exist_ok=True)
    for schema in schemas:
        (directory / f"{schema['name']}.avsc").write_text(json.dumps(schema), encoding="utf-8")
    return directory


def record(name: str, *fields: tuple[str, Any]) -> dict[str, Any]:
    """A documented record in the io.mxprobe namespace."""
    return {
        "type": "record",
        "name": name,
        "namespace": NAMESPACE,
        "doc": name,
        "fields": [{"name": n, "type": t, "doc": n} for n, t in fields],
    }


def test_every_definition_is_self_contained() -> None:
    """Each definition parses alone, without the other files."""
    for schema in current_schemas().values():
        fastavro.parse_schema(json.loads(json.dumps(schema.definition)), {})


def test_a_reference_to_another_file_is_inlined_at_its_first_use(tmp_path: Path) -> None:
    """B refers to io.mxprobe.A twice: defined at the first field, named at the second."""
    directory = write_schemas(
        tmp_path / "s",
        record("B", ("first", "io.mxprobe.A"), ("second", "io.mxprobe.A")),
        record("A", ("x", "string")),
    )
    fields = load_schemas(directory)["io.mxprobe.B"].definition["fields"]
    assert fields[0]["type"]["name"] == "io.mxprobe.A"
    assert fields[1]["type"] == "io.mxprobe.A"


def test_a_type_defined_inside_another_file_can_be_referred_to(tmp_path: Path) -> None:
    """B refers to the enum io.mxprobe.E that A defines in a field: B gets E's definition."""
    enum = {"type": "enum", "name": "E", "symbols": ["x"], "doc": "e"}
    directory = write_schemas(
        tmp_path / "s", record("A", ("e", enum)), record("B", ("e", "io.mxprobe.E"))
    )
    (field,) = load_schemas(directory)["io.mxprobe.B"].definition["fields"]
    assert (field["type"]["name"], field["type"]["symbols"]) == ("io.mxprobe.E", ["x"])


@pytest.mark.parametrize(
    ("files", "words"),
    [
        ([record("B", ("a", "io.mxprobe.Nowhere"))], "io.mxprobe.Nowhere"),
        (
            [
                record("A", ("b", ["null", "io.mxprobe.B"])),
                record("B", ("a", ["null", "io.mxprobe.A"])),
            ],
            "refer to each other in a circle",
        ),
        (
            [
                record("A", ("e", {"type": "enum", "name": "E", "symbols": ["x"], "doc": "e"})),
                record("B", ("e", {"type": "enum", "name": "E", "symbols": ["x"], "doc": "e"})),
            ],
            "io.mxprobe.E",
        ),
        ([{"type": "record", "name": "X", "fields": [{"name": "a", "type": "strnig"}]}], "X.avsc"),
        ([], "No Avro schema"),
    ],
    ids=[
        "unknown reference",
        "files referring to each other",
        "defined twice",
        "invalid schema",
        "no files",
    ],
)
def test_a_broken_schema_directory_is_one_clear_error(
    tmp_path: Path, files: list[dict[str, Any]], words: str
) -> None:
    """Unknown types, circles, duplicate definitions, invalid schemas, no files: one CodecError."""
    directory = write_schemas(tmp_path / "s", *files)
    with pytest.raises(CodecError, match=re.escape(words)) as caught:
        load_schemas(directory)
    assert caught.value.reason == "schema_invalid"


def test_a_file_that_is_not_json_is_one_clear_error(tmp_path: Path) -> None:
    """A file that is not JSON: CodecError naming the file."""
    (tmp_path / "Bad.avsc").write_text("{not json", encoding="utf-8")
    with pytest.raises(CodecError, match=re.escape("Bad.avsc")):
        load_schemas(tmp_path)


def test_schemas_are_loaded_once() -> None:
    """The same directory gives the same parsed objects."""
    assert current_schemas() is load_schemas(SCHEMA_DIR)


# -- fingerprints (Avro specification, "Schema Fingerprints") -------------------------

_EMPTY64 = 0xC15D213AA4D7A795


def crc64_avro(data: bytes) -> int:
    """CRC-64-AVRO, as the Avro specification writes it out."""
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (_EMPTY64 & -(fp & 1))
        table.append(fp)
    fp = _EMPTY64
    for byte in data:
        fp = (fp >> 8) ^ table[(fp ^ byte) & 0xFF]
    return fp


@pytest.mark.parametrize("name", NAMES)
def test_fingerprint_is_crc64_avro_of_the_canonical_form_little_endian(name: str) -> None:
    """The 8 fingerprint bytes are CRC-64-AVRO of the Parsing Canonical Form, little-endian."""
    schema = current_schemas()[name]
    canonical = to_parsing_canonical_form(schema.definition).encode("utf-8")
    assert schema.fingerprint == crc64_avro(canonical).to_bytes(8, "little")


def test_fingerprint_of_the_int_schema_matches_the_published_value() -> None:
    """Our CRC-64-AVRO gives the published fingerprint of "int" (8f5c393f1ad57572)."""
    assert crc64_avro(b'"int"').to_bytes(8, "little").hex() == "8f5c393f1ad57572"


def fingerprint_after(tmp_path: Path, change: Callable[[dict[str, Any]], None]) -> bytes:
    """The Verdict fingerprint after ``change`` to a copy of Verdict.avsc."""
    schema = raw(SCHEMA_DIR / "Verdict.avsc")
    change(schema)
    return load_schemas(write_schemas(tmp_path / "s", schema))["io.mxprobe.Verdict"].fingerprint


def test_editing_a_doc_keeps_the_fingerprint(tmp_path: Path) -> None:
    """Docs are not part of the canonical form: a doc edit is not a new version."""
    changed = fingerprint_after(tmp_path, lambda s: s.update(doc="Edited."))
    assert changed == current_schemas()["io.mxprobe.Verdict"].fingerprint


def test_adding_a_field_changes_the_fingerprint(tmp_path: Path) -> None:
    """A new field is a new version with a new fingerprint."""
    new = {"name": "extra", "type": "string", "default": "", "doc": "New."}
    changed = fingerprint_after(tmp_path, lambda s: s["fields"].append(new))
    assert changed != current_schemas()["io.mxprobe.Verdict"].fingerprint


# -- backward compatibility: the current schemas read what the previous ones wrote ---

_MOMENTS = st.datetimes(
    min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)
).map(lambda moment: moment.replace(microsecond=moment.microsecond // 1000 * 1000))

_PRIMITIVES: dict[str, st.SearchStrategy[Any]] = {
    "null": st.none(),
    "boolean": st.booleans(),
    "int": st.integers(-(2**31), 2**31 - 1),
    "long": st.integers(-(2**63), 2**63 - 1),
    "float": st.floats(width=32, allow_nan=False),
    "double": st.floats(allow_nan=False),
    "bytes": st.binary(max_size=20),
    "string": st.text(max_size=20),
}


def datums(schema: Any, named: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[Any]:
    """Any value of the Avro ``schema`` (self-contained), in fastavro's form."""
    if isinstance(schema, str):
        if schema in _PRIMITIVES:
            return _PRIMITIVES[schema]
        return st.deferred(lambda: named[schema])
    if isinstance(schema, list):
        return st.one_of([datums(branch, named) for branch in schema])
    kind = schema["type"]
    strategy: st.SearchStrategy[Any]
    if schema.get("logicalType") == "timestamp-millis":
        strategy = _MOMENTS
    elif kind == "record":
        strategy = st.fixed_dictionaries(
            {field["name"]: datums(field["type"], named) for field in schema["fields"]}
        )
    elif kind == "enum":
        strategy = st.sampled_from(schema["symbols"])
    elif kind == "array":
        strategy = st.lists(datums(schema["items"], named), max_size=3)
    elif kind == "map":
        strategy = st.dictionaries(st.text(max_size=5), datums(schema["values"], named), max_size=3)
    elif kind == "fixed":
        strategy = st.binary(min_size=schema["size"], max_size=schema["size"])
    else:
        strategy = datums(kind, named)
    if kind in ("record", "enum", "fixed"):
        named[schema["name"]] = strategy
    return strategy


def assert_readable(writer: AvroSchema, reader: AvroSchema) -> None:
    """``reader`` reads any value written with ``writer`` (hypothesis hunts for one it cannot)."""

    # No shrinking: read_as's message already names the field that breaks, and
    # shrinking the big nested values of a failure takes seconds.
    @settings(
        max_examples=60,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],
    )
    @given(datums(writer.definition, {}))
    def check(datum: dict[str, Any]) -> None:
        read_as(datum, writer=writer, reader=reader)

    check()


@pytest.mark.parametrize("name", NAMES)
def test_current_schema_reads_data_written_with_the_previous_version(name: str) -> None:
    """Every current schema can read anything its previous version wrote."""
    assert_readable(previous_schemas()[name], current_schemas()[name])


def verdict_variant(tmp_path: Path, change: Callable[[dict[str, Any]], None]) -> AvroSchema:
    """The previous Verdict schema after ``change``, loaded from its own directory."""
    schema = copy.deepcopy(raw(PREVIOUS_DIR / "Verdict.avsc"))
    change(schema)
    return load_schemas(write_schemas(tmp_path / "variant", schema))["io.mxprobe.Verdict"]


def field(schema: dict[str, Any], name: str) -> dict[str, Any]:
    """The top-level field ``name`` of ``schema``."""
    (found,) = [f for f in schema["fields"] if f["name"] == name]
    assert isinstance(found, dict)
    return found


def _add_required_field(s: dict[str, Any]) -> None:
    s["fields"].append({"name": "tier", "type": "string", "doc": "New, without a default."})


def _remove_symbol_and_default(s: dict[str, Any]) -> None:
    status = field(s, "status")["type"]
    status["symbols"].remove("risky")
    del status["default"]


def _change_a_type(s: dict[str, Any]) -> None:
    field(s, "latency_ms")["type"] = "string"


def _rename_a_field(s: dict[str, Any]) -> None:
    field(s, "request_id")["name"] = "id"


def _add_optional_field(s: dict[str, Any]) -> None:
    s["fields"].append({"name": "tier", "type": "string", "default": "", "doc": "New."})


def _add_symbol(s: dict[str, Any]) -> None:
    field(s, "status")["type"]["symbols"].append("suspicious")


def _remove_symbol_keep_default(s: dict[str, Any]) -> None:
    field(s, "status")["type"]["symbols"].remove("risky")


def _promote_int_to_long(s: dict[str, Any]) -> None:
    field(s, "schema_version")["type"] = "long"


def _drop_a_field(s: dict[str, Any]) -> None:
    s["fields"].remove(field(s, "did_you_mean"))


@pytest.mark.parametrize(
    "change",
    [_add_required_field, _remove_symbol_and_default, _change_a_type, _rename_a_field],
)
def test_an_incompatible_change_is_detected(
    tmp_path: Path, change: Callable[[dict[str, Any]], None]
) -> None:
    """The same check fails for a change that breaks old data (so the test above can fail)."""
    with pytest.raises(CodecError) as caught:
        assert_readable(previous_schemas()["io.mxprobe.Verdict"], verdict_variant(tmp_path, change))
    assert caught.value.reason == "incompatible"


@pytest.mark.parametrize(
    "change",
    [
        _add_optional_field,
        _add_symbol,
        _remove_symbol_keep_default,
        _promote_int_to_long,
        _drop_a_field,
    ],
)
def test_a_compatible_change_passes(
    tmp_path: Path, change: Callable[[dict[str, Any]], None]
) -> None:
    """New fields with defaults, new symbols, a dropped symbol with the enum default, promotions."""
    assert_readable(previous_schemas()["io.mxprobe.Verdict"], verdict_variant(tmp_path, change))


def test_read_as_fills_new_fields_with_their_defaults(tmp_path: Path) -> None:
    """read_as returns the value as the reader sees it: a new field gets its default."""
    shutil.copy(SCHEMA_DIR / "AddressRequest.avsc", tmp_path / "AddressRequest.avsc")
    old = load_schemas(tmp_path)["io.mxprobe.AddressRequest"]
    datum = {"request_id": "r", "email": "a@b", "submitted_at": 0, "source": "s"}
    newer = raw(SCHEMA_DIR / "AddressRequest.avsc")
    newer["fields"].append({"name": "priority", "type": "int", "default": 3, "doc": "New."})
    reader = load_schemas(write_schemas(tmp_path / "new", newer))["io.mxprobe.AddressRequest"]
    assert read_as(datum, writer=old, reader=reader) == {
        **datum,
        "submitted_at": datetime(1970, 1, 1, tzinfo=UTC),
        "max_age_s": 0,
        "attributes": {},
        "priority": 3,
    }


def test_a_value_that_does_not_fit_the_writer_is_not_called_incompatible() -> None:
    """A bad test value is reason invalid_value, not a schema problem."""
    schema = current_schemas()["io.mxprobe.AddressRequest"]
    with pytest.raises(CodecError) as caught:
        read_as({"request_id": 5}, writer=schema, reader=schema)
    assert caught.value.reason == "invalid_value"
