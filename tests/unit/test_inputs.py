"""Address lists in text, CSV and JSON lines → requests."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.errors import ConfigError
from streams.pipeline.inputs import read_requests


def emails(text: str) -> list[str]:
    return [r.email for r in read_requests(text.splitlines(keepends=True))]


def test_plain_text_one_per_line() -> None:
    """Plain text: one address a line; blanks and comments skipped; spaces trimmed."""
    assert emails("\n# list\n ann@example.com \n\nbob@example.org\n") == [
        "ann@example.com",
        "bob@example.org",
    ]


def test_csv_with_email_column_and_attributes() -> None:
    """CSV: the email column (any case) is the address; other columns are attributes."""
    text = 'name,EMAIL,request_id\n"Doe, Ann",ann@example.com,r1\nBob,bob@example.org,\n'
    requests = list(read_requests(text.splitlines(keepends=True)))
    assert [r.email for r in requests] == ["ann@example.com", "bob@example.org"]
    assert requests[0].request_id == "r1"
    assert requests[0].attributes == {"name": "Doe, Ann"}
    uuid.UUID(requests[1].request_id)  # generated when the column is empty


def test_json_lines() -> None:
    """JSON lines: email, request_id, source, max_age_s and attributes are taken."""
    text = (
        '{"email": "ann@example.com", "request_id": "a", "source": "signup", '
        '"max_age_s": 0, "plan": "pro", "attributes": {"tenant": 7}}\n'
        '{"email": "bob@example.org"}\n'
    )
    first, second = read_requests(text.splitlines(), source="replay", max_age_s=60)
    assert (first.email, first.request_id, first.source, first.max_age_s) == (
        "ann@example.com",
        "a",
        "signup",
        0,
    )
    assert first.attributes == {"plan": "pro", "tenant": "7"}
    assert (second.source, second.max_age_s) == ("replay", 60)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ('{"email": "a@b.com"}\n{not json\n', "line 2 is not valid JSON"),
        ('{"email": "a@b.com"}\n{"mail": "x"}\n', 'line 2 has no "email"'),
    ],
)
def test_bad_json_lines_name_the_line(text: str, words: str) -> None:
    """A bad JSON line is a ConfigError naming the input and the line."""
    with pytest.raises(ConfigError, match=words):
        list(read_requests(text.splitlines(), name="list.jsonl"))


def test_empty_input() -> None:
    """Nothing in, nothing out."""
    assert list(read_requests(["", "  \n"])) == []


@given(st.lists(st.from_regex(r"[a-z]{1,8}@[a-z]{1,8}\.com", fullmatch=True), max_size=20))
def test_plain_text_keeps_every_address_in_order(addresses: list[str]) -> None:
    """Every address of a plain list comes out once, in order, with a unique id."""
    requests = list(read_requests([f"{a}\n" for a in addresses]))
    assert [r.email for r in requests] == addresses
    assert len({r.request_id for r in requests}) == len(addresses)
