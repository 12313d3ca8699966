"""Bad input never stops the stream: a malformed event goes to the DLQ, and the stream goes on.

Hostile events go to the input topic of one running pipeline (the bundled
broker, the sandbox mail world), between good requests sent before and after
them, all in the partition of the good strict.test requests. An event that is
no AddressRequest this version can read goes to the dead-letter topic byte for
byte, with a sentence saying what is wrong; an AddressRequest whose address is
bad gets its verdict; every good request still gets its own verdict, and
nothing else lands in the dead-letter topic.

The pipeline runs once for the module (:func:`outcome`); each test reads one
behaviour off what came out. An event of 10 MB gets a pipeline of its own.
"""

from __future__ import annotations

import io
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final

import fastavro
import pytest
import pytest_asyncio
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from broker import RunningBroker
from fastavro.schema import fingerprint, to_parsing_canonical_form
from support import SandboxThread

from streams.assembly import verifier_factory
from streams.core.verdict import Evidence, Flags, Status
from streams.errors import CodecError
from streams.pipeline.codecs import MAGIC, decode, encode
from streams.pipeline.records import AddressRequest, DeadLetter, VerdictRecord
from streams.pipeline.runner import PipelineRun, partition_key
from streams.pipeline.schemas import current_schemas
from streams.sandbox import load_world

pytestmark = pytest.mark.integration

WORLD = load_world()
FIRST_TRY = {e.address: f"{e.status}/{e.reason}" for e in WORLD.expectations}
SUBMITTED = datetime(2025, 1, 31, 12, 0, tzinfo=UTC)
TLDS = ("test",)

#: The key of every hostile event: the partition of the good strict.test
#: requests, so that good requests queue in the same partition before and after.
HOSTILE_KEY: Final = partition_key("alice@strict.test", TLDS)

#: Seconds the module's run may take to get an outcome for every event.
SETTLE_TIMEOUT: Final = 60.0

#: The verdict of an over-long address stays about this small (its email cut).
VERDICT_SIZE_LIMIT: Final = 4096


def request(email: str, request_id: str | None = None) -> AddressRequest:
    """An AddressRequest for ``email``, with a fresh request id unless one is given."""
    return AddressRequest(
        request_id=str(uuid.uuid4()) if request_id is None else request_id,
        email=email,
        submitted_at=SUBMITTED,
        source="test",
    )


def avro_long(number: int) -> bytes:
    """``number`` as Avro writes a long: zig-zag, then base-128 varint (Avro spec, "Encodings")."""
    value = (number << 1) ^ (number >> 63)
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def avro_string(data: bytes) -> bytes:
    """``data`` as an Avro string: its length as a long, then the bytes as they are."""
    return avro_long(len(data)) + data


def without_request_id() -> bytes:
    """An AddressRequest by a schema without ``request_id``, in single-object encoding.

    The current schema requires the field, so such an event can only come
    from another schema, with a fingerprint nobody knows.
    """
    definition = dict(current_schemas()["io.mxprobe.AddressRequest"].definition)
    definition["fields"] = [f for f in definition["fields"] if f["name"] != "request_id"]
    canonical = to_parsing_canonical_form(definition)
    buffer = io.BytesIO(MAGIC + bytes.fromhex(fingerprint(canonical, "CRC-64-AVRO")))
    buffer.seek(0, io.SEEK_END)
    datum = {"email": "alice@strict.test", "submitted_at": 0, "source": "test"}
    fastavro.schemaless_writer(buffer, fastavro.parse_schema(definition), datum)
    return buffer.getvalue()


