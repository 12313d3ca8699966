"""The Verifier against the sandbox mail world: real DNS and SMTP servers on loopback."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Iterator
from typing import Any

import pytest
from support import SandboxThread

from streams.adapters.resolver import Resolver
from streams.adapters.smtp_probe import SmtpProber
from streams.assembly import build_verifier
from streams.core.verdict import Status, Verdict
from streams.packaged_lists import packaged_lists
from streams.sandbox import World, load_world
from streams.verifier import Verifier

pytestmark = pytest.mark.integration

DEFAULT = load_world()


def verdict_of(verdict: Verdict) -> str:
    return f"{verdict.status.value}/{verdict.reason.value}"


def small_world(*hosts: dict[str, Any], domains: list[dict[str, Any]]) -> World:
    """A world with the given hosts and domains in zone test."""
    return World.from_dict({"hosts": list(hosts), "domains": domains})


async def verify(sb: SandboxThread, emails: list[str], **overrides: Any) -> list[Verdict]:
    verifier = build_verifier(
        sb.settings(**overrides), extra_disposable=sb.sandbox.world.disposable
    )
    try:
        return await verifier.verify_many(emails)
    finally:
        await verifier.aclose()  # QUIT the sessions kept idle for a next batch


@pytest.fixture(scope="module")
def world_sb() -> Iterator[SandboxThread]:
    with SandboxThread(DEFAULT) as sb:
        yield sb


@pytest.fixture(scope="module")
def default_verdicts(world_sb: SandboxThread) -> dict[str, Verdict]:
    """Every address of the default world, verified in one batch (2 s timeouts)."""
    emails = [e.address for e in DEFAULT.expectations]
    verdicts = asyncio.run(verify(world_sb, emails))
    return {v.email: v for v in verdicts}


@pytest.mark.parametrize("expectation", DEFAULT.expectations, ids=lambda e: e.address)
def test_default_world_verdict(default_verdicts: dict[str, Verdict], expectation: Any) -> None:
    """Each sandbox behaviour gives the verdict the world expects."""
    verdict = default_verdicts[expectation.address]
    assert verdict_of(verdict) == f"{expectation.status}/{expectation.reason}", verdict.detail


def test_default_world_covers_every_behaviour() -> None:
    """The default world demonstrates every behaviour the issue names."""
    behaviours = {h.behaviour.value for h in DEFAULT.hosts}
    assert behaviours >= {
        "strict",
        "catch_all",
        "greylist",
        "rate_limit",
        "tarpit",
        "policy_block",
        "null_sender_refused",
        "cannot_verify",
        "disconnect_after_rcpt",
        "multiline",
        "down",
    }


def test_role_and_disposable_flags(default_verdicts: dict[str, Verdict]) -> None:
    """info@ is flagged as a role account; the world's disposable domain is flagged."""
    assert default_verdicts["info@strict.test"].flags.role
    assert not default_verdicts["alice@strict.test"].flags.role
    assert default_verdicts["alice@throwaway.test"].flags.disposable


def test_evidence_names_host_and_reply(default_verdicts: dict[str, Verdict]) -> None:
    """A mailbox verdict carries the mail host, reply code and enhanced status."""
    evidence = default_verdicts["nobody@strict.test"].evidence
    assert evidence.mail_host == "mx.strict.test"
    assert evidence.mail_host_address == "127.0.53.10"
    assert (evidence.reply_code, evidence.enhanced_status) == (550, "5.1.1")
    assert evidence.catch_all == "rejects_unknown"


def test_failover_uses_the_secondary(default_verdicts: dict[str, Verdict]) -> None:
    """With the primary MX down, the answer comes from the secondary."""
    assert default_verdicts["alice@failover.test"].evidence.mail_host == "mx2.failover.test"


