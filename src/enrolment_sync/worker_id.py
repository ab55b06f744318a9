"""Who a process is, as leases and run_log name it."""

from __future__ import annotations

import os
import socket
import uuid


def new_worker_id() -> str:
    """host:pid:random, unique per process start (a restarted worker is a new holder of nothing)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
