"""Address syntax and normalisation: parse_address as a specification."""

from __future__ import annotations

import dataclasses
import unicodedata

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from streams.core.address import (
    INPUT_MAX_CHARS,
    SPECIAL_USE_TLDS,
    UNALLOWABLE_TLDS,
    Address,
    SyntaxCode,
    SyntaxProblem,
    parse_address,
)

LOCAL_64 = "a" * 64
# 64 + 1 + 189 = 254 octets: labels of 63 + 63 + 57 + "com" and three dots.
DOMAIN_189 = f"{'b' * 63}.{'c' * 63}.{'d' * 57}.com"


def test_length_fixtures_sit_at_the_limits() -> None:
    """The fixtures below are exactly 64 and 254 octets long."""
    assert len(LOCAL_64) == 64
    assert len(f"{LOCAL_64}@{DOMAIN_189}") == 254


def parsed(text: str, **options: object) -> Address:
    result = parse_address(text, **options)  # type: ignore[arg-type]
    assert isinstance(result, Address), result
    return result


def problem(text: str, **options: object) -> SyntaxProblem:
    result = parse_address(text, **options)  # type: ignore[arg-type]
    assert isinstance(result, SyntaxProblem), result
    return result


# (input, local_part, domain, ascii_domain, smtputf8)
VALID = [
    ("ann@example.com", "ann", "example.com", "example.com", False),
    ("ann.lee@example.com", "ann.lee", "example.com", "example.com", False),
    ("ann+news@example.com", "ann+news", "example.com", "example.com", False),
    ("o'brien@example.com", "o'brien", "example.com", "example.com", False),
    ("Ann.Lee@Example.COM", "Ann.Lee", "example.com", "example.com", False),
    ('"ann lee"@example.com', '"ann lee"', "example.com", "example.com", False),
    ('"a@b"@example.com', '"a@b"', "example.com", "example.com", False),
    ('"ann"@example.com', "ann", "example.com", "example.com", False),  # needless quotes go
    ("jörg@example.com", "jörg", "example.com", "example.com", True),
    ("用户@example.com", "用户", "example.com", "example.com", True),
    ("jo\u0308rg@example.com", "jörg", "example.com", "example.com", True),  # NFC
    ("ann@bücher.de", "ann", "bücher.de", "xn--bcher-kva.de", False),
    ("ann@xn--bcher-kva.de", "ann", "bücher.de", "xn--bcher-kva.de", False),
    ("ann@BÜCHER.DE", "ann", "bücher.de", "xn--bcher-kva.de", False),
    ("ann@пример.рф", "ann", "пример.рф", "xn--e1afmkfd.xn--p1ai", False),
    ("ann@example\uff0ecom", "ann", "example.com", "example.com", False),  # fullwidth dot
    (
        "ann@mail-relay.example.com",
        "ann",
        "mail-relay.example.com",
        "mail-relay.example.com",
        False,
    ),
    ("ann@123.example.com", "ann", "123.example.com", "123.example.com", False),
    ("a@b.co", "a", "b.co", "b.co", False),
    (f"{LOCAL_64}@example.com", LOCAL_64, "example.com", "example.com", False),
    (f"{LOCAL_64}@{DOMAIN_189}", LOCAL_64, DOMAIN_189, DOMAIN_189, False),
    ("  ann@example.com\t", "ann", "example.com", "example.com", False),  # CSV padding
]


@pytest.mark.parametrize(("text", "local", "domain", "ascii_domain", "smtputf8"), VALID)
def test_valid_addresses_are_normalised(
    text: str, local: str, domain: str, ascii_domain: str, smtputf8: bool
) -> None:
    """A valid address yields its normalised local part and both domain forms."""
    address = parsed(text)
    assert (address.local_part, address.domain, address.ascii_domain) == (
        local,
        domain,
        ascii_domain,
    )
    assert address.smtputf8 is smtputf8
    assert address.normalized == f"{local}@{domain}"
    assert address.ascii_email == (None if smtputf8 else f"{local}@{ascii_domain}")


@pytest.mark.parametrize("text", ["  ann@example.com", "ann@example.com \t", "\tann@example.com"])
def test_original_keeps_the_input_as_given(text: str) -> None:
    """Surrounding blanks are ignored for parsing but kept in ``original``."""
    assert parsed(text).original == text