def test_catch_all_confidence_lower_than_strict(default_verdicts: dict[str, Verdict]) -> None:
    """An accept-all domain's yes is worth less than a strict host's."""
    assert (
        default_verdicts["anyone@catchall.test"].confidence
        < default_verdicts["alice@strict.test"].confidence
    )


async def test_private_mx_refused_by_default(world_sb: SandboxThread) -> None:
    """Without --allow-private-mx, loopback mail hosts are never probed."""
    world_sb.call(lambda: world_sb.sandbox.stats("mx.strict.test").reset())
    [verdict] = await verify(world_sb, ["alice@strict.test"], allow_private_mx=False)
    assert verdict_of(verdict) == "unknown/private_mx"
    assert world_sb.call(lambda: world_sb.sandbox.stats("mx.strict.test").connections) == 0


async def test_special_use_tld_refused_unless_allowed(world_sb: SandboxThread) -> None:
    """.test addresses are invalid syntax unless the TLD is allowed."""
    [verdict] = await verify(world_sb, ["alice@strict.test"], allow_tld=(), mail_from=None)
    assert verdict_of(verdict) == "undeliverable/invalid_syntax"
    assert verdict.evidence.syntax == "special_use_domain"


async def test_one_session_many_recipients_with_rset(world_sb: SandboxThread) -> None:
    """Recipients of one host share a session; transactions are separated by RSET."""
    sandbox = world_sb.sandbox
    world_sb.call(lambda: sandbox.stats("mx.strict.test").reset())
    emails = [
        "alice@strict.test",
        "bob@strict.test",
        "info@strict.test",
        "x1@strict.test",
        "x2@strict.test",
    ]
    verdicts = await verify(world_sb, emails, max_rcpt_per_transaction=2)
    assert [v.status for v in verdicts] == [Status.DELIVERABLE] * 3 + [Status.UNDELIVERABLE] * 2
    stats = world_sb.call(lambda: sandbox.stats("mx.strict.test"))
    assert stats.sessions == 1
    assert stats.rcpts == 6  # five addresses and one random catch-all probe
    assert stats.rset == 2  # three transactions of at most two recipients
    assert stats.data_commands == 0


async def test_catch_all_probe_once_per_domain(world_sb: SandboxThread) -> None:
    """One verifier probes a domain's catch-all state once, then reuses it while fresh."""
    sandbox = world_sb.sandbox
    world_sb.call(lambda: sandbox.stats("mx.catchall.test").reset())
    verifier = build_verifier(world_sb.settings())
    first = await verifier.verify_many(["a@catchall.test", "b@catchall.test"])
    second = await verifier.verify_many(["c@catchall.test"])
    await verifier.aclose()
    assert {verdict_of(v) for v in first + second} == {"risky/accept_all"}
    assert world_sb.call(lambda: sandbox.stats("mx.catchall.test").rcpts) == 4  # 3 + 1 probe


async def test_null_sender_refused_without_mail_from(world_sb: SandboxThread) -> None:
    """A host refusing <> gives unknown/null_sender_refused when no probe sender is set."""
    sandbox = world_sb.sandbox
    world_sb.call(lambda: sandbox.stats("mx.nullsender.test").reset())
    [verdict] = await verify(world_sb, ["alice@nullsender.test"], mail_from=None)
    assert verdict_of(verdict) == "unknown/null_sender_refused"
    assert verdict.evidence.phase == "mail"


async def test_null_sender_falls_back_to_mail_from(world_sb: SandboxThread) -> None:
    """With --mail-from, a host refusing <> is asked again with the probe sender."""
    sandbox = world_sb.sandbox
    world_sb.call(lambda: sandbox.stats("mx.nullsender.test").reset())
    [verdict] = await verify(world_sb, ["alice@nullsender.test"])
    assert verdict_of(verdict) == "deliverable/accepted"
    senders = world_sb.call(lambda: list(sandbox.stats("mx.nullsender.test").mail_from))
    assert senders[:2] == ["", "probe@mxprobe.test"]


