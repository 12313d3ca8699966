"""The ``sent`` table's bookkeeping: batches in the changelog, recovery, forgetting.

The changelog topic is the boundary here: ``RecordingSentTable`` keeps what
would be sent to it, so that a fresh table can recover from exactly those
messages. The real path (a worker restarted on the bundled broker) is in
``tests/integration/test_pipeline.py``.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from types import SimpleNamespace
from typing import Any

import faust
import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.pipeline.sent import BATCH_BYTES, SentTable, pack_batch, unpack_batch

ENTRIES = st.lists(st.tuples(st.binary(max_size=300), st.binary(max_size=3000)), max_size=20)


class RecordingSentTable(SentTable):
    """A SentTable whose changelog messages are kept in ``sent`` instead of produced."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sent: list[tuple[int, bytes, bytes | None]] = []

    def send_changelog(self, partition: Any, key: Any, value: Any, *args: Any, **kw: Any) -> Any:
        self.sent.append((partition, key, value))


def table() -> RecordingSentTable:
    app = faust.App("t-sent", broker="kafka://127.0.0.1:9", store="memory://", autodiscover=False)
    return RecordingSentTable(
        app,
        name="sent",
        beacon=app.tables.beacon,
        default=None,
        partitions=4,
        key_type=bytes,
        value_type=bytes,
        use_partitioner=False,
    )


def as_events(messages: Iterable[tuple[int, bytes, bytes | None]]) -> list[Any]:
    """Changelog messages as the events recovery hands to apply_changelog_batch."""
    return [
        SimpleNamespace(message=SimpleNamespace(key=key, value=value, partition=partition))
        for partition, key, value in messages
    ]


# -- the batch format ----------------------------------------------------------------


@given(entries=ENTRIES)
def test_a_batch_unpacks_to_its_entries_in_order(entries: list[tuple[bytes, bytes]]) -> None:
    assert list(unpack_batch(pack_batch(entries))) == entries


@given(entries=ENTRIES.filter(bool), data=st.data())
def test_a_truncated_batch_is_a_value_error(
    entries: list[tuple[bytes, bytes]], data: st.DataObject
) -> None:
    """Cut anywhere but between two entries: ValueError, never a wrong entry."""
    packed = pack_batch(entries)
    ends = {len(pack_batch(entries[:i])) for i in range(len(entries) + 1)}
    cut = data.draw(st.integers(0, len(packed) - 1).filter(lambda n: n not in ends))
    with pytest.raises(ValueError, match="truncated"):
        list(unpack_batch(packed[:cut]))


# -- remember, save, recover ---------------------------------------------------------


def test_a_verdict_is_readable_at_once_and_saved_in_one_message_per_partition() -> None:
    sent = table()
    sent.remember(0, b"r1", b"verdict 1")
    sent.remember(0, b"r2", b"verdict 2")
    sent.remember(3, b"r3", b"verdict 3")
    assert sent.verdict(b"r2") == b"verdict 2"
    assert sent.verdict(b"r4") is None
    assert sent.sent == []  # nothing before save()
    sent.save()
    assert sorted(partition for partition, _, _ in sent.sent) == [0, 3]
    by_partition = {partition: (key, value) for partition, key, value in sent.sent}
    key, value = by_partition[0]
    assert key[:1] == b"\xff"  # never a UTF-8 request id
    assert value is not None
    assert [k for k, _ in unpack_batch(value)] == [b"r1", b"r2"]
    sent.save()
    assert len(sent.sent) == 2  # nothing new to save


def test_a_big_batch_is_split_under_the_size_limit() -> None:
    sent = table()
    record = b"x" * 10_000
    for n in range(100):  # about 1 MB
        sent.remember(1, f"r{n}".encode(), record)
    sent.save()
    assert len(sent.sent) > 1
    sizes = [len(value or b"") for _, _, value in sent.sent]
    assert max(sizes) <= BATCH_BYTES
    keys = [k for _, _, value in sent.sent for k, _ in unpack_batch(value or b"")]
    assert keys == [f"r{n}".encode() for n in range(100)]


def test_a_new_table_recovers_every_verdict_from_the_changelog() -> None:
    first = table()
    for n in range(30):
        first.remember(n % 4, f"r{n}".encode(), f"verdict {n}".encode())
        if n % 7 == 0:
            first.save()
    first.save()
    second = table()
    second.apply_changelog_batch(as_events(first.sent))
    assert {f"r{n}": second.verdict(f"r{n}".encode()) for n in range(30)} == {
        f"r{n}": f"verdict {n}".encode() for n in range(30)
    }
    assert second.batches.keys() == first.batches.keys()


def test_entries_of_earlier_versions_one_per_message_are_read_and_forgotten() -> None:
    older = table()
    older.remember(2, b"old", b"old verdict")  # the value as earlier versions wrote it
    legacy = [(2, b"old", older.data[b"old"])]
    sent = table()
    sent.apply_changelog_batch(as_events(legacy))
    assert sent.verdict(b"old") == b"old verdict"
    sent.forget(time.time() + 1)
    assert sent.sent == [(2, b"old", None)]  # the tombstone goes to the old key
    assert sent.verdict(b"old") is None


# -- forgetting ----------------------------------------------------------------------


def test_forget_tombstones_old_batches_and_keeps_newer_ones() -> None:
    sent = table()
    sent.remember(0, b"old", b"v1")
    sent.save()
    time.sleep(0.01)
    sent.remember(0, b"new", b"v2")
    sent.save()
    [(old_key, _), (new_key, new_at)] = [(k, at) for k, (_, at, _) in sent.batches.items()]
    sent.forget(new_at)  # strictly older than the second batch
    assert sent.sent[-1] == (0, old_key, None)
    assert sent.verdict(b"old") is None
    assert sent.verdict(b"new") == b"v2"
    assert list(sent.batches) == [new_key]


def test_a_verdict_replaced_later_outlives_the_tombstone_of_its_first_batch() -> None:
    """A request id reused for another address: its newer verdict stays."""
    sent = table()
    sent.remember(1, b"id", b"first")
    sent.save()
    time.sleep(0.01)
    sent.remember(1, b"id", b"second")
    sent.save()
    first_key, second_key = list(sent.batches)
    second_at = sent.batches[second_key][1]
    sent.forget(second_at)
    assert sent.verdict(b"id") == b"second"
    # A standby applying the same tombstone agrees.
    standby = table()
    standby.apply_changelog_batch(as_events(sent.sent))
    assert standby.verdict(b"id") == b"second"
    assert first_key not in standby.batches


def test_a_long_request_id_is_saved_and_recovered() -> None:
    """Keys past 64 KiB (the id is the caller's text) pack and unpack like any other."""
    sent = table()
    key = b"k" * 70_000
    sent.remember(0, key, b"verdict")
    sent.save()
    again = table()
    again.apply_changelog_batch(as_events(sent.sent))
    assert again.verdict(key) == b"verdict"


def test_a_standby_forgets_every_trace_of_a_tombstoned_batch() -> None:
    """Entries, batches and the memory store's key → partition map: nothing grows."""
    sent = table()
    for n in range(50):
        sent.remember(1, f"r{n}".encode(), b"v")
    sent.save()
    sent.forget(time.time() + 1)
    standby = table()
    standby.apply_changelog_batch(as_events(sent.sent))
    assert (len(standby.data), len(standby.batches)) == (0, 0)
    assert getattr(standby.data, "_key_partition", {}) == {}
