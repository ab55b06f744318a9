"""Failure classification and severity (Step 2 §1-2): pure functions, no I/O."""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from .errors import EnrolmentSyncError, LockConflict, UpstreamError
from .redact import redact


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
    elif isinstance(exc, EnrolmentSyncError):  # our own texts say what happened
        status, message, lock = None, str(exc), False
    else:
        status, message, lock = None, f"{type(exc).__name__}: {exc}", False
    message = redact(message) or type(exc).__name__
    group = classify(status, message, lock_conflict=lock)
    return Classified(group, SEVERITY_BY_GROUP[group], status, fit_for_ops_query(message, group))


# Step 1's query 3-3 files a failure by its text, in this order (its CASE). Python twins of its patterns:
_OPS_PATTERNS: list[tuple[str, re.Pattern[str]]] = [
    ("HTTP_409", re.compile(r" 409 ", re.IGNORECASE)),
    ("HTTP_5XX", re.compile(r" 5.. ", re.IGNORECASE | re.DOTALL)),
    ("TIMEOUT", re.compile(r"timeout", re.IGNORECASE)),
    ("LOCK_CONFLICT", re.compile(r"job_lock active", re.IGNORECASE)),
]
_OPS_EXPECTED = {ErrorGroup.HTTP_4XX: "OTHER", ErrorGroup.UNKNOWN: "OTHER"}
NO_BREAK_SPACE = "\u00a0"


def ops_query_group(message: str) -> str:
    """What Step 1's query 3-3 says of an error_message."""
    for group, pattern in _OPS_PATTERNS:
        if pattern.search(message):
            return group
    return "OTHER"


def fit_for_ops_query(message: str, group: ErrorGroup) -> str:
    """The failure text, changed only where 3-3 would file it elsewhere than the worker did.

    A number that merely looks like a status (`run 409`, `course 512` in the upstream's own words) gets a
    no-break space after it, which reads the same but no longer matches `' 409 '` / `' 5__ '`; the word
    timeout in a failure that is not one becomes `time-out`. Our own texts avoid both, so this rarely acts.
    """
    expected = _OPS_EXPECTED.get(group, str(group))
    for name, pattern in _OPS_PATTERNS:
        if name == expected:
            break
        for _ in range(len(message)):  # matches may overlap: repeat until none is left
            found = pattern.search(message)
            if found is None:
                break
            start, end = found.span()
            if name == "TIMEOUT":
                message = message[:start] + message[start : start + 4] + "-" + message[start + 4 : end] + message[end:]
            else:
                message = message[: end - 1] + NO_BREAK_SPACE + message[end:]
    return message
