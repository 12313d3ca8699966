"""The input key of an address: its ASCII domain, with or without parsing."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.core.address import SyntaxProblem, parse_address
from streams.pipeline.runner import partition_key

LABEL = st.from_regex(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,8}[A-Za-z0-9])?", fullmatch=True)
DOMAIN = st.builds(
    lambda labels, tld: ".".join([*labels, tld]),
    st.lists(LABEL, min_size=1, max_size=3),
    st.sampled_from(["com", "org", "test", "Example", "xn--p1ai", "de"]),
)
LOCAL = st.from_regex(r"[A-Za-z0-9._%+-]{1,20}", fullmatch=True)


@given(LOCAL, DOMAIN)
def test_the_fast_key_is_the_parsed_ascii_domain(local: str, domain: str) -> None:
    """For every address that parses, the key is its ASCII domain, as intake computes it."""
    email = f"{local}@{domain}"
    parsed = parse_address(email, allowed_tlds=("test",))
    if not isinstance(parsed, SyntaxProblem):
        assert partition_key(email, ("test",)) == parsed.ascii_domain.encode()


@pytest.mark.parametrize(
    ("email", "key"),
    [
        ("Ann@Example.COM", b"example.com"),
        ("ann@bücher.de", b"xn--bcher-kva.de"),  # IDNA 2008 A-labels
        ("ann@MÜNCHEN.de", b"xn--mnchen-3ya.de"),
        ("no at sign", b"no at sign"),
        ("ann@", b""),
    ],
)
def test_keys(email: str, key: bytes) -> None:
    """ASCII domains in lower case, IDNs in A-label form, the rest as given."""
    assert partition_key(email) == key
