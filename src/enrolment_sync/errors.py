"""One exception hierarchy. Third-party errors are translated at the boundary (`raise ... from exc`)."""

from __future__ import annotations


class EnrolmentSyncError(Exception):
    """Base of every error this package raises on purpose."""


class ConfigError(EnrolmentSyncError):
    """A setting is missing or invalid."""


class DatabaseError(EnrolmentSyncError):
    """Postgres could not be reached or refused a statement."""


class UpstreamError(EnrolmentSyncError):
    """A KVCA call failed for good (after the retries it deserved).

    `status_code` is the upstream HTTP status (None for timeouts and transport failures); the
    message is the original text, written so that the seeds' query 3-3 files it correctly.
    """

    def __init__(self, message: str, *, status_code: int | None = None, timeout: bool = False) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.timeout = timeout


class UpstreamDataError(EnrolmentSyncError):
    """The upstream answered 200 with a body that breaks the contract (names the field)."""


class LockConflict(EnrolmentSyncError):
    """Another run holds the job lease. The text holds `job_lock active` and never ` 409 `."""


class LeaseLost(EnrolmentSyncError):
    """A lease (a run's job lease, or a queue message's) expired and was taken over: stop writing."""


class RunAbandoned(EnrolmentSyncError):
    """A run's worker died (its lease expired) before closing it."""


class RunCancelled(EnrolmentSyncError):
    """The run was cancelled from outside (worker shutdown) before it finished."""