def test_kelvin_sign_normalises_to_ascii_and_needs_no_smtputf8() -> None:
    """U+212A KELVIN SIGN is NFC-normalised to "K", so SMTPUTF8 is not needed."""
    address = parsed("\u212aen@example.com")
    assert (address.local_part, address.smtputf8, address.ascii_email) == (
        "Ken",
        False,
        "Ken@example.com",
    )


@pytest.mark.parametrize(
    ("unicode_form", "ascii_form"),
    [
        ("ann@bücher.de", "ann@xn--bcher-kva.de"),
        ("ann@пример.рф", "ann@xn--e1afmkfd.xn--p1ai"),
        ("ann@例え.jp", "ann@xn--r8jz45g.jp"),
    ],
)
def test_idn_domain_in_either_form_gives_the_same_address(
    unicode_form: str, ascii_form: str
) -> None:
    """An IDN domain typed as Unicode or as punycode normalises identically."""
    one, other = parsed(unicode_form), parsed(ascii_form)
    assert dataclasses.replace(one, original="") == dataclasses.replace(other, original="")


INVALID = [
    ("", SyntaxCode.EMPTY),
    ("   ", SyntaxCode.EMPTY),
    (" \t ", SyntaxCode.EMPTY),
    ("annexample.com", SyntaxCode.MISSING_AT),
    ("ann＠example.com", SyntaxCode.MISSING_AT),  # fullwidth at-sign
    ("ann.example.test", SyntaxCode.MISSING_AT),  # no @, though it ends in .test
    ("@example.com", SyntaxCode.EMPTY_LOCAL),
    ("ann@", SyntaxCode.EMPTY_DOMAIN),
    ("ann@@example.com", SyntaxCode.INVALID_DOMAIN),
    ("ann@lee@example.com", SyntaxCode.INVALID_DOMAIN),
    ("ann..lee@example.com", SyntaxCode.INVALID_LOCAL),
    (".ann@example.com", SyntaxCode.INVALID_LOCAL),
    ("ann.@example.com", SyntaxCode.INVALID_LOCAL),
    ("ann lee@example.com", SyntaxCode.INVALID_LOCAL),
    ("ann(x)@example.com", SyntaxCode.INVALID_LOCAL),
    ('"ann"lee@example.com', SyntaxCode.INVALID_LOCAL),
    ("ann\u200b@example.com", SyntaxCode.INVALID_LOCAL),  # zero width space
    ("ann@example..com", SyntaxCode.INVALID_DOMAIN),
    ("ann@.example.com", SyntaxCode.INVALID_DOMAIN),
    ("ann@example.com.", SyntaxCode.INVALID_DOMAIN),
    ("ann@-example.com", SyntaxCode.INVALID_DOMAIN),
    ("ann@example-.com", SyntaxCode.INVALID_DOMAIN),
    ("ann@ex--ample.com", SyntaxCode.INVALID_DOMAIN),  # R-LDH label, RFC 5890
    ("ann@xn--zz.com", SyntaxCode.INVALID_DOMAIN),  # not a valid A-label
    ("ann@exa mple.com", SyntaxCode.INVALID_DOMAIN),
    ("ann@exa_mple.com", SyntaxCode.INVALID_DOMAIN),
    ("ann@exa\u200bmple.com", SyntaxCode.INVALID_DOMAIN),
    ("ann@company", SyntaxCode.INVALID_DOMAIN),  # single label
    ("ann@com", SyntaxCode.INVALID_DOMAIN),
    ("ann@192.0.2.1", SyntaxCode.INVALID_DOMAIN),  # a TLD never ends in a digit
    (f"ann@{'b' * 64}.com", SyntaxCode.INVALID_DOMAIN),  # label over 63 octets
    (f"{'a' * 65}@example.com", SyntaxCode.LOCAL_TOO_LONG),
    (f"{'é' * 33}@example.com", SyntaxCode.LOCAL_TOO_LONG),  # 33 characters, 66 octets
    (f"{LOCAL_64}@b{DOMAIN_189}", SyntaxCode.INVALID_DOMAIN),  # a label of 64
    (f"{LOCAL_64}@{DOMAIN_189[:-4]}d.com", SyntaxCode.TOO_LONG),  # 255 octets
    (f"{'é' * 32}@{DOMAIN_189[:-4]}d.com", SyntaxCode.TOO_LONG),  # 223 characters, 255 octets
    (f"a@{'b' * 63}.{'c' * 63}.{'d' * 63}.{'e' * 63}.com", SyntaxCode.TOO_LONG),
    ("ann@[192.0.2.1]", SyntaxCode.DOMAIN_LITERAL),
    ("ann@[IPv6:2001:db8::1]", SyntaxCode.DOMAIN_LITERAL),
    ("Ann <ann@example.com>", SyntaxCode.DISPLAY_NAME),
    ('"Ann Lee" <ann@example.com>', SyntaxCode.DISPLAY_NAME),
    ("<ann@example.com>", SyntaxCode.DISPLAY_NAME),
    ("ann@x.test", SyntaxCode.SPECIAL_USE_DOMAIN),
    ("ann@X.TEST", SyntaxCode.SPECIAL_USE_DOMAIN),
    ("ann@test", SyntaxCode.SPECIAL_USE_DOMAIN),
    ("ann@mail.example", SyntaxCode.SPECIAL_USE_DOMAIN),
    ("ann@x\uff0eexample", SyntaxCode.SPECIAL_USE_DOMAIN),
    ("ann@x.invalid", SyntaxCode.SPECIAL_USE_DOMAIN),
    ("ann@localhost", SyntaxCode.SPECIAL_USE_DOMAIN),
    ("ann@printer.local", SyntaxCode.SPECIAL_USE_DOMAIN),
    ("ann@abc.onion", SyntaxCode.SPECIAL_USE_DOMAIN),
    ("ann@x.alt", SyntaxCode.SPECIAL_USE_DOMAIN),
    ("ann@corp.internal", SyntaxCode.SPECIAL_USE_DOMAIN),
    ("ann@1.2.0.192.in-addr.arpa", SyntaxCode.SPECIAL_USE_DOMAIN),
]


