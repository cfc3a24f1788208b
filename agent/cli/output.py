"""How the CLI prints: tables (rich), and the one error path every command shares.

:class:`CorralGroup` runs every command; an :class:`~agent.cli.client.ApiError` (what the API said,
or that it could not be reached) or a compose file the reader refuses becomes one line on stderr,
``corral: …``, and exit status 1 — never a traceback, whatever the command and wherever the error
surfaces (a streamed answer included).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from agent.cli.client import DEFAULT_URL, ApiError
from agent.model.compose import ComposeError

console = Console(highlight=False, width=None if sys.stdout.isatty() else 160)


class CommandFailed(click.ClickException):
    exit_code = 1

    def show(self, file: Any = None) -> None:
        click.echo(f"corral: {self.message}", err=True)


class CorralGroup(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ApiError as exc:
            raise CommandFailed(exc.message) from None
        except ComposeError as exc:
            raise CommandFailed(str(exc)) from None


def fail(message: str) -> CommandFailed:
    return CommandFailed(message)


def table(title: str, columns: list[str], rows: list[list[Any]]) -> None:
    out = Table(title=title)
    for col in columns:
        out.add_column(col)
    for row in rows:
        out.add_row(*[Text("-" if v is None else str(v)) for v in row])  # plain text: a reason may hold "[…]"
    console.print(out)


def url_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--host", "url", envvar="CORRAL_URL", default=DEFAULT_URL, show_default=True,
                        help="any agent's API URL (or CORRAL_URL)")(f)


__all__ = ["CommandFailed", "CorralGroup", "console", "fail", "table", "url_option"]
