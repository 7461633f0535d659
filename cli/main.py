"""Entry point: one typer app, each command in its own module.

Every failure reads the same: ``Error: <one line>`` on stderr and exit 2 for bad input,
whether a command found it or Typer did while parsing the command line.
"""

from __future__ import annotations

import sys
from importlib.metadata import PackageNotFoundError, version
from typing import Annotated, Any

import typer
from typer.core import TyperCommand, TyperGroup

from . import audit, demo, explore, export, har, merge, probe, prune, run, unpack
from .common import EXIT_BAD_INPUT, error_line

DISTRIBUTION = "redirect-auditor"
# Click's exceptions as this Typer raises them (its own vendored copy, or click itself).
_CLICK_ERRORS = sys.modules[typer.BadParameter.__module__]
ClickException: type[Exception] = _CLICK_ERRORS.ClickException
NoArgsIsHelpError: type[Exception] | None = getattr(_CLICK_ERRORS, "NoArgsIsHelpError", None)


def _without_flag_types(params: list[Any]) -> list[Any]:
    """A flag takes no value: its help shows none (no ``<bool>`` after ``--factory``)."""
    for param in params:
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""
    return params


class Command(TyperCommand):
    """A command whose usage line names its arguments as ``DB...`` / ``[URL]``."""

    def get_params(self, ctx: Any) -> list[Any]:
        return _without_flag_types(super().get_params(ctx))

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if param.param_type_name != "argument":
                continue
            name = param.metavar or (param.name or "").upper()
            if param.nargs != 1 and not name.endswith("..."):
                name += "..."
            pieces.append(name if param.required else f"[{name}]")
        return pieces


class Group(TyperGroup):
    """The root command: command-line errors in our one-line style, exit 2."""

    def get_params(self, ctx: Any) -> list[Any]:
        return _without_flag_types(super().get_params(ctx))

    def main(self, *args: Any, **kwargs: Any) -> Any:
        if not kwargs.get("standalone_mode", True):
            return super().main(*args, **kwargs)
        try:
            code = super().main(*args, **{**kwargs, "standalone_mode": False})
        except ClickException as exc:
            if NoArgsIsHelpError is not None and isinstance(exc, NoArgsIsHelpError):
                exc.show()  # type: ignore[attr-defined]  # bare `redirect-auditor`: the help
                sys.exit(EXIT_BAD_INPUT)
            ctx = getattr(exc, "ctx", None)
            where = f" (see: {ctx.command_path} --help)" if ctx is not None else ""
            error_line(" ".join(exc.format_message().split()) + where)  # type: ignore[attr-defined]
            sys.exit(EXIT_BAD_INPUT)
        except typer.Abort:
            error_line("aborted")
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


app = typer.Typer(
    name="redirect-auditor",
    cls=Group,
    help=(
        "Record an ASGI app's traffic into SQLite and audit its HTTP redirects.\n\n"
        "Start with `redirect-auditor demo` to see everything on a built-in example app.\n\n"
        "Exit codes: 0 ok, 1 findings at or above --fail-on, 2 bad input or environment."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _show_version(value: bool) -> None:
    if value:
        try:
            number = version(DISTRIBUTION)
        except PackageNotFoundError:  # pragma: no cover - a bare checkout
            number = "0+unknown"
        typer.echo(f"{DISTRIBUTION} {number}")
        raise typer.Exit()


@app.callback()
def root(
    show_version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_show_version, is_eager=True, help="Show the version and exit."
        ),
    ] = False,
) -> None:
    """Record an ASGI app's traffic into SQLite and audit its HTTP redirects."""


for name, function in (
    ("run", run.run),
    ("audit", audit.audit),
    ("explore", explore.explore),
    ("demo", demo.demo),
    ("import-har", har.import_har),
    ("probe", probe.probe),
    ("prune", prune.prune_command),
    ("merge", merge.merge_command),
    ("export", export.export_command),
    ("unpack", unpack.unpack_command),
):
    app.command(name, cls=Command)(function)


def main() -> None:
    """Console-script entry point."""
    app()