async def test_source_address_binding(world_sb: SandboxThread) -> None:
    """--source-address makes connections come from that local address."""
    sandbox = world_sb.sandbox
    world_sb.call(lambda: sandbox.stats("mx.strict.test").reset())
    [verdict] = await verify(world_sb, ["alice@strict.test"], source_address="127.0.0.77")
    assert verdict.status is Status.DELIVERABLE
    assert world_sb.call(lambda: set(sandbox.stats("mx.strict.test").client_ips)) == {"127.0.0.77"}


@pytest.mark.parametrize(("starttls", "upgrades"), [(False, 0), (True, 1)])
async def test_starttls_only_by_setting(
    world_sb: SandboxThread, starttls: bool, upgrades: int
) -> None:
    """STARTTLS is used only when enabled, and works with a self-signed certificate."""
    sandbox = world_sb.sandbox
    world_sb.call(lambda: sandbox.stats("mx.tls.test").reset())
    [verdict] = await verify(world_sb, ["alice@tls.test"], starttls=starttls)
    assert verdict_of(verdict) == "deliverable/accepted"
    assert world_sb.call(lambda: sandbox.stats("mx.tls.test").tls_sessions) == upgrades


async def test_tarpit_times_out_per_phase(world_sb: SandboxThread) -> None:
    """A banner slower than the timeout ends in unknown/timeout after about one timeout."""
    started = time.monotonic()
    [verdict] = await verify(world_sb, ["alice@tarpit.test"], timeout=1.0)
    elapsed = time.monotonic() - started
    assert verdict_of(verdict) == "unknown/timeout"
    assert elapsed < 5.0, f"took {elapsed:.1f} s with a 1 s timeout"


async def test_smtputf8_local_part(world_sb: SandboxThread) -> None:
    """An unknown internationalised local part is sent with SMTPUTF8 and refused."""
    [verdict] = await verify(world_sb, ["josé@strict.test"])
    assert verdict_of(verdict) == "undeliverable/mailbox_not_found"
    assert verdict.evidence.reply_code == 550


async def test_smtputf8_known_user_is_accepted() -> None:
    """A known UTF-8 mailbox is accepted, which proves the local part reached the host intact."""
    world = small_world(
        {"name": "mx.utf.test", "address": "127.0.54.17", "behaviour": "strict"},
        domains=[
            {
                "name": "utf.test",
                "users": ["josé"],
                "mx": [{"preference": 10, "host": "mx.utf.test"}],
            }
        ],
    )
    with SandboxThread(world) as sb:
        known, unknown = await verify(sb, ["josé@utf.test", "jose@utf.test"])
        assert verdict_of(known) == "deliverable/accepted"
        assert known.ascii_email is None and known.normalized == "josé@utf.test"
        assert verdict_of(unknown) == "undeliverable/mailbox_not_found"


async def test_duplicates_and_invalid_input_in_one_batch(world_sb: SandboxThread) -> None:
    """Every input gets a verdict in input order, duplicates included."""
    emails = ["alice@strict.test", "not an address", "alice@strict.test", "a\r\nb@strict.test"]
    verdicts = await verify(world_sb, emails)
    assert [v.email for v in verdicts] == emails
    assert [verdict_of(v) for v in verdicts] == [
        "deliverable/accepted",
        "undeliverable/invalid_syntax",
        "deliverable/accepted",
        "undeliverable/invalid_syntax",
    ]


