"""The ``mxprobe`` command (click + rich).

Errors a user can fix (a bad option, a port in use, a missing file) are one
sentence on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import os
import sys

import click

from streams import __version__
from streams.cli.bench import bench
from streams.cli.broker import broker
from streams.cli.check import check
from streams.cli.hosts import hosts
from streams.cli.pipeline import demo, run, submit, verdicts, worker
from streams.cli.sandbox import sandbox
from streams.errors import MxprobeError

__all__ = ["cli", "main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="mxprobe")
def cli() -> None:
    """mxprobe: verify email addresses with DNS and SMTP probes (never sends mail)."""


for command in (check, run, demo, broker, worker, submit, verdicts, hosts, bench, sandbox):
    cli.add_command(command)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: run the command, turn our errors into one sentence."""
    try:
        cli.main(args=argv, prog_name="mxprobe", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except MxprobeError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        click.echo("Interrupted.", err=True)
        sys.exit(130)
    except Exception as exc:  # a bug of ours: say so in one line, traceback on request
        if os.environ.get("MXPROBE_TRACEBACK"):
            raise
        click.echo(
            f"Internal error: {type(exc).__name__}: {str(exc).rstrip('.')}. "
            "This is a bug in mxprobe; please report it with the command you ran "
            "(MXPROBE_TRACEBACK=1 shows the traceback).",
            err=True,
        )
        sys.exit(1)
