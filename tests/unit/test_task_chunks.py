"""How the pipeline splits tasks into DomainTasks / HostTasks events: by count and by size."""

from __future__ import annotations

from datetime import UTC, datetime

from streams.core.address import parse_address
from streams.core.lists import Signals
from streams.core.route import Target
from streams.pipeline.codecs import encode
from streams.pipeline.outputs import TASKS_PER_EVENT, task_chunks
from streams.pipeline.records import AddressRequest, DomainTask, DomainTasks, HostTask, HostTasks

NOW = datetime(2026, 11, 23, tzinfo=UTC)
PRODUCER_LIMIT = 1_000_000  # aiokafka's max_request_size default
SIGNALS = Signals(disposable=False, role=False, free_provider=False, did_you_mean=None)


def task(n: int, attribute_bytes: int = 0, name: str = "é") -> DomainTask:
    email = f"user{n}@example.org"
    address = parse_address(email)
    assert not isinstance(address, str)
    request = AddressRequest(
        request_id=f"id-{n}",
        email=email,
        submitted_at=NOW,
        source="test",
        attributes={"note": name * attribute_bytes} if attribute_bytes else {},
    )
    return DomainTask(request=request, address=address, signals=SIGNALS, first_seen_at=NOW)


def test_small_tasks_go_in_runs_of_the_count_limit_in_order() -> None:
    pairs = [(n, task(n)) for n in range(TASKS_PER_EVENT * 2 + 7)]
    chunks = list(task_chunks(pairs))
    assert [len(chunk) for chunk in chunks] == [TASKS_PER_EVENT, TASKS_PER_EVENT, 7]
    assert [pair for chunk in chunks for pair in chunk] == pairs


def test_big_tasks_make_events_under_the_producer_limit() -> None:
    """2 kB of non-ASCII attributes a request (4 kB in UTF-8): every event still fits."""
    pairs = [(n, task(n, attribute_bytes=2000)) for n in range(600)]
    chunks = list(task_chunks(pairs))
    assert len(chunks) > 2
    for chunk in chunks:
        tasks = tuple(t for _, t in chunk)
        assert len(encode(DomainTasks(tasks))) < PRODUCER_LIMIT
        host_tasks = tuple(
            HostTask(
                domain_task=t,
                targets=(Target("mx.example.org", "192.0.2.1"),),
                route_expires_at=NOW,
            )
            for t in tasks
        )
        assert len(encode(HostTasks(host_tasks))) < PRODUCER_LIMIT
    assert [pair for chunk in chunks for pair in chunk] == pairs


def test_a_task_over_the_size_bound_goes_alone() -> None:
    huge = (1, task(1, attribute_bytes=400_000, name="x"))
    pairs = [(0, task(0)), huge, (2, task(2))]
    assert [len(chunk) for chunk in task_chunks(pairs)] == [1, 1, 1]
