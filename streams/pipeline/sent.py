"""The ``sent`` table: verdicts already sent, to answer a re-processed event identically.

A crash between sending a verdict and committing the offset of the event it
answers makes the event come back. The worker that owns the event's partition
then finds the verdict it sent and sends the same bytes again, instead of
probing anew (a new verdict could differ: greylisting, a catch-all learnt).

Each entry is keyed by the request id and holds ``(partition, sent at)`` and
the encoded verdict. Entries are kept for :data:`SENT_TTL`.

The changelog carries **one message per batch** of verdicts, not one per
verdict. A changelog message costs a Faust worker about as much CPU as the
verdict itself (measured: a sixth of a pipeline worker's CPU went to one
changelog message per verdict). Batch keys start with byte ``0xFF``, which no
UTF-8 request id has. On recovery (and on standbys) :meth:`SentTable.apply_changelog_batch`
unpacks each batch into its entries. Once a batch is older than the TTL, a
tombstone for its key removes it from the changelog (the topic is compacted).
Per-verdict entries written by earlier versions are still read, and
forgotten the same way.

The changelog write of a batch happens after its verdicts were sent and
before the offsets of its events are committed (:meth:`SentTable.save` is
called when a handler returns, and sooner where a handler goes on waiting), so
no verdict is lost. A worker killed between a verdict and that write sends a
new verdict for the event when it comes back, not the same bytes: the window
is the time from a batch's verdicts to the end of its handling.

Exactly-once (on Kafka) leaves no such window: each verdict's entry is
written with it, in its transaction (:meth:`SentTable.save_now`).

Upgrading from a version that wrote one changelog message per verdict: stop
every worker first. A new worker reads the old entries, but an old one would
misread a batch.
"""

from __future__ import annotations

import os
import struct
import time
from collections.abc import Iterable, Iterator
from typing import Any

import faust
from faust.types import EventT

from streams.pipeline.batching import bounded_runs

__all__ = ["BATCH_BYTES", "SENT_TTL", "SentTable", "pack_batch", "unpack_batch"]

#: How long a sent verdict is kept to answer a re-processed event identically:
#: well beyond a crash, a session timeout (10 s) and a rebalance.
SENT_TTL = 120.0

#: At most this many bytes of entries in one changelog message (well under
#: the producer's 1 MiB request limit).
BATCH_BYTES = 256 * 1024

_HEADER = struct.Struct(">Hd")  # partition, sent at (epoch seconds)
_ENTRY = struct.Struct(">II")  # key length, value length
_BATCH = b"\xff"  # the first byte of a batch key; never the first of UTF-8 text
_BATCH_ID_BYTES = 12


def pack_batch(entries: Iterable[tuple[bytes, bytes]]) -> bytes:
    """The changelog value holding ``entries`` (key, value) in order."""
    return b"".join(_ENTRY.pack(len(key), len(value)) + key + value for key, value in entries)


def unpack_batch(data: bytes) -> Iterator[tuple[bytes, bytes]]:
    """The entries of a value written by :func:`pack_batch`.

    Raises:
        ValueError: ``data`` was not written by :func:`pack_batch` (truncated).
    """
    view = memoryview(data)
    offset = 0
    while offset < len(view):
        if offset + _ENTRY.size > len(view):
            raise ValueError(f"A sent-table batch is truncated at byte {offset}.")
        key_size, value_size = _ENTRY.unpack_from(view, offset)
        offset += _ENTRY.size
        end = offset + key_size + value_size
        if end > len(view):
            raise ValueError(f"A sent-table batch is truncated at byte {offset}.")
        yield bytes(view[offset : offset + key_size]), bytes(view[offset + key_size : end])
        offset = end


