"""Entry point: one typer app, each command in its own module."""

from __future__ import annotations

import typer

from cli import audit, demo, explore, har, merge, probe, prune, run

app = typer.Typer(
    name="redirect-auditor",
    help=(
        "Record an ASGI app's traffic into SQLite and audit its HTTP redirects.\n\n"
        "Start with `redirect-auditor demo` to see everything on a built-in example app."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("run")(run.run)
app.command("audit")(audit.audit)
app.command("explore")(explore.explore)
app.command("demo")(demo.demo)
app.command("import-har")(har.import_har)
app.command("probe")(probe.probe)
app.command("prune")(prune.prune_command)
app.command("merge")(merge.merge_command)


def main() -> None:
    """Console-script entry point."""
    app()
