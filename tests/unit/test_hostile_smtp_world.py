"""The hostile SMTP hosts' decisions (pure) and the packaged hostile world."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.errors import WorldError
from streams.sandbox import Behaviour, World, load_world
from streams.sandbox.behaviours import (
    CHUNK,
    ENDLESS_LIMIT,
    LONG_LINE_SIZE,
    HostPolicy,
    Reply,
    Silence,
    Stream,
    Trickle,
)
from streams.sandbox.world import Host, packaged_worlds


def policy(behaviour: Behaviour) -> HostPolicy:
    host = Host(name="mx.hostile.test", address="127.0.53.140", behaviour=behaviour)
    return HostPolicy(host, World(hosts=(host,)), clock=lambda: 0.0)


def wire(stream: Stream) -> bytes:
    return b"".join(stream.chunks())


# ---------------------------------------------------------------- Stream


@given(
    head=st.binary(max_size=64),
    body=st.binary(min_size=1, max_size=300),
    size=st.integers(min_value=0, max_value=3 * CHUNK),
    tail=st.binary(max_size=64),
)
def test_stream_sends_head_body_up_to_size_and_tail(
    head: bytes, body: bytes, size: int, tail: bytes
) -> None:
    """A stream is its head, ``size`` bytes of its body repeated, then its tail."""
    stream = Stream(head, body, size, tail)
    repeated = (body * (size // len(body) + 1))[:size]
    assert wire(stream) == head + repeated + tail


@given(body=st.binary(min_size=1, max_size=CHUNK + 10), size=st.integers(0, 4 * CHUNK))
def test_stream_chunks_are_bounded(body: bytes, size: int) -> None:
    """No piece of a stream's body is longer than CHUNK bytes, or one body if that is longer."""
    pieces = list(Stream(b"", body, size).chunks())[1:]
    assert all(len(piece) <= max(CHUNK, len(body)) for piece in pieces)


def test_stream_without_body_is_head_and_tail() -> None:
    """A stream with no body sends head then tail, whatever its size says."""
    assert wire(Stream(b"250-x\r\n", size=10, tail=b"250 y\r\n")) == b"250-x\r\n250 y\r\n"


# ---------------------------------------------------------------- what each host does

OK = Reply.of(250, "2.1.5 Ok")
BANNER = Reply.of(220, "mx.hostile.test ESMTP")


def test_silent_host_never_greets() -> None:
    """The silent host answers the connection with silence."""
    assert policy(Behaviour.SILENT).greeting_misbehaviour(BANNER) == Silence()


def test_early_host_sends_an_extra_reply_with_the_banner() -> None:
    """The early host's greeting is the banner and then one more complete reply."""
    sent = policy(Behaviour.EARLY_REPLY).greeting_misbehaviour(BANNER)
    assert isinstance(sent, Stream)
    data = wire(sent)
    assert data.startswith(BANNER.encode())
    extra = data.removeprefix(BANNER.encode())
    assert extra.startswith(b"250 ") and extra.endswith(b"\r\n") and extra.count(b"\r\n") == 1


@pytest.mark.parametrize("verb", ["EHLO", "MAIL", "RCPT", "RSET", "QUIT"])
def test_drip_host_trickles_every_reply(verb: str) -> None:
    """The drip host sends each reply, unchanged, one byte a second."""
    reply = Reply.of(221, "Bye", close=True) if verb == "QUIT" else OK
    sent = policy(Behaviour.DRIP).reply_misbehaviour(verb, reply)
    assert sent == Trickle(reply.encode(), 1.0, close=reply.close)


def test_endless_host_never_sends_a_last_line() -> None:
    """The endless host's EHLO reply is only continuation lines, ENDLESS_LIMIT bytes long."""
    sent = policy(Behaviour.ENDLESS_REPLY).reply_misbehaviour("EHLO", OK)
    assert isinstance(sent, Stream) and sent.close
    assert sent.size == ENDLESS_LIMIT and not sent.tail
    for line in (sent.head + sent.body).split(b"\r\n")[:-1]:
        assert line.startswith(b"250-")


def test_long_line_host_sends_a_mebibyte_line() -> None:
    """The long-line host's RCPT reply is one line with LONG_LINE_SIZE bytes before its CRLF."""
    sent = policy(Behaviour.LONG_LINE).reply_misbehaviour("RCPT", OK)
    assert isinstance(sent, Stream)
    data = wire(sent)
    assert data.startswith(b"250 ") and data.endswith(b"\r\n")
    assert data.count(b"\n") == 1 and len(data) >= LONG_LINE_SIZE