TEMPLATE = encode(request("alice@strict.test", "r-template"))
HEADER = TEMPLATE[:10]  # C3 01 and the fingerprint of the current AddressRequest
A_VERDICT = VerdictRecord(
    request_id="v-1",
    email="alice@strict.test",
    normalized_email="alice@strict.test",
    ascii_email="alice@strict.test",
    status=Status.DELIVERABLE,
    reason="accepted",
    flags=Flags(),
    confidence=0.9,
    evidence=Evidence(),
    verified_at=SUBMITTED,
    latency_ms=1,
)
A_LETTER = DeadLetter(
    value=TEMPLATE, topic="addresses", partition=0, offset=7, error="Bad.", failed_at=SUBMITTED
)

#: (case, the event's value, words its dead letter's error must hold).
DEAD_LETTER_CASES: list[tuple[str, bytes | None, str]] = [
    ("text, not Avro", b"not avro at all", "no C3 01 marker"),
    ("empty value", b"", "no C3 01 marker"),
    ("tombstone (no value)", None, "no C3 01 marker"),
    ("the marker alone", MAGIC, "no C3 01 marker"),
    ("a Verdict", encode(A_VERDICT), "io.mxprobe.Verdict"),
    ("a DeadLetter", encode(A_LETTER), "io.mxprobe.DeadLetter"),
    ("a fingerprint nobody knows", MAGIC + bytes(range(8)) + TEMPLATE[10:], "0001020304050607"),
    ("no request_id (another schema)", without_request_id(), "fingerprint"),
    ("truncated", TEMPLATE[:-3], "ends early"),
    ("cut inside the header", TEMPLATE[:6], "no C3 01 marker"),
    ("trailing bytes", TEMPLATE + b"\x00junk", "left over"),
    ("request_id not UTF-8", HEADER + avro_string(b"\xff\xfe") + TEMPLATE[21:], "UnicodeDecode"),
    ("a string length of 2**62", HEADER + avro_long(2**62) + b"abc", "ends early"),
    ("a negative string length", HEADER + avro_long(-5) + b"abc", "io.mxprobe.AddressRequest"),
    ("a varint that never ends", HEADER + b"\xff" * 64, "io.mxprobe.AddressRequest"),
]

UNDELIVERABLE_SYNTAX = "undeliverable/invalid_syntax"
NO_SUCH_DOMAIN = "undeliverable/no_such_domain"

#: (case, the email of a valid AddressRequest, its verdict as "status/reason").
VERDICT_CASES: list[tuple[str, str, str]] = [
    ("NUL in the local part", "alice\0@strict.test", UNDELIVERABLE_SYNTAX),
    ("NUL at the end", "alice@strict.test\0", UNDELIVERABLE_SYNTAX),
    ("CR in the local part", "alice\r@strict.test", UNDELIVERABLE_SYNTAX),
    ("LF in the domain", "alice@str\nict.test", UNDELIVERABLE_SYNTAX),
    (
        "SMTP command smuggled",
        "alice@strict.test\r\nRCPT TO:<nobody@strict.test>",
        UNDELIVERABLE_SYNTAX,
    ),
    ("empty string", "", UNDELIVERABLE_SYNTAX),
    ("blanks only", " \t ", UNDELIVERABLE_SYNTAX),
    ("right-to-left mark in the local part", "alice\u200f@strict.test", UNDELIVERABLE_SYNTAX),
    ("left-to-right mark in the domain", "alice@\u200estrict.test", UNDELIVERABLE_SYNTAX),
    ("right-to-left override", "\u202eecila@strict.test", UNDELIVERABLE_SYNTAX),
    ("zero-width joiner in the local part", "ali\u200dce@strict.test", UNDELIVERABLE_SYNTAX),
    ("zero-width joiner in the domain", "alice@str\u200dict.test", UNDELIVERABLE_SYNTAX),
    ("zero-width non-joiner in the domain", "alice@str\u200cict.test", UNDELIVERABLE_SYNTAX),
    ("zero-width space", "alice\u200b@strict.test", UNDELIVERABLE_SYNTAX),
    ("byte order mark in front", "\ufeffalice@strict.test", UNDELIVERABLE_SYNTAX),
    ("Hebrew letter in a Latin label", "alice@str\u05d0ct.test", UNDELIVERABLE_SYNTAX),
    ("full-width at-sign", "alice\uff20strict.test", UNDELIVERABLE_SYNTAX),
    ("100 kB local part", "a" * 100_000 + "@strict.test", UNDELIVERABLE_SYNTAX),
    # Confusables are other domains: verified as they are, never mapped to the
    # Latin look-alike (IDNA 2008 has no mixed-script rule; UTS #46 keeps them).
    ("Cyrillic і in a Latin domain", "alice@str\u0456ct.test", NO_SUCH_DOMAIN),
    ("Greek ο in a Latin domain", "alice@bl\u03bfcked.test", NO_SUCH_DOMAIN),
    # Another mailbox than alice: asked with SMTPUTF8 (RFC 6531), the host says no.
    ("Cyrillic а in the local part", "\u0430lice@strict.test", "undeliverable/mailbox_not_found"),
]

