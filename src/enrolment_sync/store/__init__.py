"""The sync side's store: the only code that pairs named queries with their arguments.

Like Procrastinate's JobManager: callers hand it domain values and a connection inside their transaction,
and get domain values back; rows, query names and constraint errors stay in here.

- `runs`: the job lease and run_log (begin, renew, finish, close abandoned, history per category).
- `records`: source_record as the sync reads and writes it, and the sheet rows queued beside it.
- `alerts`: the one place that raises and resolves alerts (sync, failures, staleness, dead letters).
- `status_history`: the history rows of the status records the sync writes (docs/history.md).
"""

from . import alerts, records, runs, status_history

__all__ = ["alerts", "records", "runs", "status_history"]
