"""Splitting what goes into one Kafka message: runs bounded by bytes and by count."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

__all__ = ["bounded_runs"]

T = TypeVar("T")


def bounded_runs(
    items: Iterable[T], size_of: Callable[[T], int], *, max_bytes: int, max_items: int = 0
) -> Iterator[list[T]]:
    """``items`` in order, in runs of at most ``max_bytes`` (by ``size_of``) and
    ``max_items`` (0: no count limit). An item over ``max_bytes`` makes a run alone."""
    run: list[T] = []
    size = 0
    for item in items:
        item_size = size_of(item)
        if run and (size + item_size > max_bytes or len(run) == max_items):
            yield run
            run, size = [], 0
        run.append(item)
        size += item_size
    if run:
        yield run