class SentTable(faust.Table[bytes, bytes]):
    """The ``sent`` table (bytes → bytes, memory store), written a batch at a time.

    Use :meth:`remember`, :meth:`verdict`, :meth:`save` and :meth:`forget`;
    ``data`` holds the entries by request id.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: Each changelog key written or read → (partition, sent at, its entries' keys).
        self.batches: dict[bytes, tuple[int, float, tuple[bytes, ...]]] = {}
        self._unsaved: dict[int, list[tuple[bytes, bytes]]] = {}

    def remember(self, partition: int, key: bytes, record: bytes) -> None:
        """Keep ``record``, the verdict sent for ``key``, owned by ``partition``.

        It is readable at once; it reaches the changelog at the next :meth:`save`.
        """
        value = _HEADER.pack(partition, time.time()) + record
        self.data[key] = value
        self._unsaved.setdefault(partition, []).append((key, value))

    def verdict(self, key: bytes) -> bytes | None:
        """The verdict kept for ``key``, if any."""
        value: bytes | None = self.data.get(key)
        return None if value is None else value[_HEADER.size :]

    def save(self) -> None:
        """Write what :meth:`remember` kept since the last save: a message per
        partition (and per :data:`BATCH_BYTES`)."""
        now = time.time()
        messages = [
            (partition, _BATCH + os.urandom(_BATCH_ID_BYTES), chunk)
            for partition, entries in self._unsaved.items()
            for chunk in bounded_runs(entries, _entry_size, max_bytes=BATCH_BYTES)
        ]
        packed = [pack_batch(chunk) for _, _, chunk in messages]
        self._unsaved = {}
        for (partition, batch_key, chunk), value in zip(messages, packed, strict=True):
            self.send_changelog(partition, batch_key, value)
            self.batches[batch_key] = (partition, now, tuple(key for key, _ in chunk))

    async def save_now(self, partition: int) -> None:
        """Write what :meth:`remember` kept for ``partition`` now, not from Faust's buffer.

        Exactly-once: the entry is sent by the caller's task, so that it goes in
        the same transaction as the verdict it keeps
        (:func:`streams.pipeline.exactly_once.committed_together`).
        """
        entries = self._unsaved.pop(partition, [])
        for chunk in bounded_runs(entries, _entry_size, max_bytes=BATCH_BYTES):
            batch_key = _BATCH + os.urandom(_BATCH_ID_BYTES)
            value = pack_batch(chunk)
            await self.changelog_topic.send(key=batch_key, value=value, partition=partition)
            self.batches[batch_key] = (partition, time.time(), tuple(key for key, _ in chunk))

    def forget(self, cutoff: float) -> None:
        """Drop the batches saved before ``cutoff`` (epoch seconds), with a tombstone each."""
        for batch_key, (partition, saved_at, _) in list(self.batches.items()):
            if saved_at < cutoff:
                self.send_changelog(partition, batch_key, None)
                self._drop(batch_key)

    def apply_changelog_batch(self, batch: Iterable[EventT[bytes]]) -> None:
        """Recovery and standbys: unpack each batch message into its entries."""
        for event in batch:
            message = event.message
            key = message.key
            value = message.value
            if not isinstance(key, bytes):
                continue  # not ours: every key written is bytes
            if value is None:
                self._drop(key)
            elif key.startswith(_BATCH):
                self._load(key, message.partition, unpack_batch(value))
            else:  # one entry per message, as versions before batching wrote
                self._load(key, message.partition, [(key, value)])

    def _load(
        self, batch_key: bytes, partition: int, entries: Iterable[tuple[bytes, bytes]]
    ) -> None:
        keys: list[bytes] = []
        saved_at = 0.0
        key_partition = self._key_partition()
        for key, value in entries:
            self.data[key] = value
            keys.append(key)
            saved_at = max(saved_at, _HEADER.unpack_from(value)[1])
            key_partition[key] = partition
        self.batches[batch_key] = (partition, saved_at, tuple(keys))

    def _key_partition(self) -> dict[bytes, int]:
        """The memory store's key → partition map (it drops the keys of partitions
        this worker no longer owns after a recovery); a throwaway dict elsewhere."""
        mapping = getattr(self.data, "_key_partition", None)
        return mapping if isinstance(mapping, dict) else {}

    def _drop(self, batch_key: bytes) -> None:
        """Forget a batch, and those of its entries no later batch replaced."""
        _, saved_at, keys = self.batches.pop(batch_key, (0, 0.0, ()))
        key_partition = self._key_partition()
        for key in keys:
            value = self.data.get(key)
            if value is not None and _HEADER.unpack_from(value)[1] <= saved_at:
                del self.data[key]
                key_partition.pop(key, None)


def _entry_size(entry: tuple[bytes, bytes]) -> int:
    return _ENTRY.size + len(entry[0]) + len(entry[1])
