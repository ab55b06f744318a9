"""Failure classification and severity (Step 2 §1-2): pure functions, no I/O."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from .errors import LockConflict, UpstreamError


class ErrorGroup(enum.StrEnum):
    LOCK_CONFLICT = "LOCK_CONFLICT"
    HTTP_409 = "HTTP_409"
    HTTP_5XX = "HTTP_5XX"
    HTTP_4XX = "HTTP_4XX"
    TIMEOUT = "TIMEOUT"
    UNKNOWN = "UNKNOWN"


class Severity(enum.StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"


SEVERITY_BY_GROUP: dict[ErrorGroup, Severity] = {
    ErrorGroup.HTTP_5XX: Severity.HIGH,
    ErrorGroup.TIMEOUT: Severity.HIGH,
    ErrorGroup.HTTP_409: Severity.MEDIUM,
    ErrorGroup.HTTP_4XX: Severity.MEDIUM,
    ErrorGroup.LOCK_CONFLICT: Severity.LOW,
    ErrorGroup.UNKNOWN: Severity.MEDIUM,
}

# What the worker answers its own caller for each group.
HTTP_STATUS_BY_GROUP: dict[ErrorGroup, int] = {
    ErrorGroup.LOCK_CONFLICT: 409,
    ErrorGroup.HTTP_409: 502,
    ErrorGroup.HTTP_5XX: 502,
    ErrorGroup.HTTP_4XX: 502,
    ErrorGroup.TIMEOUT: 504,
    ErrorGroup.UNKNOWN: 500,
}


@dataclass(frozen=True)
class Classified:
    group: ErrorGroup
    severity: Severity
    http_status_code: int | None
    message: str


def classify(status_code: int | None, message: str, *, lock_conflict: bool = False) -> ErrorGroup:
    """Step 2 §1, in its order: lock conflict, upstream 409, 5xx, other 4xx, timeout text, else unknown."""
    if lock_conflict or "job_lock active" in message:
        return ErrorGroup.LOCK_CONFLICT
    if status_code == 409:
        return ErrorGroup.HTTP_409
    if status_code is not None and 500 <= status_code <= 599:
        return ErrorGroup.HTTP_5XX
    if status_code is not None and 400 <= status_code <= 499:
        return ErrorGroup.HTTP_4XX
    lowered = message.lower()
    if "timeout" in lowered or "timed out" in lowered:
        return ErrorGroup.TIMEOUT
    return ErrorGroup.UNKNOWN


def classify_exception(exc: BaseException) -> Classified:
    """Turn anything a run can raise into its group, severity and the text run_log keeps."""
    if isinstance(exc, LockConflict):
        status, message, lock = None, str(exc), True
    elif isinstance(exc, UpstreamError):
        status, message, lock = exc.status_code, str(exc), False
    else:
        status, message, lock = None, f"{type(exc).__name__}: {exc}", False
    message = message or type(exc).__name__
    group = classify(status, message, lock_conflict=lock)
    return Classified(group, SEVERITY_BY_GROUP[group], status, message)


def ops_query_group(message: str) -> str:
    """What Step 1's query 3-3 says of an error_message (its CASE, in Python), for self-checks."""
    import re

    def like(pattern: str) -> bool:
        regex = "".join(".*" if c == "%" else "." if c == "_" else re.escape(c) for c in pattern)
        return re.fullmatch(regex, message, flags=re.IGNORECASE | re.DOTALL) is not None

    if like("% 409 %"):
        return "HTTP_409"
    if like("% 5__ %"):
        return "HTTP_5XX"
    if like("%timeout%"):
        return "TIMEOUT"
    if like("%job_lock active%"):
        return "LOCK_CONFLICT"
    return "OTHER"
