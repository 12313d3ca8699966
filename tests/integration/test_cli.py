"""`mxprobe check` and `mxprobe sandbox` as a user runs them (subprocesses)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import SandboxThread, mxprobe

from streams.sandbox import load_world

pytestmark = pytest.mark.integration

WORLD = load_world()
# The greylisting domain answers 450 on a first try; `check` makes one try.
FIRST_TRY = {e.address: f"{e.status}/{e.reason}" for e in WORLD.expectations}


@pytest.fixture(scope="module")
def world_sb() -> Iterator[SandboxThread]:
    with SandboxThread(WORLD) as sb:
        yield sb


def test_check_json_gives_every_expected_verdict(world_sb: SandboxThread) -> None:
    """`check --json` over every sandbox address prints the expected verdicts (first try)."""
    addresses = list(FIRST_TRY)
    result = mxprobe(
        "check", "--json", "--disposable-domain", "throwaway.test", *addresses, env=world_sb.env()
    )
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["email"] for line in lines] == addresses
    got = {line["email"]: f"{line['status']}/{line['reason']}" for line in lines}
    assert got == FIRST_TRY
    for line in lines:
        assert set(line) >= {"email", "status", "reason", "flags", "confidence", "evidence"}
        assert 0.0 <= line["confidence"] <= 1.0


def test_check_options_on_the_command_line(world_sb: SandboxThread) -> None:
    """The probe settings work as options, with no MXPROBE_* variable set."""
    sb = world_sb.sandbox
    options = [
        *("--dns-server", sb.dns_server, "--smtp-port", str(sb.smtp_port)),
        *("--allow-private-mx", "--allow-tld", "test", "--helo", "probe.mxprobe.test"),
        *("--mail-from", "probe@mxprobe.test", "--timeout", "1", "--concurrency", "4"),
        *("--disposable-domain", "throwaway.test"),
    ]
    addresses = [
        "alice@nullsender.test",
        "nobody@strict.test",
        "alice@tarpit.test",
        "alice@throwaway.test",
    ]
    started = time.monotonic()
    result = mxprobe("check", "--json", *options, *addresses)
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    got = [f"{v['status']}/{v['reason']}" for v in map(json.loads, result.stdout.splitlines())]
    assert got == [
        "deliverable/accepted",  # --mail-from reached the null-sender-refusing host
        "undeliverable/mailbox_not_found",
        "unknown/timeout",  # --timeout 1 against a 30 s banner
        "risky/disposable",  # --disposable-domain
    ]
    assert elapsed < 15, f"--timeout 1 should end the tarpit quickly, took {elapsed:.0f} s"


def test_table_shows_addresses_as_text_not_markup(world_sb: SandboxThread) -> None:
    """Rich markup inside an address is printed as is, and cannot crash the table."""
    result = mxprobe(
        "check",
        "[bold red]alice@strict.test",
        "x[/x]@strict.test",
        "[/]@a.test",
        env=world_sb.env(),
    )
    assert result.returncode == 0, result.stderr
    assert "[bold red]alice@strict.test" in result.stdout
    assert "x[/x]@strict.test" in result.stdout


def test_check_reads_a_file_and_prints_a_table(world_sb: SandboxThread, tmp_path: Path) -> None:
    """--file reads one address per line (comments skipped); the table names each address."""
    path = tmp_path / "list.txt"
    path.write_text("# signups\nalice@strict.test\n\nnobody@strict.test\n", encoding="utf-8")
    result = mxprobe("check", "--file", str(path), env=world_sb.env())
    assert result.returncode == 0, result.stderr
    assert "alice@strict.test" in result.stdout and "nobody@strict.test" in result.stdout
    assert "deliverable" in result.stdout and "mailbox_not_found" in result.stdout
    assert "2 addresses" in result.stdout  # the summary


def test_check_reads_stdin(world_sb: SandboxThread) -> None:
    """--file - reads standard input."""
    result = mxprobe(
        "check", "--json", "--file", "-", env=world_sb.env(), stdin="anyone@catchall.test\n"
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["reason"] == "accept_all"


@pytest.mark.parametrize(
    ("args", "env", "words"),
    [
        (["check"], {}, "No addresses given"),
        (["check", "--smtp-port", "70000", "a@b.com"], {}, "--smtp-port"),
        (["check", "--timeout", "0", "a@b.com"], {}, "--timeout"),
        (["check", "--dns-server", "dns.example", "a@b.com"], {}, "not an IP address"),
        (["check", "--allow-tld", "local", "a@b.com"], {}, "cannot be allowed"),
        (["check", "--mail-from", "not-an-address", "a@b.com"], {}, "--mail-from"),
        (["check", "--mail-from", "prøbe@example.com", "a@b.com"], {}, "ASCII"),
        (["check", "--helo", "a b", "a@b.com"], {}, "--helo"),
        (["check", "--helo", "x\r\nRSET", "a@b.com"], {}, "--helo"),
        (["check", "--source-address", "foo", "a@b.com"], {}, "--source-address"),
        (["check", "--source-address", "192.0.2.1", "a@b.com"], {}, "not an address of this"),
        (["check", "a@b.com"], {"MXPROBE_SMTP_PORT": "many"}, "MXPROBE_SMTP_PORT"),
        (["check", "--file", "/nonexistent/list.txt"], {}, "cannot read /nonexistent/list.txt"),
        (["sandbox", "--world", "/nonexistent/world.toml"], {}, "world.toml"),
    ],
)
def test_usage_errors_are_one_sentence(args: list[str], env: dict[str, str], words: str) -> None:
    """A usage or configuration error names the problem, exits 2, and shows no traceback."""
    result = mxprobe(*args, env=env)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert words in result.stderr
    assert "Traceback" not in result.stderr


def test_sandbox_demo_matches_every_expectation() -> None:
    """`mxprobe sandbox --demo` on free ports verifies the world and exits 0."""
    result = mxprobe(
        "sandbox", "--demo", "--dns-port", "0", "--smtp-port", "0", "--timeout", "2", timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(WORLD.expectations)} of {len(WORLD.expectations)} verdicts as expected" in (
        result.stdout
    )


def test_sandbox_serves_until_interrupted() -> None:
    """`mxprobe sandbox` prints its addresses and the check command, then serves."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("MXPROBE_")}
    process = subprocess.Popen(
        [sys.executable, "-m", "streams", "sandbox", "--dns-port", "0", "--smtp-port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=base,
    )
    try:
        assert process.stdout is not None
        seen = ""
        for line in process.stdout:
            seen += line
            if "Press Ctrl-C" in line:
                break
        assert "alice@strict.test" in seen and "mxprobe check --dns-server" in seen
    finally:
        process.send_signal(2)  # SIGINT, as Ctrl-C
        _, stderr = process.communicate(timeout=20)
    assert "Traceback" not in stderr
