"""The docker/ files, checked statically (no Docker engine here)."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from streams.cli import cli
from streams.settings import load_settings

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = (ROOT / "docker" / "Dockerfile").read_text(encoding="utf-8")
COMPOSE = yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text(encoding="utf-8"))


def test_dockerfile_copies_only_what_exists() -> None:
    """Every path the Dockerfile copies from the build context exists in the repository."""
    sources = re.findall(r"^COPY (?!--from)(.+) \S+$", DOCKERFILE, flags=re.MULTILINE)
    assert sources
    for line in sources:
        for source in line.split():
            assert (ROOT / source).exists(), source


def test_dockerfile_runs_mxprobe_unprivileged() -> None:
    """The image's entry point is the mxprobe command, run as a non-root user."""
    assert 'ENTRYPOINT ["mxprobe"]' in DOCKERFILE
    assert re.search(r"^USER (?!root)\w+", DOCKERFILE, flags=re.MULTILINE)


def test_compose_commands_exist() -> None:
    """Each service runs an mxprobe command that exists."""
    commands = set(cli.commands)  # type: ignore[attr-defined]
    for name, service in COMPOSE["services"].items():
        if name == "kafka":
            continue
        assert service["command"][0] in commands, name


def test_compose_environment_is_valid_settings() -> None:
    """The services' MXPROBE_* environment passes mxprobe's own validation."""
    env = COMPOSE["services"]["worker"]["environment"]
    settings = load_settings(
        broker=env["MXPROBE_BROKER"],
        partitions=int(env["MXPROBE_PARTITIONS"]),
        replication_factor=int(env["MXPROBE_REPLICATION_FACTOR"]),
        helo=env["MXPROBE_HELO"],
        mail_from=env["MXPROBE_MAIL_FROM"],
    )
    assert settings.broker == "kafka://kafka:9092"
    kafka_env = COMPOSE["services"]["kafka"]["environment"]
    assert kafka_env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"  # mxprobe creates its topics