@pytest.mark.parametrize(("text", "code"), INVALID)
def test_invalid_addresses_get_a_stable_code(text: str, code: SyntaxCode) -> None:
    """Each kind of syntax fault maps to its own stable code."""
    assert problem(text).code is code


@pytest.mark.parametrize(("text", "_code"), INVALID)
def test_every_problem_has_a_sentence(text: str, _code: SyntaxCode) -> None:
    """A problem's message is a full sentence."""
    message = problem(text).message
    assert message[:1].isupper()
    assert message.endswith(".")


CONTROLS = ["\r", "\n", "\r\n", "\0", "\x1b", "\x7f", "\x85", "\u2028", "\u2029"]
POSITIONS = {
    "start": "{}ann@example.com",
    "local": "a{}nn@example.com",
    "before @": "ann{}@example.com",
    "after @": "ann@{}example.com",
    "domain": "ann@exam{}ple.com",
    "end": "ann@example.com{}",
    "quoted": '"a{}nn"@example.com',
    "display name": "Ann{} <ann@example.com>",
}


@pytest.mark.parametrize("control", CONTROLS, ids=repr)
@pytest.mark.parametrize("template", POSITIONS.values(), ids=POSITIONS.keys())
def test_control_characters_are_refused_anywhere(control: str, template: str) -> None:
    """CR, LF, NUL, other Cc characters and U+2028/2029 are refused wherever they are."""
    assert problem(template.format(control)).code is SyntaxCode.CONTROL_CHARACTER


@pytest.mark.parametrize("template", [t for k, t in POSITIONS.items() if k not in ("start", "end")])
def test_a_tab_inside_the_address_is_refused(template: str) -> None:
    """Only surrounding tabs are stripped; a tab inside is a control character."""
    assert problem(template.format("\t")).code is SyntaxCode.CONTROL_CHARACTER


def test_control_character_is_named_in_the_message() -> None:
    """The message names the character, so a person can find it."""
    assert "U+000A (line feed)" in problem("ann@example.com\n").message


def test_control_characters_are_checked_before_anything_else() -> None:
    """A control character wins over every other fault (here: no @-sign)."""
    assert problem("ann\nexample").code is SyntaxCode.CONTROL_CHARACTER


@pytest.mark.parametrize(
    ("text", "tld"),
    [("ann@x.test", "test"), ("ann@mail.example", "example"), ("ann@corp.internal", "internal")],
)
def test_special_use_message_names_the_tld_and_the_fix(text: str, tld: str) -> None:
    """The refusal names the TLD and the option that allows it."""
    message = problem(text).message
    assert f".{tld}," in message
    assert message.endswith(f"allow it with --allow-tld {tld}.")


