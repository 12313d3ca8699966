"""The KRaft cluster id of the Kafka fixture (streams.apache_kafka)."""

from __future__ import annotations

import base64
import uuid

import pytest

from streams import apache_kafka


def test_a_cluster_id_never_starts_with_a_dash(monkeypatch: pytest.MonkeyPatch) -> None:
    """``kafka-storage format -t -x…`` reads a leading dash as an option and fails."""
    dashed = uuid.UUID(bytes=b"\xf8" + bytes(15))  # base64 "-A…"
    plain = uuid.UUID(bytes=b"\x10" * 16)
    drawn = iter([dashed, dashed, plain])
    monkeypatch.setattr(apache_kafka.uuid, "uuid4", lambda: next(drawn))
    cluster_id = apache_kafka._cluster_id()
    assert not cluster_id.startswith("-")
    assert base64.urlsafe_b64decode(cluster_id + "==") == plain.bytes


def test_a_cluster_id_is_a_kafka_uuid() -> None:
    cluster_id = apache_kafka._cluster_id()
    assert len(cluster_id) == 22
    assert len(base64.urlsafe_b64decode(cluster_id + "==")) == 16
