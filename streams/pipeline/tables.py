"""The pipeline's tables seen as plain mappings, and where their writes go.

Faust tables hold bytes here (values JSON-encoded by :class:`TableStore`),
so that the verifier sees ``MutableMapping[str, V]`` stores of core values
(routes, catch-all facts, host states) and knows nothing of Faust.

Every write goes to the changelog partition of the event being handled
(:data:`EVENT_PARTITION`), not to the partition of the entry's key: a table is
co-partitioned with the stream that writes it, and the key of an entry (a
domain) is not the key of that stream (a mail host). So the worker that owns
a partition of the stream also owns, and recovers, the facts it wrote.
"""

from __future__ import annotations

import contextvars
import json
from collections.abc import Callable, Iterator, MutableMapping
from typing import Any, Generic, TypeVar

from streams.core.catchall import CatchAll, CatchAllFact
from streams.core.host_state import HostState
from streams.core.mx import DnsProblem
from streams.core.route import DomainRoute, Target

__all__ = [
    "CATCH_ALL_PREFIX",
    "EVENT_PARTITION",
    "HOST_STATE_PREFIX",
    "TableStore",
    "catch_all_store",
    "host_state_store",
    "route_store",
]

V = TypeVar("V")

#: The partition of the event being handled, where table writes must go: a
#: table is co-partitioned with the stream that writes it, and the key of a
#: table entry (a domain) is not the key of that stream (a mail host).
EVENT_PARTITION: contextvars.ContextVar[int | None] = contextvars.ContextVar(
    "mxprobe_partition", default=None
)


class TableStore(MutableMapping[str, V], Generic[V]):
    """A Faust table seen as a ``MutableMapping[str, V]`` (values JSON-encoded).

    Writes go to the changelog partition of the event being handled (see
    :data:`EVENT_PARTITION`), so that the worker owning that partition of the
    stream also owns, and recovers, the facts it wrote.

    ``len()`` is cheap: the whole table when there is no prefix; with one,
    a count kept up to date by this store's own writes and taken anew only
    when the table's size changed some other way (recovery, another store
    on the same table), so that the verifier's cache-size check on every
    lookup never scans the table.
    """

    def __init__(
        self,
        table: Any,
        dump: Callable[[V], dict[str, Any]],
        load: Callable[[dict[str, Any]], V],
        *,
        prefix: str = "",
    ) -> None:
        self._table = table
        self._dump = dump
        self._load = load
        self._prefix = prefix.encode()
        self._count: int | None = None  # entries under the prefix, when last known
        self._seen_size = -1  # the table's size when _count was right

    def __getitem__(self, key: str) -> V:
        raw = self._table.data.get(self._prefix + key.encode())
        if raw is None:
            raise KeyError(key)
        return self._load(json.loads(raw))

    def __setitem__(self, key: str, value: V) -> None:
        self._write(self._prefix + key.encode(), json.dumps(self._dump(value)).encode())

    def __delitem__(self, key: str) -> None:
        stored = self._prefix + key.encode()
        if stored not in self._table.data:
            raise KeyError(key)
        self._write(stored, None)

    def _write(self, key: bytes, value: bytes | None) -> None:
        partition = EVENT_PARTITION.get()
        if partition is None:
            raise RuntimeError("A table write outside the handling of an event.")
        self._table.send_changelog(partition, key, value, value_serializer="raw")
        data = self._table.data
        known = self._count is not None and self._seen_size == len(data)
        existed = key in data
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
        if known and self._count is not None:
            self._count += (value is not None) - existed
            self._seen_size = len(data)
        else:
            self._count = None  # counted anew at the next len()

    def __iter__(self) -> Iterator[str]:
        size = len(self._prefix)
        keys = [key for key in self._table.data if key.startswith(self._prefix)]
        return (key[size:].decode() for key in keys)

    def __len__(self) -> int:
        data = self._table.data
        if not self._prefix:
            return len(data)
        if self._count is None or self._seen_size != len(data):
            self._count = sum(1 for key in data if key.startswith(self._prefix))
            self._seen_size = len(data)
        return self._count


def _route_dump(route: DomainRoute) -> dict[str, Any]:
    return {
        "targets": [[t.host, t.address] for t in route.targets],
        "problem": route.problem.value if route.problem else None,
        "expires_at": route.expires_at,
        "resolved_at": route.resolved_at,
    }


def _route_load(data: dict[str, Any]) -> DomainRoute:
    return DomainRoute(
        targets=tuple(Target(host, address) for host, address in data["targets"]),
        problem=DnsProblem(data["problem"]) if data["problem"] else None,
        expires_at=float(data["expires_at"]),
        resolved_at=float(data.get("resolved_at", 0.0)),
    )


def _fact_dump(fact: CatchAllFact) -> dict[str, Any]:
    return {"state": fact.state.value, "observed_at": fact.observed_at}


def _fact_load(data: dict[str, Any]) -> CatchAllFact:
    return CatchAllFact(CatchAll(data["state"]), float(data["observed_at"]))


def _host_state_dump(state: HostState) -> dict[str, Any]:
    return state.to_dict()


#: Keys of the ``hosts`` table: a mail host's budget, a domain's catch-all fact.
HOST_STATE_PREFIX = "host:"
CATCH_ALL_PREFIX = "catch-all:"


def route_store(table: Any) -> TableStore[DomainRoute]:
    """The ``domains`` table as ASCII domain → :class:`DomainRoute`."""
    return TableStore(table, _route_dump, _route_load)


def catch_all_store(table: Any) -> TableStore[CatchAllFact]:
    """The ``hosts`` table's catch-all facts, as ASCII domain → :class:`CatchAllFact`."""
    return TableStore(table, _fact_dump, _fact_load, prefix=CATCH_ALL_PREFIX)


def host_state_store(table: Any) -> TableStore[HostState]:
    """The ``hosts`` table's budgets and health, as mail host → :class:`HostState`."""
    return TableStore(table, _host_state_dump, HostState.from_dict, prefix=HOST_STATE_PREFIX)