@pytest.mark.parametrize("tld", sorted(UNALLOWABLE_TLDS))
def test_unallowable_tlds_stay_refused_even_when_allowed(tld: str) -> None:
    """email-validator refuses these outright, and the message says so."""
    result = problem(f"ann@host.{tld}", allowed_tlds=[tld])
    assert result.code is SyntaxCode.SPECIAL_USE_DOMAIN
    assert result.message.endswith("cannot be allowed.")


@pytest.mark.parametrize("tld", sorted(SPECIAL_USE_TLDS.keys() - UNALLOWABLE_TLDS))
def test_every_allowable_special_tld_can_be_allowed(tld: str) -> None:
    """Each special-use TLD outside UNALLOWABLE_TLDS is accepted once allowed."""
    assert parsed(f"ann@host.{tld}", allowed_tlds=[tld]).ascii_domain == f"host.{tld}"


def test_unallowable_tlds_are_special_use_tlds() -> None:
    """UNALLOWABLE_TLDS is a subset of the special-use list."""
    assert SPECIAL_USE_TLDS.keys() >= UNALLOWABLE_TLDS


@pytest.mark.parametrize(
    ("text", "allowed"),
    [
        ("ann@x.test", ["test"]),
        ("ann@x.test", [".TEST"]),
        ("ann@x.test", [" test "]),
        ("ann@X.Test", ["test"]),
        ("ann@a.b.test", ["test"]),
        ("ann@test", ["test"]),
        ("ann@example", ["example"]),
        ("ann@mail.example", ["example", "test"]),
        ("ann@x\uff0eexample", ["example"]),
    ],
)
def test_allowed_tlds_lift_the_refusal(text: str, allowed: list[str]) -> None:
    """A TLD named in allowed_tlds (any case, with or without a dot) is accepted."""
    assert isinstance(parse_address(text, allowed_tlds=allowed), Address)


@pytest.mark.parametrize(
    ("text", "allowed"),
    [
        ("ann@x.example", ["test"]),
        ("ann@x.test", ["example"]),
        ("ann@x.test", ["x.test"]),
        ("ann@com", ["test"]),
    ],
)
def test_allowed_tlds_lift_only_the_tlds_named(text: str, allowed: list[str]) -> None:
    """Allowing one TLD does not allow another, nor an ordinary single label."""
    assert isinstance(parse_address(text, allowed_tlds=allowed), SyntaxProblem)


def test_special_use_tld_is_only_the_last_label() -> None:
    """example.com and test.com are ordinary domains; only the TLD is special."""
    assert parsed("ann@example.com").domain == "example.com"
    assert parsed("ann@test.com").domain == "test.com"


@pytest.mark.parametrize(
    ("text", "domain"),
    [
        ("ann@[192.0.2.1]", "[192.0.2.1]"),
        ("ann@[IPv6:2001:db8::1]", "[IPv6:2001:db8::1]"),
    ],
)
def test_domain_literals_are_accepted_when_allowed(text: str, domain: str) -> None:
    """With allow_domain_literal, a bracketed address literal is the domain (RFC 5321 §4.1.3)."""
    assert parsed(text, allow_domain_literal=True).domain == domain


@pytest.mark.parametrize("text", ["ann@[300.0.0.1]", "ann@[example.com]", "ann@[IPv6:zz::1]"])
def test_malformed_domain_literals_are_refused_even_when_allowed(text: str) -> None:
    """A bracketed literal must still hold a valid address."""
    assert problem(text, allow_domain_literal=True).code is SyntaxCode.DOMAIN_LITERAL


def test_codes_are_strings_for_events() -> None:
    """Codes compare equal to their stable string form."""
    assert problem("").code == "empty"


# Hypothesis strategies: arbitrary text, and address-shaped text built from
# the characters that matter (dots, quotes, @, IDN, case, blanks, controls).
LOCAL_CHARS = st.sampled_from(list("abcXYZ09.+-_'\" @éüßK用\u212a\u0308"))
LABEL_CHARS = st.sampled_from(list("abcxyzAZ09-éüßми_\uff0e"))
TLDS = st.sampled_from(["com", "de", "org", "co.uk", "рф", "xn--p1ai", "test", "example", "local"])


@st.composite
def address_like(draw: st.DrawFn) -> str:
    local = draw(st.text(LOCAL_CHARS, max_size=12))
    if draw(st.booleans()):
        local = f'"{local}"'
    labels = draw(st.lists(st.text(LABEL_CHARS, min_size=1, max_size=8), min_size=0, max_size=3))
    return f"{local}@{'.'.join([*labels, draw(TLDS)])}"


