"""`mxprobe hosts` after a run, and the politeness and retry options as a user meets them."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from broker import RunningBroker
from support import SandboxThread, mxprobe

from streams.sandbox import load_world

pytestmark = pytest.mark.integration

ADDRESSES = ("alice@strict.test", "nobody@strict.test", "anyone@catchall.test")
PROBED_HOSTS = ("mx.catchall.test", "mx.strict.test")
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


@dataclass(frozen=True)
class ProbedApp:
    """A finished `mxprobe run` on the test broker: its environment and what the hosts saw."""

    env: dict[str, str]
    verdicts: list[dict[str, Any]]
    server_rcpts: dict[str, int]  # RCPTs each sandbox mail host counted


@pytest.fixture(scope="module")
def world_sb() -> Iterator[SandboxThread]:
    with SandboxThread(load_world()) as sb:
        yield sb


def app_env(sb: SandboxThread, broker: RunningBroker) -> dict[str, str]:
    """The sandbox's settings on the test broker, in topics of an app id no other test uses."""
    return sb.app_env(broker, f"h{uuid.uuid4().hex[:8]}")


@pytest.fixture(scope="module")
def probed(
    world_sb: SandboxThread, broker: RunningBroker, tmp_path_factory: pytest.TempPathFactory
) -> ProbedApp:
    """`mxprobe run --json FILE` of strict.test and catchall.test addresses, finished."""
    env = app_env(world_sb, broker)
    source = tmp_path_factory.mktemp("hosts") / "list.txt"
    source.write_text("\n".join(ADDRESSES) + "\n", encoding="utf-8")
    world_sb.call(world_sb.sandbox.reset_stats)
    result = mxprobe("run", "--json", str(source), env=env)
    assert result.returncode == 0, result.stderr
    server_rcpts = world_sb.call(
        lambda: {host: world_sb.sandbox.stats(host).rcpts for host in PROBED_HOSTS}
    )
    verdicts = [json.loads(line) for line in result.stdout.splitlines()]
    return ProbedApp(env, verdicts, server_rcpts)


def test_the_run_probed_both_hosts(probed: ProbedApp) -> None:
    """The run gave a verdict per address, so both mail hosts were probed."""
    assert {v["email"]: v["status"] for v in probed.verdicts} == {
        "alice@strict.test": "deliverable",
        "nobody@strict.test": "undeliverable",
        "anyone@catchall.test": "risky",
    }
    assert all(probed.server_rcpts[host] > 0 for host in PROBED_HOSTS)


def test_hosts_prints_the_table(probed: ProbedApp) -> None:
    """`hosts` with the run's broker and app id prints a table naming each probed host."""
    result = mxprobe("hosts", env=probed.env)
    assert result.returncode == 0, result.stderr
    assert "mail hosts" in result.stdout
    for host in PROBED_HOSTS:
        assert host in result.stdout


def test_hosts_json_one_object_per_host(probed: ProbedApp) -> None:
    """`hosts --json` prints one JSON object per host with the RCPTs the host really got."""
    result = mxprobe("hosts", "--json", "--broker", probed.env["MXPROBE_BROKER"], env=probed.env)
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [row["host"] for row in rows] == sorted(PROBED_HOSTS)
    for row in rows:
        assert set(row) == ROW_KEYS
        assert (row["state"], row["factor"], row["failures"]) == ("open", 1.0, 0)
        assert row["rcpts"] > 0
        assert row["rcpts"] == probed.server_rcpts[row["host"]]
        assert row["connections"] > 0


def test_hosts_of_another_app_id_is_empty(probed: ProbedApp) -> None:
    """Another app id has its own table: nothing probed there yet."""
    env = {**probed.env, "MXPROBE_APP_ID": f"h{uuid.uuid4().hex[:8]}"}
    table = mxprobe("hosts", env=env)
    assert table.returncode == 0, table.stderr
    assert "No mail host" in table.stdout
    as_json = mxprobe("hosts", "--json", env=env)
    assert (as_json.returncode, as_json.stdout) == (0, "")


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["hosts"], "--broker or MXPROBE_BROKER"),
        (["hosts", "--json"], "--broker or MXPROBE_BROKER"),
        (
            ["check", "--politeness-file", "/nonexistent.toml", "a@b.test"],
            "--politeness-file / MXPROBE_POLITENESS_FILE: cannot read /nonexistent.toml",
        ),
        (
            ["run", "--retry-delays", "5,1", "{list}"],
            "--retry-delays / MXPROBE_RETRY_DELAYS: The retry delays must not decrease",
        ),
        (
            ["worker", "--retry-attempts", "greyed=2"],
            "--retry-attempts / MXPROBE_RETRY_ATTEMPTS: 'greyed' is not a retry cause",
        ),
        (
            ["check", "--host-rcpt-burst", "0", "a@b.test"],
            "--host-rcpt-burst / MXPROBE_HOST_RCPT_BURST",
        ),
        (["run", "--session-idle", "-1", "{list}"], "--session-idle / MXPROBE_SESSION_IDLE"),
    ],
)
def test_option_errors_are_one_sentence(tmp_path: Path, args: list[str], words: str) -> None:
    """A bad politeness or retry option, or no broker for hosts: exit 2, one sentence."""
    source = tmp_path / "list.txt"
    source.write_text("alice@strict.test\n", encoding="utf-8")
    result = mxprobe(*(arg.format(list=source) for arg in args), env={})
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert words in result.stderr
    assert result.stderr.startswith("Error: ") and result.stderr.count("\n") == 1
    assert "Traceback" not in result.stderr


def test_infinite_retry_max_age_is_a_usage_error(tmp_path: Path) -> None:
    """`run --retry-max-age inf` is refused as a setting (exit 2), before any broker starts."""
    source = tmp_path / "list.txt"
    source.write_text("alice@strict.test\n", encoding="utf-8")
    result = mxprobe("run", "--retry-max-age", "inf", str(source), env={})
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "--retry-max-age / MXPROBE_RETRY_MAX_AGE" in result.stderr


@pytest.mark.parametrize(
    ("command", "options"),
    [
        (
            "check",
            [
                "--host-rcpt-per-second",
                "--host-rcpt-burst",
                "--host-connections-per-minute",
                "--host-max-sessions",
                "--politeness-file",
            ],
        ),
        ("worker", ["--retry-delays", "--retry-attempts", "--retry-max-age", "--session-idle"]),
        ("worker", ["--host-rcpt-per-second", "--politeness-file"]),
        ("run", ["--retry-delays", "--session-idle", "--host-max-sessions"]),
        ("sandbox", ["--host-rcpt-per-second", "--politeness-file"]),
        ("hosts", ["--broker", "--json"]),
    ],
)
def test_help_lists_the_options(command: str, options: list[str]) -> None:
    """Each command's --help lists its politeness and retry options."""
    result = mxprobe(command, "--help", env={})
    assert result.returncode == 0, result.stderr
    for option in options:
        assert option in result.stdout
