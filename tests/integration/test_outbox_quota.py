"""The Sheets quota: token buckets in Postgres, shared by every consumer, emptied by a 429."""

from __future__ import annotations

import threading

from enrolment_sync import db
from enrolment_sync.outbox.sheets import DatabaseQuota, Interrupted
from enrolment_sync.outbox.store import OutboxStore


def test_the_write_bucket_is_shared_by_consumers_and_emptied_by_a_429(database_url: str) -> None:
    target = db.parse_target(database_url)
    a = OutboxStore(target, consumer_id="a", lease_s=60)
    b = OutboxStore(target, consumer_id="b", lease_s=60)
    stop = threading.Event()
    quotas = [
        DatabaseQuota(
            lambda n, c, r, s=s: s.quota_take(n, capacity=c, rate_per_s=r),
            s.quota_drain,
            per_minute={"write": 60, "read": 60},
            stop=stop,
        )
        for s in (a, b)
    ]
    try:
        capacity, rate = quotas[0].bucket("write")
        assert (capacity, rate) == (15.0, 0.75)  # at most 15 + 45 calls in any minute: Google's 60
        granted = [a.quota_take("sheets:write", capacity=capacity, rate_per_s=rate)[0] for _ in range(8)]
        granted += [b.quota_take("sheets:write", capacity=capacity, rate_per_s=rate)[0] for _ in range(7)]
        assert all(granted)  # the burst, taken by two consumers together ...
        assert not b.quota_take("sheets:write", capacity=capacity, rate_per_s=rate)[0]  # ... then none left
        stop.set()  # a consumer that must wait for a token gives up its batch when told to stop
        try:
            quotas[1].acquire("write")
            raise AssertionError("acquire must wait for a token")
        except Interrupted:
            pass
        # the read bucket is nearly full; a 429 empties it for every consumer
        assert a.quota_take("sheets:read", capacity=capacity, rate_per_s=rate)[0]
        quotas[0].exhausted("read")
        assert not b.quota_take("sheets:read", capacity=capacity, rate_per_s=rate)[0]
    finally:
        a.close()
        b.close()