ANY_TEXT = st.text() | st.emails() | address_like()
ADDRESSES = st.emails() | address_like()


@given(ANY_TEXT, st.lists(st.sampled_from(["test", "example", "local", ".Alt"]), max_size=2))
def test_parse_never_raises(text: str, allowed: list[str]) -> None:
    """Any text gives an Address or a SyntaxProblem, never an exception."""
    result = parse_address(text, allowed_tlds=allowed)
    assert isinstance(result, Address | SyntaxProblem)


@given(st.text(max_size=20), st.text(max_size=20), st.characters(codec="utf-8", categories=["Cc"]))
def test_any_control_character_is_refused(before: str, after: str, control: str) -> None:
    """A control character that is not surrounding blank space is always refused."""
    text = f"{before}{control}{after}"
    assume(control in text.strip(" \t"))
    assert problem(text).code is SyntaxCode.CONTROL_CHARACTER


@given(st.text(max_size=20), st.text(max_size=20), st.sampled_from(["\u2028", "\u2029"]))
def test_line_separators_are_refused(before: str, after: str, separator: str) -> None:
    """U+2028 and U+2029 are refused wherever they appear."""
    assert problem(f"{before}{separator}{after}").code is SyntaxCode.CONTROL_CHARACTER


@given(ADDRESSES)
def test_normalised_form_reparses_to_the_same_address(text: str) -> None:
    """Normalisation is idempotent: parsing ``normalized`` changes nothing."""
    first = parse_address(text, allowed_tlds=["test"])
    assume(isinstance(first, Address))
    assert isinstance(first, Address)
    again = parse_address(first.normalized, allowed_tlds=["test"])
    assert again == dataclasses.replace(first, original=first.normalized)


@given(ADDRESSES)
def test_ascii_form_reparses_to_the_same_address(text: str) -> None:
    """The ASCII form, when there is one, parses to the same normalised address."""
    first = parse_address(text, allowed_tlds=["test"])
    assume(isinstance(first, Address) and first.ascii_email is not None)
    assert isinstance(first, Address) and first.ascii_email is not None
    again = parse_address(first.ascii_email, allowed_tlds=["test"])
    assert again == dataclasses.replace(first, original=first.ascii_email)


@given(ANY_TEXT)
def test_ascii_email_is_none_exactly_when_smtputf8(text: str) -> None:
    """``ascii_email`` is None iff the local part needs SMTPUTF8 (RFC 6531)."""
    result = parse_address(text, allowed_tlds=["test"])
    assume(isinstance(result, Address))
    assert isinstance(result, Address)
    assert (result.ascii_email is None) is result.smtputf8
    assert result.smtputf8 is not result.local_part.isascii()


@given(ADDRESSES)
def test_parsed_addresses_hold_no_control_characters_and_fit_smtp(text: str) -> None:
    """An accepted address is safe for an SMTP command line (RFC 5321 §4.5.3.1)."""
    result = parse_address(text, allowed_tlds=["test"])
    assume(isinstance(result, Address))
    assert isinstance(result, Address)
    assert not any(char in result.normalized for char in "\r\n\0\t")
    assert len(result.local_part.encode()) <= 64
    assert len(result.normalized.encode()) <= 254
    assert result.domain == result.domain.lower()
    assert result.ascii_domain.isascii()


# --- Hostile input --------------------------------------------------------------------
#
# Invisible and direction-changing characters are refused (email-validator's
# "unsafe characters": categories Cf, Zs but space, Co, Cn, ...), on the side of
# the @-sign that holds them. Look-alikes from other scripts are other names:
# IDNA 2008 has no mixed-script rule (that is registry policy, UTS #39), so
# "pаypal.com" with a Cyrillic а is a valid domain of its own, verified as such
# and never folded into its Latin look-alike; a Hebrew letter inside a Latin
# label breaks the Bidi rule (RFC 5893 §2) and is refused.