#: Good requests: sent first, between every few hostile events, and last.
GOOD_EMAILS = [
    "alice@strict.test",
    "nobody@strict.test",
    "anyone@catchall.test",
    "info@strict.test",
]

#: Two requests that share the empty request id: their verdicts cannot be told apart.
EMPTY_ID_EMAILS = ["alice@strict.test", "nobody@strict.test"]
LONG_ID = "r" * 100_000  # keys the verdict and is kept for duplicates: refused


@dataclass(frozen=True, slots=True)
class Sent:
    """One event as the producer wrote it to the input topic."""

    case: str
    key: bytes | None
    value: bytes | None
    partition: int
    offset: int
    request_id: str | None  # when the value is an AddressRequest
    expected: str | None = None  # "status/reason", for good requests


@dataclass
class Outcome:
    """What came out of the module's run: verdicts and dead letters, matched to events."""

    input_topic: str
    sent: list[Sent] = field(default_factory=list)
    verdicts: dict[str, list[VerdictRecord]] = field(default_factory=dict)  # by request id
    verdict_sizes: dict[str, int] = field(default_factory=dict)  # bytes, by request id
    letters: dict[tuple[int, int], DeadLetter] = field(default_factory=dict)  # by source
    dead_letters_counted: int = 0  # the worker's own count
    seconds: float = 0.0  # from the first event sent to the last outcome

    def event(self, case: str) -> Sent:
        """The event sent for ``case``."""
        [sent] = [s for s in self.sent if s.case == case]
        return sent

    def letter(self, case: str) -> DeadLetter | None:
        """The dead letter of ``case``'s event, if it has one."""
        sent = self.event(case)
        return self.letters.get((sent.partition, sent.offset))

    def verdict(self, case: str) -> VerdictRecord | None:
        """The verdict of ``case``'s request, if it has one."""
        request_id = self.event(case).request_id
        found = self.verdicts.get(request_id, []) if request_id is not None else []
        return found[0] if found else None

    def settled(self) -> bool:
        """Every event has its dead letter or its verdict."""
        waiting: dict[str, int] = {}
        for sent in self.sent:
            if (sent.partition, sent.offset) in self.letters:
                continue
            if sent.request_id is None:
                return False
            waiting[sent.request_id] = waiting.get(sent.request_id, 0) + 1
        return all(len(self.verdicts.get(rid, [])) >= n for rid, n in waiting.items())


def status_of(record: VerdictRecord | None) -> str | None:
    """``status/reason`` of a verdict record, or None."""
    return None if record is None else f"{record.status.value}/{record.reason}"


@pytest.fixture(scope="module")
def world_sb() -> Iterator[SandboxThread]:
    with SandboxThread(WORLD) as sb:
        yield sb


