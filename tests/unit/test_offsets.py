"""The commit point: never past an event still in flight (streams.pipeline.offsets)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator

import faust
import pytest
from faust.types import TP
from faust.types.tuples import ConsumerMessage
from hypothesis import given
from hypothesis import strategies as st

from streams.pipeline.offsets import InFlight, KafkaApp, SafeOffsetsConsumer

TP0 = TP("t", 0)
TP1 = TP("t", 1)


def test_nothing_read_commits_nothing() -> None:
    assert InFlight().commit_point(TP0) is None


@pytest.mark.parametrize(
    ("read", "done", "point"),
    [
        ([0, 1, 2], [0, 1, 2], 3),
        ([0, 1, 2], [], 0),
        ([0, 1, 2, 3, 4], [3, 4], 0),  # Faust committed 5 here: 0-2 lost on a crash
        ([10, 11, 12], [11, 12], 10),  # Faust committed 13 after a commit at 10
        ([10, 11, 12], [10, 12], 11),
        ([5, 9, 20], [5, 9, 20], 21),  # offsets never delivered (markers) need no gap
        ([5, 9, 20], [5, 20], 9),
    ],
)
def test_the_commit_point_is_the_first_offset_in_flight(
    read: list[int], done: list[int], point: int
) -> None:
    in_flight = InFlight()
    for offset in read:
        in_flight.read(TP0, offset, token=offset)
    for offset in done:
        in_flight.done(TP0, offset, token=offset)
    assert in_flight.commit_point(TP0) == point
    assert in_flight.in_flight(TP0) == len(read) - len(done)


def test_partitions_are_apart() -> None:
    in_flight = InFlight()
    in_flight.read(TP0, 3, token=1)
    in_flight.read(TP1, 7, token=2)
    in_flight.done(TP1, 7, token=2)
    assert (in_flight.commit_point(TP0), in_flight.commit_point(TP1)) == (3, 8)


def test_a_copy_from_before_a_revocation_does_not_finish_the_new_one() -> None:
    in_flight = InFlight()
    in_flight.read(TP0, 4, token=1)
    in_flight.forget([TP0])  # revoked; assigned again and offset 4 read again
    in_flight.read(TP0, 4, token=2)
    in_flight.done(TP0, 4, token=1)  # the old copy finishes
    assert in_flight.commit_point(TP0) == 4
    in_flight.done(TP0, 4, token=2)
    assert in_flight.commit_point(TP0) == 5


def test_a_revoked_partition_is_forgotten() -> None:
    in_flight = InFlight()
    in_flight.read(TP0, 4, token=1)
    in_flight.forget([TP0])
    in_flight.done(TP0, 4, token=1)
    assert in_flight.commit_point(TP0) is None


@given(
    gaps=st.lists(st.integers(min_value=1, max_value=3), min_size=1, max_size=60),
    order=st.randoms(use_true_random=False),
    stop_at=st.integers(min_value=0, max_value=60),
)
def test_a_commit_never_passes_an_unfinished_event(
    gaps: list[int], order: object, stop_at: int
) -> None:
    """Events read in offset order with gaps, finished in any order: at every step the
    commit point is at most the first unfinished offset, never goes back, and
    reaches one past the last offset when all are done."""
    offsets = [sum(gaps[: i + 1]) for i in range(len(gaps))]
    finishing = list(offsets)
    order.shuffle(finishing)  # type: ignore[attr-defined]
    in_flight = InFlight()
    for offset in offsets:
        in_flight.read(TP0, offset, token=offset)
    open_ = set(offsets)
    previous = in_flight.commit_point(TP0)
    assert previous == offsets[0]
    for offset in finishing[:stop_at]:
        in_flight.done(TP0, offset, token=offset)
        open_.discard(offset)
        point = in_flight.commit_point(TP0)
        assert point is not None and point >= previous
        if open_:
            assert point == min(open_)
        previous = point
    if not open_:
        assert previous == offsets[-1] + 1


def _messages(count: int, start: int = 0) -> list[ConsumerMessage]:
    return [
        ConsumerMessage("t", 0, offset, 0.0, 0, [], b"k", b"v", None, tp=TP0)
        for offset in range(start, start + count)
    ]


@pytest.fixture
def consumers() -> Iterator[Callable[[type[faust.App]], SafeOffsetsConsumer]]:
    """Consumers of apps never started (nothing connects); their event loops closed after."""
    loops: list[asyncio.AbstractEventLoop] = []

    def consumer(app_class: type[faust.App]) -> SafeOffsetsConsumer:
        app = app_class("offsets-test", broker="kafka://127.0.0.1:9")
        app.topics._acking_topics.add("t")
        made = app.consumer
        loops.extend([app.loop, made._thread.thread_loop])  # the app's, its consumer thread's
        return made  # type: ignore[return-value]

    yield consumer
    for loop in loops:
        loop.close()


@pytest.mark.parametrize("app_class", [faust.App, KafkaApp], ids=["faust", "mxprobe"])
def test_faust_commits_past_events_in_flight_and_mxprobe_does_not(
    app_class: type[faust.App], consumers: Callable[[type[faust.App]], SafeOffsetsConsumer]
) -> None:
    """The same acks in Faust's own consumer and in mxprobe's: 0-2 delivered, still
    being handled, 3-4 done. A commit at 5 loses 0-2 if the worker dies now."""
    consumer = consumers(app_class)
    messages = _messages(5)
    for message in messages:
        consumer.unacked.add(message)  # what a Faust stream does on delivery
    for message in messages[3:]:
        message.ack(consumer)
    point = consumer._new_offset(TP0)
    if app_class is KafkaApp:
        assert point == 0
        for message in messages[:3]:
            message.ack(consumer)
        assert consumer._new_offset(TP0) == 5
    else:
        assert point == 5  # the defect worked around; if Faust fixes it, this fails
