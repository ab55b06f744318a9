"""Waiting on a condition with a deadline (never a bare sleep standing in for it)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def wait_for(condition: Callable[[], Any], *, timeout_s: float = 60.0, what: str = "condition") -> Any:
    """Poll `condition` until it is truthy (and return it), or fail after the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.02)