class Sender:
    """Writes events to the input topic, in order, and records each in an :class:`Outcome`."""

    def __init__(self, producer: AIOKafkaProducer, outcome: Outcome) -> None:
        self._producer = producer
        self._outcome = outcome
        self._good = 0

    async def event(
        self,
        case: str,
        key: bytes | None,
        value: bytes | None,
        *,
        request_id: str | None = None,
        expected: str | None = None,
    ) -> None:
        """Send one event and wait until the broker has it."""
        topic = self._outcome.input_topic
        meta = await self._producer.send_and_wait(topic, key=key, value=value)
        sent = Sent(case, key, value, meta.partition, meta.offset, request_id, expected)
        self._outcome.sent.append(sent)

    async def good(self) -> None:
        """Send the next good request (keyed by its domain, as ``mxprobe submit`` does)."""
        email = GOOD_EMAILS[self._good % len(GOOD_EMAILS)]
        self._good += 1
        item = request(email)
        await self.event(
            f"good {self._good}",
            partition_key(email, TLDS),
            encode(item),
            request_id=item.request_id,
            expected=FIRST_TRY[email],
        )


async def send_every_case(sender: Sender) -> None:
    """Good requests first, then each hostile event with a good one after every third, then
    good requests again: all in the partition of strict.test."""
    hostile: list[tuple[str, bytes | None, str | None]] = [
        (case, value, None) for case, value, _ in DEAD_LETTER_CASES
    ]
    for case, email, _ in VERDICT_CASES:
        item = request(email)
        hostile.append((case, encode(item), item.request_id))
    for number, email in enumerate(EMPTY_ID_EMAILS):
        hostile.append((f"empty request_id {number}", encode(request(email, "")), ""))
    hostile.append(("100 kB request_id", encode(request("alice@strict.test", LONG_ID)), LONG_ID))
    for _ in GOOD_EMAILS:
        await sender.good()
    for number, (case, value, request_id) in enumerate(hostile):
        await sender.event(case, HOSTILE_KEY, value, request_id=request_id)
        if number % 3 == 2:
            await sender.good()
    for _ in GOOD_EMAILS:
        await sender.good()


async def collect(
    consumer: AIOKafkaConsumer, outcome: Outcome, verdict_topic: str, timeout: float
) -> None:
    """Read verdicts and dead letters until every event has an outcome or ``timeout`` passed."""
    deadline = time.monotonic() + timeout
    while not outcome.settled() and time.monotonic() < deadline:
        batches = await consumer.getmany(timeout_ms=200)
        for tp, messages in batches.items():
            for message in messages:
                if tp.topic == verdict_topic:
                    record = decode(message.value, VerdictRecord)
                    outcome.verdicts.setdefault(record.request_id, []).append(record)
                    outcome.verdict_sizes[record.request_id] = len(message.value)
                else:
                    letter = decode(message.value, DeadLetter)
                    outcome.letters[(letter.partition, letter.offset)] = letter


async def run_pipeline(
    sb: SandboxThread,
    broker: RunningBroker,
    send: Callable[[Sender], Awaitable[None]],
    *,
    timeout: float,
    max_request_size: int = 1_048_576,
) -> Outcome:
    """Start a pipeline, ``send`` events to its input, and gather what comes out."""
    settings = sb.pipeline_settings(broker)
    outcome = Outcome(input_topic=settings.input_topic)
    async with PipelineRun(settings, verifier_factory(settings)) as running:
        consumer = AIOKafkaConsumer(
            settings.verdict_topic,
            settings.dlq_topic,
            bootstrap_servers=broker.bootstrap,
            auto_offset_reset="earliest",
            group_id=None,
        )
        producer = AIOKafkaProducer(
            bootstrap_servers=broker.bootstrap, max_request_size=max_request_size
        )
        await consumer.start()
        await producer.start()
        try:
            started = time.monotonic()
            await send(Sender(producer, outcome))
            await collect(consumer, outcome, settings.verdict_topic, timeout)
            outcome.seconds = time.monotonic() - started
        finally:
            await producer.stop()
            await consumer.stop()
        assert running.pipeline is not None
        outcome.dead_letters_counted = running.pipeline.outputs.dead_letters
    return outcome


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def outcome(world_sb: SandboxThread, broker: RunningBroker) -> Outcome:
    """One pipeline run over every case of this module (but 10 MB), and what came out of it."""
    return await run_pipeline(world_sb, broker, send_every_case, timeout=SETTLE_TIMEOUT)


