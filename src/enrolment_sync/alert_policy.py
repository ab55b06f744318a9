"""How much a change matters (a seed rule), as a pure decision beside the alerts that carry it."""

from __future__ import annotations

from typing import Any

from .failures import Severity

BAD_STATUSES = frozenset({"CANCELLED", "FAILED"})


def change_severity(before: dict[str, Any], after: dict[str, Any]) -> Severity:
    """high: status becomes CANCELLED or FAILED; medium: another status change; low: anything else."""
    old_status, new_status = before.get("status"), after.get("status")
    if old_status != new_status:
        return Severity.HIGH if new_status in BAD_STATUSES else Severity.MEDIUM
    return Severity.LOW
