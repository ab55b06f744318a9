"""The commands' consoles: what they print (upstream text, alert messages, database errors) is data, never Rich
markup, so `[high]` shows as written and `[/x]` cannot crash a command."""

from __future__ import annotations

from rich.console import Console
from rich.text import Text


def plain_console(*, stderr: bool = False) -> Console:
    return Console(stderr=stderr, markup=False, highlight=False)


def print_error(console: Console, message: object, *, label: str = "error") -> None:
    """`label: message` with the label in red; never wrapped to the terminal width (it may be piped or logged)."""
    console.print(Text.assemble((f"{label}: ", "red"), str(message)), soft_wrap=True)