def good_verdicts(outcome: Outcome) -> tuple[dict[str, str | None], dict[str, str | None]]:
    """The verdicts the good requests got, and those they should have got, by case."""
    good = [sent for sent in outcome.sent if sent.expected is not None]
    got = {sent.case: status_of(outcome.verdict(sent.case)) for sent in good}
    return got, {sent.case: sent.expected for sent in good}


# --- the stream goes on --------------------------------------------------------------


def test_every_event_gets_an_outcome_in_time(outcome: Outcome) -> None:
    """Each event sent gets its dead letter or its verdict within the run's time limit."""
    assert outcome.settled(), f"no outcome within {SETTLE_TIMEOUT} s"
    assert outcome.seconds < SETTLE_TIMEOUT


def test_every_good_request_gets_its_verdict(outcome: Outcome) -> None:
    """Good requests before, between and after the hostile events all get their own verdict."""
    got, expected = good_verdicts(outcome)
    assert len(got) > 2 * len(GOOD_EMAILS)
    assert got == expected


def test_only_the_undecodable_events_are_dead_lettered(outcome: Outcome) -> None:
    """The dead-letter topic holds the undecodable events and nothing else (no good request)."""
    expected = {outcome.event(case) for case, _, _ in DEAD_LETTER_CASES}
    lettered = {sent for sent in outcome.sent if (sent.partition, sent.offset) in outcome.letters}
    # Requests without a usable id are dead-lettered too.
    bad_ids = {sent for sent in outcome.sent if sent.request_id in ("", LONG_ID)}
    assert lettered - bad_ids == expected
    assert outcome.dead_letters_counted == len(outcome.letters)


# --- undecodable events: to the dead-letter topic -------------------------------------


@pytest.mark.parametrize(
    ("case", "words"), [(case, words) for case, _, words in DEAD_LETTER_CASES], ids=lambda v: v
)
def test_an_undecodable_event_is_dead_lettered_byte_for_byte(
    outcome: Outcome, case: str, words: str
) -> None:
    """The dead letter keeps the event's key, value, topic, partition and offset."""
    sent = outcome.event(case)
    letter = outcome.letter(case)
    assert letter is not None, f"{case}: no dead letter"
    assert letter.key == sent.key
    assert letter.value == (sent.value or b"")
    assert (letter.topic, letter.partition, letter.offset) == (
        outcome.input_topic,
        sent.partition,
        sent.offset,
    )
    assert outcome.verdict(case) is None


@pytest.mark.parametrize(
    ("case", "words"), [(case, words) for case, _, words in DEAD_LETTER_CASES], ids=lambda v: v
)
def test_a_dead_letter_says_what_is_wrong(outcome: Outcome, case: str, words: str) -> None:
    """The error is the codec's sentence about these bytes, not a crash report."""
    letter = outcome.letter(case)
    assert letter is not None, f"{case}: no dead letter"
    assert words in letter.error
    assert not letter.error[0].islower() and letter.error.endswith(".")
    assert not letter.error.startswith("mxprobe failed")  # a handler crash, not a decode error
    with pytest.raises(CodecError) as decoded:
        decode(outcome.event(case).value or b"", AddressRequest)
    assert letter.error == str(decoded.value)


# --- bad addresses: a verdict -------------------------------------------------------------