async def test_greylisting_resolved_by_a_later_retry() -> None:
    """Greylisted first; after the delay the same verifier gets the real answers."""
    world = small_world(
        {
            "name": "mx.grey.test",
            "address": "127.0.54.10",
            "behaviour": "greylist",
            "greylist_delay": 1.0,
        },
        domains=[
            {
                "name": "grey.test",
                "mx": [{"preference": 10, "host": "mx.grey.test"}],
                "users": ["alice"],
            }
        ],
    )
    with SandboxThread(world) as sb:
        verifier = build_verifier(sb.settings())
        first = await verifier.verify_many(["alice@grey.test", "nobody@grey.test"])
        assert [verdict_of(v) for v in first] == ["unknown/greylisted"] * 2
        await asyncio.sleep(1.2)
        second = await verifier.verify_many(["alice@grey.test", "nobody@grey.test"])
        await verifier.aclose()
        assert [verdict_of(v) for v in second] == [
            "deliverable/accepted",
            "undeliverable/mailbox_not_found",
        ]


async def test_rate_limit_421_mid_session() -> None:
    """A host that throttles after N recipients: the rest are unknown/throttled, not bad."""
    world = small_world(
        {
            "name": "mx.rl.test",
            "address": "127.0.54.11",
            "behaviour": "rate_limit",
            "max_rcpt": 3,
            "window": 60.0,
        },
        domains=[
            {
                "name": "rl.test",
                "mx": [{"preference": 10, "host": "mx.rl.test"}],
                "users": ["u1", "u2", "u3", "u4", "u5"],
            }
        ],
    )
    with SandboxThread(world) as sb:
        emails = [f"u{i}@rl.test" for i in range(1, 6)]
        verdicts = await verify(sb, emails)
        assert [verdict_of(v) for v in verdicts] == ["deliverable/accepted"] * 3 + [
            "unknown/throttled"
        ] * 2
        stats = sb.call(lambda: sb.sandbox.stats("mx.rl.test"))
        assert stats.rcpts == 4 and stats.sessions == 1  # no reconnect after the 421


def throttling_primary_world(**limit: int) -> World:
    """busy.test: a rate-limiting primary MX (``limit``) and a strict secondary."""
    primary = {"name": "mx1.busy.test", "address": "127.0.54.12", "behaviour": "rate_limit"}
    mx = [{"preference": 10, "host": "mx1.busy.test"}, {"preference": 20, "host": "mx2.busy.test"}]
    return small_world(
        {**primary, **limit, "window": 60.0},
        {"name": "mx2.busy.test", "address": "127.0.54.13", "behaviour": "strict"},
        domains=[{"name": "busy.test", "users": ["alice"], "mx": mx}],
    )


@pytest.mark.parametrize(
    "limit",
    [{"max_connections": 0}, {"max_rcpt": 0}],
    ids=["421 greeting", "421 at the first RCPT"],
)
async def test_421_before_any_answer_fails_over_to_next_mx(limit: dict[str, int]) -> None:
    """A primary that throttles before answering anyone hands over to the secondary."""
    with SandboxThread(throttling_primary_world(**limit)) as sb:
        [verdict] = await verify(sb, ["alice@busy.test"])
        assert verdict_of(verdict) == "deliverable/accepted"
        assert verdict.evidence.mail_host == "mx2.busy.test"
        assert verdict.evidence.attempts == 2  # the throttling primary, then the secondary
        assert sb.call(lambda: sb.sandbox.stats("mx1.busy.test").connections) == 1


async def test_dns_timeout_is_unknown() -> None:
    """A name server that never answers gives unknown/timeout within the lifetime."""
    world = small_world(domains=[{"name": "silent.test", "drop": True}])
    with SandboxThread(world) as sb:
        started = time.monotonic()
        [verdict] = await verify(sb, ["alice@silent.test"], timeout=1.0)
        assert verdict_of(verdict) == "unknown/timeout"
        assert verdict.evidence.dns == "timeout"
        assert time.monotonic() - started < 5.0