INVISIBLE = [
    ("alice\u200f@example.com", SyntaxCode.INVALID_LOCAL),  # right-to-left mark
    ("alice@\u200eexample.com", SyntaxCode.INVALID_DOMAIN),  # left-to-right mark
    ("\u202eecila@example.com", SyntaxCode.INVALID_LOCAL),  # right-to-left override
    ("\u202dalice@example.com", SyntaxCode.INVALID_LOCAL),  # left-to-right override
    ("ali\u200dce@example.com", SyntaxCode.INVALID_LOCAL),  # zero width joiner
    ("alice@exa\u200dmple.com", SyntaxCode.INVALID_DOMAIN),
    ("ali\u200cce@example.com", SyntaxCode.INVALID_LOCAL),  # zero width non-joiner
    ("alice@exa\u200cmple.com", SyntaxCode.INVALID_DOMAIN),
    ("\ufeffalice@example.com", SyntaxCode.INVALID_LOCAL),  # byte order mark
    ("alice\u2060@example.com", SyntaxCode.INVALID_LOCAL),  # word joiner
    ("alice@exam\u2060ple.com", SyntaxCode.INVALID_DOMAIN),
    ("alice\u00a0@example.com", SyntaxCode.INVALID_LOCAL),  # no-break space
    ("alice\ue000@example.com", SyntaxCode.INVALID_LOCAL),  # private use
    ("alice\U000e0041@example.com", SyntaxCode.INVALID_LOCAL),  # tag character
    ("alice\ud800@example.com", SyntaxCode.INVALID_LOCAL),  # lone surrogate
    ("alice@exa\u00admple.com", SyntaxCode.INVALID_DOMAIN),  # soft hyphen
    ("alice@str\u05d0ct.com", SyntaxCode.INVALID_DOMAIN),  # Hebrew letter in a Latin label
]


@pytest.mark.parametrize(("text", "code"), INVISIBLE)
def test_invisible_and_direction_characters_are_refused_on_their_side(
    text: str, code: SyntaxCode
) -> None:
    """Marks, joiners, overrides and other unsafe characters: refused, blamed on their side."""
    assert problem(text).code is code


def test_a_soft_hyphen_in_the_local_part_is_blamed_on_the_local_part() -> None:
    """The name of the character in the sentence does not decide the side."""
    assert problem("ali\u00adce@example.com").code is SyntaxCode.INVALID_LOCAL


@pytest.mark.parametrize(("text", "_code"), INVISIBLE)
def test_an_unsafe_character_is_named_in_the_sentence(text: str, _code: SyntaxCode) -> None:
    """The sentence names the character, so a person can find what they cannot see."""
    message = problem(text).message
    assert message[:1].isupper() and message.endswith(".")
    assert "unsafe characters" in message or "invalid" in message


# (input, Unicode domain): look-alikes of Latin letters from other scripts.
CONFUSABLE_DOMAINS = [
    ("alice@p\u0430ypal.com", "p\u0430ypal.com"),  # Cyrillic а
    ("alice@PA\u0423PAL.com", "pa\u0443pal.com"),  # Cyrillic У, lower-cased
    ("alice@g\u03bfogle.com", "g\u03bfogle.com"),  # Greek ο
    ("alice@\u0440\u0430\u0443\u0440\u0430l.com", "\u0440\u0430\u0443\u0440\u0430l.com"),
]


@pytest.mark.parametrize(("text", "domain"), CONFUSABLE_DOMAINS)
def test_a_look_alike_domain_is_a_domain_of_its_own(text: str, domain: str) -> None:
    """A mixed-script domain parses as itself: its A-label decodes back to it, never to Latin."""
    address = parsed(text)
    assert address.domain == domain
    label, _, tld = address.ascii_domain.partition(".")
    assert label.startswith("xn--") and tld == "com"
    assert label[4:].encode().decode("punycode") == domain.partition(".")[0]
    assert address.ascii_email == f"alice@{address.ascii_domain}"


@pytest.mark.parametrize("local", ["\u0430lice", "ab\u03b1", "\u0430\u0440ple"])
def test_a_mixed_script_local_part_needs_smtputf8(local: str) -> None:
    """A local part with a look-alike letter is another mailbox, only sendable with SMTPUTF8."""
    address = parsed(f"{local}@example.com")
    assert address.local_part == local
    assert address.smtputf8 and address.ascii_email is None


HUGE = 1024 * 1024

