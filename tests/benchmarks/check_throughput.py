"""Benchmark: how long `mxprobe check` takes for N sandbox addresses.

Starts the default sandbox world on free ports (in a thread), writes N
addresses spread over its domains (the greylisting domain excluded, since
`check` makes one try), runs `mxprobe check --json --file` as a user would,
and prints the wall time, addresses/second and the verdicts by status/reason.

    python tests/benchmarks/check_throughput.py --addresses 1000 [--timeout 2]
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))

from support import SandboxThread

from streams.sandbox import load_world


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--addresses", type=int, default=1000)
    parser.add_argument("--timeout", type=float, default=2.0)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument(
        "--skip",
        action="append",
        default=["greylist.test"],
        help="domains to leave out (repeatable); greylist.test always",
    )
    args = parser.parse_args()

    world = load_world()
    domains = [e.address.split("@")[1] for e in world.expectations]
    domains = [d for d in dict.fromkeys(domains) if d not in args.skip]
    users = {d.name: sorted(d.users) for d in world.domains}
    emails = []
    for i in range(args.addresses):
        domain = domains[i % len(domains)]
        known = users.get(domain) or ["alice"]
        # One address in ten is a known user (repeats), the rest distinct unknown ones.
        local = known[i % len(known)] if (i // len(domains)) % 10 == 0 else f"user{i}"
        emails.append(f"{local}@{domain}")

    with SandboxThread(world) as sb, tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "addresses.txt"
        path.write_text("\n".join(emails) + "\n", encoding="utf-8")
        env = {k: v for k, v in os.environ.items() if not k.startswith("MXPROBE_")}
        env.update(sb.env())
        env.update(
            MXPROBE_TIMEOUT=str(args.timeout),
            MXPROBE_CONCURRENCY=str(args.concurrency),
            MXPROBE_DISPOSABLE_DOMAIN=",".join(world.disposable),
        )
        started = time.perf_counter()
        result = subprocess.run(
            [sys.executable, "-m", "streams", "check", "--json", "--file", str(path)],
            capture_output=True,
            text=True,
            env=env,
            check=False,
        )
        elapsed = time.perf_counter() - started
        sessions = sum(
            sb.call(lambda h=h: sb.sandbox.stats(h.name).sessions) for h in world.hosts if h.listens
        )
    if result.returncode != 0:
        sys.exit(f"mxprobe check failed: {result.stderr}")
    verdicts = [json.loads(line) for line in result.stdout.splitlines()]
    counts = collections.Counter(f"{v['status']}/{v['reason']}" for v in verdicts)
    print(f"addresses: {len(verdicts)} over {len(domains)} domains")
    print(f"wall time: {elapsed:.2f} s (process start included)")
    print(f"addresses/second: {len(verdicts) / elapsed:.0f}")
    print(f"SMTP sessions seen by the sandbox: {sessions}")
    for key, count in counts.most_common():
        print(f"  {count:5d}  {key}")


if __name__ == "__main__":
    main()