async def test_disconnect_after_rcpt_reconnects() -> None:
    """A host that drops every session after one RCPT still answers every recipient."""
    world = small_world(
        {"name": "mx.drop.test", "address": "127.0.54.14", "behaviour": "disconnect_after_rcpt"},
        domains=[
            {
                "name": "drop.test",
                "mx": [{"preference": 10, "host": "mx.drop.test"}],
                "users": ["a", "b"],
            }
        ],
    )
    with SandboxThread(world) as sb:
        verdicts = await verify(sb, ["a@drop.test", "b@drop.test", "c@drop.test"])
        assert [verdict_of(v) for v in verdicts] == [
            "deliverable/accepted",
            "deliverable/accepted",
            "undeliverable/mailbox_not_found",
        ]
        assert sb.call(lambda: sb.sandbox.stats("mx.drop.test").sessions) == 4  # 3 + catch-all


async def test_idn_domain_is_probed_in_ascii_and_reported_in_both_forms() -> None:
    """An IDN domain is looked up and sent as punycode; the verdict keeps both forms."""
    world = small_world(
        {"name": "mx.idn.test", "address": "127.0.54.15", "behaviour": "strict"},
        domains=[
            {
                "name": "xn--bcher-kva.test",
                "users": ["ann"],
                "mx": [{"preference": 10, "host": "mx.idn.test"}],
            }
        ],
    )
    with SandboxThread(world) as sb:
        unicode_form, ascii_form = await verify(sb, ["ann@bücher.test", "ann@xn--bcher-kva.test"])
        for verdict in (unicode_form, ascii_form):
            assert verdict_of(verdict) == "deliverable/accepted"
            assert verdict.normalized == "ann@bücher.test"
            assert verdict.ascii_email == "ann@xn--bcher-kva.test"
        assert unicode_form.email == "ann@bücher.test"


@pytest.mark.parametrize(
    ("mail_from", "expected"),
    [
        ("probe@mxprobe.test", "deliverable/accepted"),
        (None, "unknown/null_sender_refused"),
    ],
)
async def test_null_sender_refused_at_rcpt(mail_from: str | None, expected: str) -> None:
    """A host refusing <> only at RCPT (Postfix delay_reject) is asked again with --mail-from."""
    world = small_world(
        {
            "name": "mx.late.test",
            "address": "127.0.54.16",
            "behaviour": "null_sender_refused",
            "reject_at": "rcpt",
        },
        domains=[
            {
                "name": "late.test",
                "users": ["alice"],
                "mx": [{"preference": 10, "host": "mx.late.test"}],
            }
        ],
    )
    with SandboxThread(world) as sb:
        [verdict] = await verify(sb, ["alice@late.test"], mail_from=mail_from)
        assert verdict_of(verdict) == expected
        stats = sb.call(lambda: sb.sandbox.stats("mx.late.test"))
        assert stats.sessions == 1
        assert stats.mail_from[:2] == (["", "probe@mxprobe.test"] if mail_from else [""])


async def test_reconnects_are_bounded_per_group() -> None:
    """A host that drops every session after one RCPT gets a bounded number of sessions."""
    world = small_world(
        {"name": "mx.drop.test", "address": "127.0.54.20", "behaviour": "disconnect_after_rcpt"},
        domains=[
            {
                "name": "drop.test",
                "mx": [{"preference": 10, "host": "mx.drop.test"}],
                "users": ["a"],
            }
        ],
    )
    with SandboxThread(world) as sb:
        settings = sb.settings()
        verifier = Verifier(
            Resolver(settings.resolver_config()),
            SmtpProber(settings.probe_config(default_helo="probe.mxprobe.test")),
            packaged_lists(),
            dataclasses.replace(settings.verifier_config(), max_sessions_per_group=3),
        )
        emails = [f"u{i}@drop.test" for i in range(6)]
        verdicts = await verifier.verify_many(emails)
        await verifier.aclose()
        assert [v.status for v in verdicts[:3]] == [Status.UNDELIVERABLE] * 3
        assert {verdict_of(v) for v in verdicts[3:]} == {"unknown/disconnected"}
        assert sb.call(lambda: sb.sandbox.stats("mx.drop.test").sessions) == 3