def test_garbage_host_sends_no_reply_code() -> None:
    """The garbage host's RCPT reply starts with bytes that are no reply code, nor UTF-8."""
    sent = policy(Behaviour.GARBAGE).reply_misbehaviour("RCPT", OK)
    assert isinstance(sent, Stream)
    data = wire(sent)
    assert not data[:3].isdigit()
    with pytest.raises(UnicodeDecodeError):
        data.decode("utf-8")


def test_hangup_host_sends_one_continuation_line_and_closes() -> None:
    """The hangup host sends the first line of its reply as a continuation line, then closes."""
    sent = policy(Behaviour.CLOSE_MID_REPLY).reply_misbehaviour("RCPT", OK)
    assert sent == Stream(b"250-2.1.5 Ok\r\n", close=True)


@pytest.mark.parametrize(
    ("behaviour", "verb"),
    [
        (Behaviour.ENDLESS_REPLY, "RCPT"),
        (Behaviour.LONG_LINE, "EHLO"),
        (Behaviour.GARBAGE, "MAIL"),
        (Behaviour.CLOSE_MID_REPLY, "EHLO"),
        (Behaviour.BAD_BYTES, "RCPT"),
        (Behaviour.STRICT, "RCPT"),
        (Behaviour.SILENT, "EHLO"),
    ],
)
def test_hosts_behave_at_every_other_step(behaviour: Behaviour, verb: str) -> None:
    """Outside its one step, a hostile host sends its replies as they are."""
    assert policy(behaviour).reply_misbehaviour(verb, OK) is None


@pytest.mark.parametrize("behaviour", [b for b in Behaviour if b is not Behaviour.SILENT])
def test_only_the_early_host_adds_to_its_greeting(behaviour: Behaviour) -> None:
    """Besides the silent host, only the early host changes its greeting."""
    sent = policy(behaviour).greeting_misbehaviour(BANNER)
    assert (sent is not None) is (behaviour is Behaviour.EARLY_REPLY)


def test_bad_bytes_host_texts_are_not_utf8_but_valid_replies() -> None:
    """The bad-bytes host's banner and RCPT replies keep their codes; their texts are not UTF-8."""
    host_policy = policy(Behaviour.BAD_BYTES)
    banner = host_policy.banner("127.0.0.1").encode()
    assert banner.startswith(b"220 ") and banner.endswith(b"\r\n")
    with pytest.raises(UnicodeDecodeError):
        banner.decode("utf-8")


# ---------------------------------------------------------------- the packaged world


def test_hostile_world_is_packaged_by_name() -> None:
    """load_world("hostile") reads the packaged hostile world."""
    world = load_world("hostile")
    assert "hostile" in packaged_worlds()
    assert world.source == "streams/sandbox/hostile.toml (packaged)"
    packaged = Path(__file__).parents[2] / "streams" / "sandbox" / "hostile.toml"
    assert dataclasses.replace(load_world(packaged), source=world.source) == world


def test_hostile_world_hosts_live_in_their_own_range() -> None:
    """The hostile hosts use 127.0.53.140-149, apart from the default world's addresses."""
    hostile, default = load_world("hostile"), load_world()
    addresses = {h.address for h in hostile.hosts} | {hostile.dns.address}
    assert all(140 <= int(a.rsplit(".", 1)[1]) <= 149 for a in addresses)
    assert not addresses & ({h.address for h in default.hosts} | {default.dns.address})


def test_hostile_expectations_are_unknown_but_for_bad_bytes() -> None:
    """Every hostile host ends in unknown, except bad bytes in a text, which still answer."""
    world = load_world("hostile")
    for expectation in world.expectations:
        host = world.host("mx." + expectation.address.partition("@")[2])
        answered = host.behaviour is Behaviour.BAD_BYTES
        assert (expectation.status == "unknown") is not answered


def test_an_existing_file_wins_over_a_packaged_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file called like a packaged world is read as a file."""
    (tmp_path / "hostile").write_text("[smtp]\nport = 2525\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    assert load_world("hostile").smtp.port == 2525


def test_an_unknown_name_lists_the_packaged_worlds() -> None:
    """A name that is neither a file nor a packaged world says which worlds exist."""
    with pytest.raises(WorldError, match=r"name a packaged world \(.*hostile.*\)"):
        load_world("no-such-world")
