"""`enrolment-sync migrate-keys` (being built)."""

from __future__ import annotations

from typing import Annotated

import typer


def migrate_keys_command(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Report only; change nothing.")] = False,
) -> None:
    """Re-key records stored under the old termId:userId key (being built)."""
    raise typer.Exit(1)
