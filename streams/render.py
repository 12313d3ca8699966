"""How verdicts look to people (rich tables) and programs (JSON lines)."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence

from rich.console import Console
from rich.table import Table
from rich.text import Text

from streams.core.verdict import Status, Verdict

__all__ = ["STATUS_STYLES", "stdout_console", "summary_table", "verdict_json", "verdict_table"]

STATUS_STYLES = {
    Status.DELIVERABLE: "bold green",
    Status.UNDELIVERABLE: "bold red",
    Status.RISKY: "bold yellow",
    Status.UNKNOWN: "bold blue",
}


def stdout_console() -> Console:
    """A console for results on stdout; wide when piped, so addresses are not folded."""
    console = Console()
    return console if console.is_terminal else Console(width=200)


def verdict_json(verdict: Verdict) -> str:
    """One verdict as a single line of JSON (UTF-8, not escaped)."""
    return json.dumps(verdict.to_dict(), ensure_ascii=False, sort_keys=False)


def flag_text(verdict: Verdict) -> str:
    """The set flags of a verdict, comma-separated."""
    flags = verdict.flags
    names = [
        name
        for name, value in (
            ("disposable", flags.disposable),
            ("role", flags.role),
            ("free", flags.free_provider),
            ("accept_all", flags.accept_all),
        )
        if value
    ]
    return ",".join(names)


def evidence_text(verdict: Verdict) -> str:
    """The deciding evidence in a few words: host and reply, or the DNS fact."""
    evidence = verdict.evidence
    if evidence.syntax:
        return f"syntax: {evidence.syntax}"
    if evidence.dns:
        return f"dns: {evidence.dns}"
    parts = [evidence.mail_host or "-"]
    if evidence.reply_code is not None:
        parts.append(str(evidence.reply_code))
        if evidence.enhanced_status:
            parts.append(evidence.enhanced_status)
    return " ".join(parts)


def verdict_table(verdicts: Iterable[Verdict], *, title: str | None = None) -> Table:
    """A table of verdicts: address, status, reason, confidence, flags, evidence."""
    table = Table(title=title, show_lines=False, header_style="bold")
    table.add_column("address", overflow="fold")
    table.add_column("status")
    table.add_column("reason")
    table.add_column("conf", justify="right")
    table.add_column("flags")
    table.add_column("evidence", overflow="fold")
    for verdict in verdicts:
        # Addresses and host names are data, never rich markup: Text() keeps
        # "[bold]x@y" from restyling a row or "[/]" from crashing the table.
        address = Text(verdict.email)
        if verdict.did_you_mean:
            address.append(f"\n(did you mean {verdict.did_you_mean}?)")
        table.add_row(
            address,
            Text(verdict.status.value, style=STATUS_STYLES[verdict.status]),
            verdict.reason.value,
            f"{verdict.confidence:.2f}",
            flag_text(verdict),
            Text(evidence_text(verdict)),
        )
    return table


def summary_table(verdicts: Sequence[Verdict]) -> Table:
    """Counts by status and reason."""
    counts = Counter((v.status, v.reason) for v in verdicts)
    table = Table(title=f"{len(verdicts)} addresses", header_style="bold")
    table.add_column("status")
    table.add_column("reason")
    table.add_column("count", justify="right")
    for (status, reason), count in sorted(counts.items(), key=lambda item: (-item[1], item[0])):
        table.add_row(Text(status.value, style=STATUS_STYLES[status]), reason.value, str(count))
    return table
