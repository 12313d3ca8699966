"""Address lists as users have them → request values for the input topic.

Three formats, detected from the first non-blank line:

- JSON lines: objects with an ``email`` field, and optionally ``request_id``,
  ``source``, ``max_age_s`` and ``attributes`` (a string map); any other
  string field is kept as an attribute;
- CSV with a header row that has an ``email`` column (case-insensitive;
  ``request_id`` too); the other columns become attributes;
- plain text: one address per line (blank lines and ``#`` comments skipped).

A request without ``request_id`` gets a fresh UUID: the id is the caller's
idempotency key, so a caller that needs stable ids supplies them.
"""

from __future__ import annotations

import csv
import io
import json
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from streams.errors import ConfigError

__all__ = ["InputRequest", "read_requests"]


@dataclass(frozen=True, slots=True)
class InputRequest:
    """One address to verify, as read from a list."""

    email: str
    request_id: str
    source: str
    max_age_s: int
    attributes: dict[str, str] = field(default_factory=dict)


def read_requests(
    lines: Iterable[str], *, source: str = "import", max_age_s: int = 86_400, name: str = "input"
) -> Iterator[InputRequest]:
    """Parse ``lines`` (text, JSON lines or CSV) into requests.

    Args:
        lines: the input, line by line (newlines kept or not).
        source: the ``source`` of requests that do not name one.
        max_age_s: the ``max_age_s`` of requests that do not name one.
        name: what to call the input in error messages (a file name).

    Raises:
        ConfigError: a line that cannot be read, naming the input, line and fix.
    """
    iterator = iter(lines)
    first = ""
    number = 0
    for number, line in enumerate(iterator, 1):  # noqa: B007 (used below)
        if line.strip():
            first = line
            break
    if not first:
        return
    stripped = first.strip()
    if stripped.startswith("{"):
        yield from _json_lines(_chain(first, iterator), number, source, max_age_s, name)
    elif _is_csv_header(stripped):
        yield from _csv(_chain(first, iterator), number, source, max_age_s, name)
    else:
        for line in _chain(first, iterator):
            text = line.strip()
            if text and not text.startswith("#"):
                yield InputRequest(text, str(uuid.uuid4()), source, max_age_s)


def _chain(first: str, rest: Iterator[str]) -> Iterator[str]:
    yield first
    yield from rest


def _is_csv_header(line: str) -> bool:
    try:
        header = next(csv.reader([line]))
    except csv.Error:
        return False
    return len(header) > 1 and any(cell.strip().lower() == "email" for cell in header)


def _json_lines(
    lines: Iterator[str], start: int, source: str, max_age_s: int, name: str
) -> Iterator[InputRequest]:
    for number, line in enumerate(lines, start):
        text = line.strip()
        if not text:
            continue
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(
                f"{name} line {number} is not valid JSON ({exc.msg}); every line of a JSON "
                'lines file must be one object like {"email": "ann@example.com"}.'
            ) from None
        if not isinstance(data, dict) or not isinstance(data.get("email"), str):
            raise ConfigError(
                f'{name} line {number} has no "email" string; every line must be an object '
                'like {"email": "ann@example.com"}.'
            )
        attributes = {
            key: value
            for key, value in data.items()
            if isinstance(value, str) and key not in ("email", "request_id", "source")
        }
        extra = data.get("attributes")
        if isinstance(extra, dict):
            attributes.update({str(k): str(v) for k, v in extra.items()})
        age = data.get("max_age_s", max_age_s)
        valid_age = isinstance(age, int) and not isinstance(age, bool) and 0 <= age < 2**62
        yield InputRequest(
            email=data["email"],
            request_id=str(data.get("request_id") or uuid.uuid4()),
            source=str(data.get("source") or source),
            max_age_s=age if valid_age else max_age_s,
            attributes=attributes,
        )


def _csv(
    lines: Iterator[str], start: int, source: str, max_age_s: int, name: str
) -> Iterator[InputRequest]:
    reader = csv.reader(io.StringIO("".join(_with_newline(lines))))
    header = [cell.strip() for cell in next(reader)]
    lowered = [cell.lower() for cell in header]
    email_at = lowered.index("email")
    id_at = lowered.index("request_id") if "request_id" in lowered else None
    for number, row in enumerate(reader, start + 1):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) <= email_at:
            raise ConfigError(
                f"{name} line {number} has {len(row)} columns but the email column is "
                f"number {email_at + 1}; check the CSV quoting."
            )
        attributes = {
            column: value
            for position, (column, value) in enumerate(zip(header, row, strict=False))
            if position not in (email_at, id_at) and column
        }
        request_id = row[id_at].strip() if id_at is not None and len(row) > id_at else ""
        yield InputRequest(
            email=row[email_at].strip(),
            request_id=request_id or str(uuid.uuid4()),
            source=source,
            max_age_s=max_age_s,
            attributes=attributes,
        )


def _with_newline(lines: Iterator[str]) -> Iterator[str]:
    for line in lines:
        yield line if line.endswith("\n") else line + "\n"