# A megabyte in one field: no address, but what a broken producer may send.
HUGE_INPUTS = {
    "local part": "a" * HUGE + "@example.com",
    "no @-sign": "a" * HUGE,
    "Cyrillic local part": "\u0430" * HUGE + "@example.com",
    "domain": "alice@" + "b" * HUGE + ".com",
    "labels": "alice@" + "b." * (HUGE // 2) + "com",
    "control character at the end": "a" * HUGE + "@example.com\n",
}


@pytest.mark.parametrize("text", HUGE_INPUTS.values(), ids=HUGE_INPUTS.keys())
def test_a_megabyte_of_text_gets_a_short_sentence(text: str) -> None:
    """A field of a megabyte is refused with a sentence that does not repeat it."""
    message = problem(text).message
    assert len(message) < 400


def test_a_huge_special_use_domain_gets_a_short_sentence() -> None:
    """A megabyte under .example: refused, without quoting it back."""
    assert len(problem("alice@" + "b" * HUGE + ".example").message) < 400


def test_text_longer_than_any_address_is_refused_before_it_is_scanned() -> None:
    """Over INPUT_MAX_CHARS: too long, even when a control character or an unsafe one
    comes later (nothing scanned it), with a sentence that gives its length."""
    for text in ("a" * (INPUT_MAX_CHARS + 1), "a" * INPUT_MAX_CHARS + "\n@example.com"):
        refused = problem(text)
        assert refused.code is SyntaxCode.TOO_LONG
        assert str(len(text)) in refused.message and len(refused.message) < 400
    assert problem("a" * 60 + "\n@example.com").code is SyntaxCode.CONTROL_CHARACTER


# Characters that make trouble: look-alikes, invisibles, marks, controls, at-signs.
TROUBLE = st.sampled_from(
    "\u0430\u0435\u043e\u0440\u0441\u0443\u0456\u03bf\u03b1\u05d0\u0627"  # look-alikes
    "\u200b\u200c\u200d\u200e\u200f\u202e\u2060\ufeff\u00ad"  # invisible
    "\u0301\u0308\ufe0f\uff20\uff0e\u3002\ud800\r\n\0"  # marks, at-signs, dots, controls
)
LOOK_ALIKES = st.sampled_from("\u0430\u0435\u043e\u0440\u0441\u0443\u0456\u03bf\u03b1\u0301")


def inserted(
    texts: st.SearchStrategy[str], extra: st.SearchStrategy[str]
) -> st.SearchStrategy[str]:
    """``texts`` with one to three of ``extra`` put in at some position."""
    return st.builds(
        lambda text, at, more: text[:at] + more + text[at:],
        texts,
        st.integers(min_value=0, max_value=40),
        st.text(extra, min_size=1, max_size=3),
    )


HOSTILE_TEXT = st.text(st.characters(exclude_categories=())) | inserted(ADDRESSES, TROUBLE)
# Addresses with look-alikes in them: most of these parse.
LOOK_ALIKE_ADDRESSES = inserted(st.emails(), LOOK_ALIKES)


@given(HOSTILE_TEXT)
def test_hostile_text_gives_a_value_and_the_same_one_each_time(text: str) -> None:
    """Any text, surrogates and look-alikes included: a value, and the same value again."""
    first = parse_address(text, allowed_tlds=["test"])
    assert isinstance(first, Address | SyntaxProblem)
    assert parse_address(text, allowed_tlds=["test"]) == first


@given(HOSTILE_TEXT | LOOK_ALIKE_ADDRESSES)
def test_an_address_from_hostile_text_keeps_every_invariant(text: str) -> None:
    """Whatever the input, an accepted Address is consistent, safe for SMTP and stable."""
    result = parse_address(text, allowed_tlds=["test"])
    assume(isinstance(result, Address))
    assert isinstance(result, Address)
    assert result.original == text
    assert result.normalized == f"{result.local_part}@{result.domain}"
    assert not any(unicodedata.category(char) in ("Cc", "Cs", "Cf") for char in result.normalized)
    assert len(result.local_part.encode()) <= 64
    assert result.ascii_domain.isascii() and result.ascii_domain == result.ascii_domain.lower()
    assert (result.ascii_email is None) is result.smtputf8
    again = parse_address(result.normalized, allowed_tlds=["test"])
    assert again == dataclasses.replace(result, original=result.normalized)


@given(HOSTILE_TEXT)
def test_a_problem_from_hostile_text_is_a_sentence(text: str) -> None:
    """Whatever the input, a refusal has a stable code and a sentence."""
    result = parse_address(text, allowed_tlds=["test"])
    assume(isinstance(result, SyntaxProblem))
    assert isinstance(result, SyntaxProblem)
    assert result.code in set(SyntaxCode)
    assert result.message[:1].isupper() and result.message.endswith(".")
