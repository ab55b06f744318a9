"""`enrolment-sync outbox ...` (being built)."""

import typer

outbox_app = typer.Typer(help="Outbox consumers: sheet and notifications.", no_args_is_help=True)
