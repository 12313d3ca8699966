"""The docker/ files, checked statically (no Docker engine here)."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from streams.apache_kafka import SINGLE_NODE_SETTINGS, kafka_version
from streams.cli import cli
from streams.settings import load_settings

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = (ROOT / "docker" / "Dockerfile").read_text(encoding="utf-8")
COMPOSE = yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text(encoding="utf-8"))
KAFKA = COMPOSE["services"]["kafka"]

#: Broker settings that say where a node is (ports, host names, directory): the
#: tests' node and the compose service set them each for itself.
WHERE = {"listeners", "advertised.listeners", "controller.quorum.voters", "log.dirs"}


def env_name(setting: str) -> str:
    """The apache/kafka image's variable for a broker setting (``foo.bar`` is KAFKA_FOO_BAR)."""
    escaped = setting.replace("_", "__").replace("-", "___").replace(".", "_")
    return f"KAFKA_{escaped.upper()}"


def setting_name(variable: str) -> str:
    """The broker setting a KAFKA_* variable sets (the inverse of :func:`env_name`)."""
    name = variable.removeprefix("KAFKA_").lower()
    return re.sub(r"_{1,3}", lambda m: {1: ".", 2: "_", 3: "-"}[len(m[0])], name)


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


def test_compose_runs_the_tests_kafka_version() -> None:
    """The kafka service's image is the Apache Kafka version the tests run."""
    assert KAFKA["image"] == f"apache/kafka:{kafka_version()}"


def test_env_names_round_trip() -> None:
    """env_name follows the image's rules (``.`` ``_`` ``-`` as ``_`` ``__`` ``___``)."""
    assert env_name("group.initial.rebalance.delay.ms") == "KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS"
    assert env_name("a_b-c.d") == "KAFKA_A__B___C_D"
    for setting in [*SINGLE_NODE_SETTINGS, *WHERE, "a_b-c.d"]:
        assert setting_name(env_name(setting)) == setting


def test_compose_kafka_has_the_tests_broker_settings() -> None:
    """Every setting the tests' single node writes is set in compose, to the same value."""
    env = KAFKA["environment"]
    assert SINGLE_NODE_SETTINGS
    for setting, value in SINGLE_NODE_SETTINGS.items():
        assert env_name(setting) in env, setting
        assert str(env[env_name(setting)]) == value, setting
    for setting in WHERE:
        assert env_name(setting) in env, setting


def test_compose_kafka_sets_nothing_else_unexplained() -> None:
    """Beyond the tests' settings and its addresses, compose sets only topic auto-creation."""
    env = KAFKA["environment"]
    extra = {setting_name(v) for v in env if v.startswith("KAFKA_")}
    extra -= {*SINGLE_NODE_SETTINGS, *WHERE}
    assert extra == {"auto.create.topics.enable"}


def test_compose_kafka_addresses_fit_together() -> None:
    """The workers' broker URL is the advertised listener; the controller is where the
    quorum voters say, as the node whose id the tests' settings give."""
    env = KAFKA["environment"]
    broker = COMPOSE["services"]["worker"]["environment"]["MXPROBE_BROKER"]
    assert env["KAFKA_ADVERTISED_LISTENERS"] == broker.replace("kafka://", "PLAINTEXT://")
    node, _, controller = env["KAFKA_CONTROLLER_QUORUM_VOTERS"].partition("@")
    assert node == SINGLE_NODE_SETTINGS["node.id"]
    port = controller.rpartition(":")[2]
    assert f"CONTROLLER://:{port}" in env["KAFKA_LISTENERS"].split(",")
    assert f"PLAINTEXT://:{broker.rpartition(':')[2]}" in env["KAFKA_LISTENERS"].split(",")
    assert any(v.endswith(f":{env['KAFKA_LOG_DIRS']}") for v in KAFKA["volumes"])
