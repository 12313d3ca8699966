"""``mxprobe hosts``: the rows shown for the mail-host table (``host_rows``)."""

from __future__ import annotations

import json
import string
from typing import Any

import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from streams.cli.hosts import host_rows
from streams.core.host_state import HostLimits, HostState
from streams.core.politeness import Politeness

NOW = 1_700_000_000.0
DEFAULTS = HostLimits(rcpt_per_second=2.0, rcpt_burst=20, connections_per_minute=6.0)
SLOW = HostLimits(rcpt_per_second=0.25, rcpt_burst=5, connections_per_minute=2.0, max_sessions=1)
POLITENESS = Politeness(
    defaults=DEFAULTS,
    rules=(
        ("*.slow.test", SLOW, "Slow Mail"),
        ("mx.exact.test", DEFAULTS, "Exact Mail"),
    ),
)
ROW_KEYS = {
    "host",
    "provider",
    "factor",
    "rcpt_per_second",
    "connections_per_minute",
    "state",
    "paused_for_s",
    "failures",
    "throttles",
    "rcpts",
    "connections",
    "last_change",
}


def only_row(state: HostState, host: str = "mx.plain.test", now: float = NOW) -> dict[str, Any]:
    """The single row of a table holding ``host`` in ``state``."""
    rows = host_rows({host: state}, POLITENESS, now=now)
    assert len(rows) == 1
    return rows[0]


@pytest.mark.parametrize(
    ("paused_until", "now", "state", "paused_for_s"),
    [
        (0.0, NOW, "open", 0.0),  # never tripped
        (NOW + 300.0, NOW, "paused", 300.0),
        (NOW + 12.34, NOW, "paused", 12.3),  # shown to a tenth of a second
        (NOW, NOW, "open", 0.0),  # the pause ends at paused_until
        (NOW - 60.0, NOW, "open", 0.0),  # the pause is over, no trial session yet
        (NOW + 300.0, NOW + 301.0, "open", 0.0),  # the same state, read later
    ],
)
def test_paused_or_open_at_now(
    paused_until: float, now: float, state: str, paused_for_s: float
) -> None:
    """A host is paused while ``now`` is before its breaker's end, with the time left shown."""
    row = only_row(HostState(paused_until=paused_until, failures=5), now=now)
    assert (row["state"], row["paused_for_s"]) == (state, paused_for_s)


@pytest.mark.parametrize(
    ("host", "factor", "provider", "rcpt_per_second", "connections_per_minute"),
    [
        ("mx.plain.test", 1.0, None, 2.0, 6.0),
        ("mx.plain.test", 0.5, None, 1.0, 3.0),
        ("mx.plain.test", 0.05, None, 0.1, 0.3),
        ("mx1.slow.test", 1.0, "Slow Mail", 0.25, 2.0),
        ("MX1.Slow.Test", 0.5, "Slow Mail", 0.125, 1.0),
        ("mx.exact.test", 0.25, "Exact Mail", 0.5, 1.5),
        ("slow.test", 1.0, None, 2.0, 6.0),  # "*.slow.test" names hosts below slow.test only
    ],
)
def test_effective_rates_and_provider(
    host: str,
    factor: float,
    provider: str | None,
    rcpt_per_second: float,
    connections_per_minute: float,
) -> None:
    """Rates shown are the host's limits times its AIMD factor; the provider is its rule's name."""
    row = only_row(HostState(factor=factor), host=host)
    assert row["host"] == host
    assert row["provider"] == provider
    assert row["factor"] == factor
    assert row["rcpt_per_second"] == pytest.approx(rcpt_per_second)
    assert row["connections_per_minute"] == pytest.approx(connections_per_minute)


def test_packaged_provider_rates() -> None:
    """With the packaged rules, a Yahoo exchanger at half budget gets 95 RCPTs an hour."""
    rows = host_rows(
        {"mta5.am0.yahoodns.net": HostState(factor=0.5)}, Politeness.packaged(), now=NOW
    )
    assert rows[0]["provider"] == "Yahoo / AOL"
    assert rows[0]["rcpt_per_second"] * 3600 == pytest.approx(95, abs=0.01)


def test_counters_and_last_change_are_shown() -> None:
    """Failures, throttles, RCPTs, connections and the last change come from the state."""
    state = HostState(
        failures=2,
        throttles=3,
        rcpts=41,
        connections=7,
        last_change="mx.plain.test: budget cut to 50% after a throttling reply.",
    )
    row = only_row(state)
    assert (row["failures"], row["throttles"], row["rcpts"], row["connections"]) == (2, 3, 41, 7)
    assert row["last_change"] == state.last_change


def test_rows_have_the_documented_keys_and_are_json() -> None:
    """Each row has the keys `hosts --json` prints, and survives a JSON round trip."""
    rows = host_rows(
        {"mx.plain.test": HostState(), "mx1.slow.test": HostState(paused_until=NOW + 5)},
        POLITENESS,
        now=NOW,
    )
    assert [set(row) for row in rows] == [ROW_KEYS, ROW_KEYS]
    assert json.loads(json.dumps(rows)) == rows


def test_no_hosts_no_rows() -> None:
    """An empty table gives no rows."""
    assert host_rows({}, POLITENESS, now=NOW) == []


def test_rows_are_sorted_by_host() -> None:
    """Rows come in host-name order, whatever order the table gave."""
    states = {name: HostState() for name in ("mx2.b.test", "mx.a.test", "mx1.b.test", "a.test")}
    rows = host_rows(states, POLITENESS, now=NOW)
    assert [row["host"] for row in rows] == ["a.test", "mx.a.test", "mx1.b.test", "mx2.b.test"]


LABELS = st.text(alphabet=string.ascii_lowercase + string.digits, min_size=1, max_size=12)
HOSTS = LABELS.map(lambda label: f"{label}.slow.test") | LABELS.map(
    lambda label: f"mx.{label}.test"
)
STATES = st.builds(
    HostState,
    factor=st.floats(min_value=0.05, max_value=1.0),
    paused_until=st.floats(min_value=0.0, max_value=NOW + 7200),
    failures=st.integers(0, 50),
    rcpts=st.integers(0, 10**9),
)


@hypothesis_settings(max_examples=100)
@given(st.dictionaries(HOSTS, STATES, max_size=8))
def test_any_table_gives_one_sorted_row_per_host(states: dict[str, HostState]) -> None:
    """One row per host, sorted; rates are limits × factor; paused exactly while now < end."""
    rows = host_rows(states, POLITENESS, now=NOW)
    assert [row["host"] for row in rows] == sorted(states)
    for row in rows:
        state = states[row["host"]]
        limits = SLOW if row["host"].endswith(".slow.test") else DEFAULTS
        assert row["rcpt_per_second"] == pytest.approx(
            limits.rcpt_per_second * state.factor, abs=1e-6
        )
        assert row["connections_per_minute"] == pytest.approx(
            limits.connections_per_minute * state.factor, abs=1e-4
        )
        assert row["state"] == ("paused" if state.paused_until > NOW else "open")
        assert row["paused_for_s"] >= 0.0
        assert row["rcpts"] == state.rcpts
