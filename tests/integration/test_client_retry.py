"""The KVCA client's retry policy against the simulator over loopback HTTP: Retry-After capped, 429s kept apart."""

from __future__ import annotations

import asyncio
from typing import Any

from enrolment_sync.kvca.client import KvcaClient
from enrolment_sync.retrying import RETRY_AFTER_MAX_S


def _client(simulator: Any, sleeps: list[float], *, retries: int) -> KvcaClient:
    async def record(seconds: float) -> None:
        sleeps.append(seconds)

    return KvcaClient(
        base_url=simulator.base_url,
        client_id="demo-client",
        client_secret="demo-secret",
        retries=retries,
        sleep=record,
    )


def test_a_day_long_retry_after_is_waited_only_up_to_the_cap(simulator: Any) -> None:
    simulator.state.add_fault(status=429, count=1, retry_after=86_400, path_contains="/categories/303")
    sleeps: list[float] = []

    async def go() -> dict[str, Any]:
        async with _client(simulator, sleeps, retries=0) as client:
            return await client.get_category(303)

    assert asyncio.run(go())["id"] == 303
    assert sleeps and max(sleeps) <= RETRY_AFTER_MAX_S
    assert sleeps[0] == RETRY_AFTER_MAX_S


def test_rate_limit_waits_do_not_spend_the_retries(simulator: Any) -> None:
    simulator.state.add_fault(status=429, count=4, retry_after=2, path_contains="/categories/303")
    sleeps: list[float] = []

    async def go() -> tuple[dict[str, Any], int]:
        async with _client(simulator, sleeps, retries=0) as client:
            return await client.get_category(303), client.stats.rate_limited

    body, limited = asyncio.run(go())
    assert body["id"] == 303 and limited == 4
    assert sleeps.count(2.0) == 4