@pytest.mark.parametrize(
    ("case", "expected"), [(case, expected) for case, _, expected in VERDICT_CASES], ids=lambda v: v
)
def test_a_bad_address_gets_its_verdict(outcome: Outcome, case: str, expected: str) -> None:
    """Control characters, invisible and confusable characters: each one deterministic verdict."""
    assert status_of(outcome.verdict(case)) == expected
    assert outcome.letter(case) is None


def test_a_confusable_domain_is_verified_as_itself(outcome: Outcome) -> None:
    """A Cyrillic look-alike of strict.test is its own (non-existent) domain, not strict.test."""
    record = outcome.verdict("Cyrillic і in a Latin domain")
    assert record is not None
    a_label = "xn--" + "str\u0456ct".encode("punycode").decode()  # RFC 3492, as IDNA uses it
    assert record.ascii_email == f"alice@{a_label}.test"
    assert record.evidence.mail_host is None


def test_a_mixed_script_local_part_is_asked_as_it_is(outcome: Outcome) -> None:
    """A Cyrillic а makes another local part: it needs SMTPUTF8 and the host's reply decides."""
    record = outcome.verdict("Cyrillic а in the local part")
    assert record is not None
    assert record.normalized_email == "\u0430lice@strict.test"
    assert record.ascii_email is None  # only a host that offers SMTPUTF8 can be asked
    assert (record.evidence.mail_host, record.evidence.reply_code) == ("mx.strict.test", 550)


def test_the_verdict_of_an_over_long_address_stays_small(outcome: Outcome) -> None:
    """An address far over 254 octets gets a verdict of a few kB, with its email cut."""
    sent = outcome.event("100 kB local part")
    assert sent.request_id is not None
    assert outcome.verdict_sizes[sent.request_id] < VERDICT_SIZE_LIMIT


def test_a_request_without_an_id_is_dead_lettered(outcome: Outcome) -> None:
    """request_id "" cannot carry a verdict back to its caller: each such event goes to the DLQ."""
    letters = [outcome.letter(f"empty request_id {n}") for n in range(len(EMPTY_ID_EMAILS))]
    assert all(letter is not None for letter in letters)
    assert "" not in outcome.verdicts


def test_a_request_id_of_100_kB_is_dead_lettered(outcome: Outcome) -> None:
    """An id past 1,024 characters: to the DLQ, with the limit and the fix."""
    letter = outcome.letter("100 kB request_id")
    assert letter is not None
    assert "100000 characters, over the 1024" in letter.error
    assert "a UUID" in letter.error
    assert LONG_ID not in outcome.verdicts


# --- 10 MB --------------------------------------------------------------------------------

HUGE: Final = 10 * 1024 * 1024
HUGE_TIMEOUT: Final = 10.0  # a good request takes a second or two


@pytest.mark.parametrize(
    "case",
    [
        "10 MB address",
        "10 MB of bytes that are not Avro",
    ],
)
async def test_a_10_mb_event_does_not_stop_the_stream(
    world_sb: SandboxThread, broker: RunningBroker, case: str
) -> None:
    """A 10 MB event gets its verdict (a small one) or its dead letter; later requests pass."""
    item = request("a" * HUGE + "@strict.test")
    value = encode(item) if case == "10 MB address" else bytes(HUGE)
    request_id = item.request_id if case == "10 MB address" else None

    async def send(sender: Sender) -> None:
        await sender.good()
        await sender.event(case, HOSTILE_KEY, value, request_id=request_id)
        for _ in GOOD_EMAILS:
            await sender.good()

    outcome = await run_pipeline(
        world_sb, broker, send, timeout=HUGE_TIMEOUT, max_request_size=2 * HUGE
    )
    got, expected = good_verdicts(outcome)
    assert got == expected
    if request_id is None:
        letter = outcome.letter(case)
        assert letter is not None and letter.error.endswith(".")
    else:
        assert status_of(outcome.verdict(case)) == UNDELIVERABLE_SYNTAX
        assert outcome.verdict_sizes[request_id] < VERDICT_SIZE_LIMIT
