"""The always-on part of `serve`: the scheduler loop and the request runner as tasks beside the HTTP API.

Both stop on a signal (uvicorn turns SIGINT/SIGTERM into the app's shutdown, which calls `stop`): the loop
writes its final heartbeat, a request cut short goes back to the queue, its run is closed as cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import structlog

from .. import db, retention
from ..config import Settings
from ..job import SyncJob
from .loop import SchedulerLoop
from .runner import Answer, RequestRunner

log = structlog.get_logger(__name__)
STOP_GRACE_S = 10.0  # how long a stop waits for the loops before cancelling them


class Unattended:
    """The scheduler loop and the request runner of one process."""

    def __init__(self, database: db.Database, settings: Settings, job: SyncJob, *, answer: Answer) -> None:
        self.settings = settings
        self.runner = RequestRunner(database, settings, job, answer=answer)
        self.loop = SchedulerLoop(database, settings, worker_id=job.worker_id, on_request=self.runner.wake.set)
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.pruner = retention.Pruner(database, retention.RetentionPolicy.from_settings(settings))

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self.loop.run(self._stop, lambda: {"runner": self.runner.status()}), name="scheduler"),
            asyncio.create_task(self.runner.run(self._stop), name="request-runner"),
        ]
        self.pruner.start()
        log.info("scheduler and request runner started", worker_id=self.loop.worker_id)

    def wake_runner(self) -> None:
        self.runner.wake.set()

    async def stop(self) -> None:
        await self.pruner.stop()
        self._stop.set()
        self.runner.wake.set()
        runner_task = self._tasks[1] if len(self._tasks) > 1 else None
        if runner_task is not None and self.runner.state.current_request_id is not None:
            runner_task.cancel()  # a run in flight is closed as cancelled and its request given back
        _done, pending = await asyncio.wait(self._tasks, timeout=STOP_GRACE_S) if self._tasks else (set(), set())
        for task in pending:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def health(self, loop_time: float) -> dict[str, Any]:
        """This process's loop: alive when it beat within a few ticks."""
        last = self.loop.last_beat_monotonic
        age = None if last is None else round(loop_time - last, 3)
        limit = max(30.0, 10 * self.settings.scheduler_tick_seconds)
        return {
            "running": bool(self._tasks) and not self._tasks[0].done(),
            "last_heartbeat_age_s": age,
            "alive": age is not None and age <= limit,
            "state": {"ticks": self.loop.state.ticks, "slots_fired": self.loop.state.slots_fired},
            "runner": self.runner.status(),
        }
