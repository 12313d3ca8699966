"""Choosing the processing guarantee, per broker."""

from __future__ import annotations

import pytest

from streams.errors import ConfigError
from streams.pipeline.exactly_once import exactly_once
from streams.settings import load_settings

NO_COORDINATOR = "the broker at 127.0.0.1:9092 has no transaction coordinator after 15 s"


@pytest.mark.parametrize(
    ("guarantee", "tansu", "transactions", "expected"),
    [
        ("auto", True, None, False),
        ("auto", False, None, False),  # not the default yet: still under test on Kafka
        ("at_least_once", True, None, False),
        ("at_least_once", False, None, False),
        ("exactly_once", False, None, True),
    ],
)
def test_the_guarantee_per_broker(
    guarantee: str, tansu: bool, transactions: str | None, expected: bool
) -> None:
    assert exactly_once(guarantee, tansu=tansu, transactions=transactions) is expected


def test_exactly_once_on_tansu_is_refused_with_a_sentence() -> None:
    with pytest.raises(ConfigError, match=r"\(Tansu\) has none"):
        exactly_once("exactly_once", tansu=True)


def test_exactly_once_without_a_coordinator_is_refused_naming_why() -> None:
    with pytest.raises(ConfigError, match="no transaction coordinator after 15 s: fix the broker"):
        exactly_once("exactly_once", tansu=False, transactions=NO_COORDINATOR)


def test_exactly_once_warns_that_it_is_under_test(caplog: pytest.LogCaptureFixture) -> None:
    assert exactly_once("exactly_once", tansu=False)
    assert [r.msg for r in caplog.records] == ["pipeline.exactly_once_under_test"]


def test_an_unknown_guarantee_names_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MXPROBE_PROCESSING_GUARANTEE", "twice")
    with pytest.raises(ConfigError, match="MXPROBE_PROCESSING_GUARANTEE"):
        load_settings()
