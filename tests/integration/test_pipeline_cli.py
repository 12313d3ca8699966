"""`mxprobe run`, `submit`, `verdicts` and `worker` as a user runs them."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from broker import RunningBroker
from support import SandboxThread, mxprobe

from streams.sandbox import load_world

pytestmark = pytest.mark.integration

WORLD = load_world()
CHECK_FIELDS = {
    "email",
    "normalized",
    "ascii_email",
    "status",
    "reason",
    "flags",
    "confidence",
    "evidence",
    "did_you_mean",
    "detail",
}


@pytest.fixture(scope="module")
def world_sb() -> Iterator[SandboxThread]:
    with SandboxThread(WORLD) as sb:
        yield sb


def test_run_on_the_embedded_broker(world_sb: SandboxThread, tmp_path: Path) -> None:
    """`run FILE --json --output x.csv` starts its own broker, prints and writes every verdict."""
    source = tmp_path / "list.csv"
    source.write_text(
        "email,plan\nalice@strict.test,pro\nnobody@strict.test,free\nnot-an-address,free\n",
        encoding="utf-8",
    )
    output = tmp_path / "verdicts.csv"
    result = mxprobe("run", str(source), "--json", "--output", str(output), env=world_sb.env())
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(v["email"], v["status"]) for v in lines] == [
        ("alice@strict.test", "deliverable"),
        ("nobody@strict.test", "undeliverable"),
        ("not-an-address", "undeliverable"),
    ]
    for line in lines:
        assert set(line) >= CHECK_FIELDS | {"request_id", "verified_at", "latency_ms"}
    assert lines[0]["attributes"] == {"plan": "pro"}
    with output.open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["status"] for row in rows] == ["deliverable", "undeliverable", "undeliverable"]
    assert "evidence.reply_code" in rows[0]


def test_run_table_and_summary(world_sb: SandboxThread) -> None:
    """Without --json, run prints a table and a summary by status and reason."""
    result = mxprobe("run", "-", env=world_sb.env(), stdin="anyone@catchall.test\n")
    assert result.returncode == 0, result.stderr
    assert "anyone@catchall.test" in result.stdout and "accept_all" in result.stdout
    assert "1 addresses" in result.stdout


def test_run_format_json(world_sb: SandboxThread) -> None:
    """--format json prints one JSON verdict per line, like --json."""
    result = mxprobe(
        "run", "-", "--format", "json", env=world_sb.env(), stdin="anyone@catchall.test\n"
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["reason"] == "accept_all"


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["submit", "-"], "submit needs a running broker"),
        (["verdicts"], "verdicts needs a running broker"),
        (["run", "/nonexistent.txt"], "cannot read /nonexistent.txt"),
        (["run", "-", "--broker", "not a url"], "--broker"),
    ],
)
def test_pipeline_usage_errors(args: list[str], words: str) -> None:
    """Pipeline commands explain a missing broker or a bad argument in one sentence."""
    result = mxprobe(*args, env={}, stdin="")
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert words in result.stderr
    assert "Traceback" not in result.stderr


def test_worker_submit_verdicts(
    world_sb: SandboxThread, broker: RunningBroker, tmp_path: Path
) -> None:
    """A worker, `submit` of a JSON lines file, then `verdicts --from-beginning`."""
    app = f"c{uuid.uuid4().hex[:8]}"
    env = world_sb.app_env(broker, app)
    base = {k: v for k, v in os.environ.items() if not k.startswith("MXPROBE_")}
    worker = subprocess.Popen(
        [sys.executable, "-m", "streams", "worker"],
        env={**base, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        source = tmp_path / "list.jsonl"
        source.write_text(
            '{"email": "alice@strict.test", "request_id": "r1"}\n'
            '{"email": "nobody@strict.test", "request_id": "r2"}\n',
            encoding="utf-8",
        )
        sent = mxprobe("submit", str(source), env=env)
        assert sent.returncode == 0, sent.stderr
        assert f"sent 2 requests to {app}.addresses" in sent.stdout
        found: dict[str, str] = {}
        deadline = time.monotonic() + 90
        while len(found) < 2 and time.monotonic() < deadline:
            printed = mxprobe("verdicts", "--from-beginning", env=env)
            assert printed.returncode == 0, printed.stderr
            found = {
                v["request_id"]: v["status"] for v in map(json.loads, printed.stdout.splitlines())
            }
        assert found == {"r1": "deliverable", "r2": "undeliverable"}
    finally:
        worker.send_signal(signal.SIGINT)
        _, stderr = worker.communicate(timeout=30)
    assert "Traceback" not in stderr
