"""The KVCA simulator over real loopback HTTP (RunningSimulator + httpx)."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator
from typing import Any, get_args

import httpx
import pytest

from enrolment_sync.kvca.contract import Status
from enrolment_sync.testing.kvca import (
    STATUS_MSG,
    STATUSES,
    RunningSimulator,
    SimulatorConfig,
    SimulatorState,
)
from tests.waiting import wait_for

CONFIG = SimulatorConfig(courses=2, users=250, subcategories=1)
CREDS = {"client_id": CONFIG.client_id, "client_secret": CONFIG.client_secret}
ISO_KST = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\+09:00$")
DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


@pytest.fixture(scope="module")
def running() -> Iterator[RunningSimulator]:
    with RunningSimulator(CONFIG) as sim:
        yield sim


@pytest.fixture()
def sim(running: RunningSimulator) -> RunningSimulator:
    running.state.reset()
    return running


@pytest.fixture()
def http(sim: RunningSimulator) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sim.base_url, timeout=5.0) as client:
        yield client


def get_token(http: httpx.Client) -> str:
    r = http.post("/api/v1/auth/token", json=CREDS)
    assert r.status_code == 200, r.text
    token: str = r.json()["access_token"]
    return token


@pytest.fixture()
def auth(http: httpx.Client) -> dict[str, str]:
    return {"Authorization": f"Bearer {get_token(http)}"}


def all_rows(http: httpx.Client, auth: dict[str, str], course_id: int, per_page: int = 100) -> list[Any]:
    rows: list[Any] = []
    page = 1
    while True:
        body = http.get(
            f"/api/v1/courses/{course_id}/enrolments", params={"page": page, "per_page": per_page}, headers=auth
        ).json()
        rows.extend(body["items"])
        if page >= body["total_pages"]:
            return rows
        page += 1


# ---------------------------------------------------------------------- auth


def test_token_and_wrong_credentials(sim: RunningSimulator, http: httpx.Client) -> None:
    r = http.post("/api/v1/auth/token", json=CREDS)
    assert r.status_code == 200
    body = r.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == CONFIG.token_ttl_s
    assert isinstance(body["access_token"], str) and len(body["access_token"]) >= 16
    assert http.post("/api/v1/auth/token", json=CREDS).json()["access_token"] != body["access_token"]

    bad = http.post("/api/v1/auth/token", json={"client_id": CONFIG.client_id, "client_secret": "nope"})
    assert bad.status_code == 401
    assert bad.json() == {"error": "invalid_client"}

    for headers in ({}, {"Authorization": "Bearer not-a-token"}, {"Authorization": body["access_token"]}):
        r = http.get("/api/v1/categories/303", headers=headers)
        assert r.status_code == 401
        assert r.json() == {"error": "invalid_token"}
    ok = http.get("/api/v1/categories/303", headers={"Authorization": f"Bearer {body['access_token']}"})
    assert ok.status_code == 200


def test_changed_credentials(sim: RunningSimulator, http: httpx.Client) -> None:
    r = http.post("/_control/credentials", json={"client_id": "other", "client_secret": "s3cret"})
    assert r.status_code == 200
    assert http.post("/api/v1/auth/token", json=CREDS).status_code == 401
    r = http.post("/api/v1/auth/token", json={"client_id": "other", "client_secret": "s3cret"})
    assert r.status_code == 200


def test_token_expiry(sim: RunningSimulator, http: httpx.Client, auth: dict[str, str]) -> None:
    assert http.get("/api/v1/courses/9001/enrolments", headers=auth).status_code == 200
    assert http.post("/_control/tokens/expire").status_code == 200
    r = http.get("/api/v1/courses/9001/enrolments", headers=auth)
    assert r.status_code == 401
    assert r.json() == {"error": "invalid_token"}
    fresh = {"Authorization": f"Bearer {get_token(http)}"}
    assert http.get("/api/v1/courses/9001/enrolments", headers=fresh).status_code == 200
    sim.state.expire_tokens()  # the Python API does the same
    assert http.get("/api/v1/courses/9001/enrolments", headers=fresh).status_code == 401


def test_token_ttl() -> None:
    with RunningSimulator(SimulatorConfig(token_ttl_s=0)) as sim, httpx.Client(base_url=sim.base_url) as http:
        token = get_token(http)
        r = http.get("/api/v1/categories/303", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 401


# ---------------------------------------------------------------------- data


def test_categories_and_courses(sim: RunningSimulator, http: httpx.Client, auth: dict[str, str]) -> None:
    root = http.get("/api/v1/categories/303", headers=auth).json()
    assert root == {"id": 303, "name": "33기", "parent_id": None, "subcategory_ids": [304]}
    sub = http.get("/api/v1/categories/304", headers=auth).json()
    assert sub["parent_id"] == 303 and sub["subcategory_ids"] == []
    assert "33기" in sub["name"]

    missing = http.get("/api/v1/categories/999", headers=auth)
    assert missing.status_code == 404
    assert missing.json() == {"error": "not_found"}

    courses = http.get("/api/v1/categories/303/courses", params={"page": 1, "per_page": 100}, headers=auth)
    assert courses.json() == {
        "items": [
            {"id": 9001, "name": "투자심사 실무", "category_id": 303},
            {"id": 9002, "name": "재무제표 분석", "category_id": 303},
        ],
        "page": 1,
        "per_page": 100,
        "total_pages": 1,
        "total_items": 2,
    }
    sub_courses = http.get("/api/v1/categories/304/courses", headers=auth).json()
    assert [c["id"] for c in sub_courses["items"]] == [9003, 9004]
    assert all(c["category_id"] == 304 for c in sub_courses["items"])
    assert http.get("/api/v1/categories/999/courses", headers=auth).status_code == 404
    assert http.get("/api/v1/courses/8000/enrolments", headers=auth).json() == {"error": "not_found"}
    assert http.get("/api/v1/courses/8000/enrolments/u000001", headers=auth).status_code == 404


def test_paging_order_and_clamp(sim: RunningSimulator, http: httpx.Client, auth: dict[str, str]) -> None:
    first = http.get("/api/v1/courses/9001/enrolments", headers=auth).json()
    assert first["page"] == 1 and first["per_page"] == 100
    assert first["total_items"] == 250 and first["total_pages"] == 3
    assert len(first["items"]) == 100

    last = http.get("/api/v1/courses/9001/enrolments", params={"page": 3}, headers=auth).json()
    assert len(last["items"]) == 50
    past = http.get("/api/v1/courses/9001/enrolments", params={"page": 4}, headers=auth).json()
    assert past["items"] == [] and past["total_pages"] == 3

    clamped = http.get("/api/v1/courses/9001/enrolments", params={"per_page": 1000}, headers=auth).json()
    assert clamped["per_page"] == 100 and len(clamped["items"]) == 100 and clamped["total_pages"] == 3

    rows = all_rows(http, auth, 9001, per_page=40)
    assert len(rows) == 250
    ids = [r["user_id"] for r in rows]
    assert ids == sorted(ids) and len(set(ids)) == 250
    assert ids[0] == "u000001" and ids[-1] == "u000250"
    assert rows == all_rows(http, auth, 9001, per_page=100)
    bad = http.get("/api/v1/courses/9001/enrolments", params={"page": "x"}, headers=auth)
    assert bad.status_code == 400 and bad.json() == {"error": "bad_request"}


def test_row_and_detail_shapes(sim: RunningSimulator, http: httpx.Client, auth: dict[str, str]) -> None:
    rows = all_rows(http, auth, 9001)
    statuses = [r["status"] for r in rows]
    assert set(statuses) <= set(STATUS_MSG)
    assert statuses.count("IN_PROGRESS") > len(rows) / 2
    for row in rows:
        assert row["course_id"] == 9001
        assert re.fullmatch(r"u\d{6}", row["user_id"])
        assert row["status_msg"] == STATUS_MSG[row["status"]]
        assert ISO_KST.match(row["update_time"])
        assert row["gc_date"] is None or DATE.match(row["gc_date"])
        if row["status"] in ("COMPLETED", "FAILED"):
            assert DATE.match(row["sjc_date"])
        else:
            assert row["sjc_date"] is None
        assert row["cohort_label"] == "33기"  # an unknown extra field

    for row in rows[:30]:
        detail = http.get(f"/api/v1/courses/9001/enrolments/{row['user_id']}", headers=auth).json()
        assert detail["user_id"] == row["user_id"] and detail["course_id"] == 9001
        assert isinstance(detail["progress_rate"], float) and isinstance(detail["attendance_rate"], float)
        assert detail["exam_score"] is None or isinstance(detail["exam_score"], float)
        assert detail["completed"] is (row["status"] == "COMPLETED")
        assert detail["completion_date"] == (row["sjc_date"] if detail["completed"] else None)
        assert ISO_KST.match(detail["update_time"])
        assert "last_login_at" in detail


def test_learners_overlap_between_courses(sim: RunningSimulator, http: httpx.Client, auth: dict[str, str]) -> None:
    first = {r["user_id"] for r in all_rows(http, auth, 9001)}
    second = {r["user_id"] for r in all_rows(http, auth, 9002)}
    assert len(first & second) == 125  # course k starts at k * users // 2
    assert min(second) == "u000126"


def test_details_are_stable(sim: RunningSimulator, http: httpx.Client, auth: dict[str, str]) -> None:
    a = http.get("/api/v1/courses/9002/enrolments/u000200", headers=auth).json()
    b = http.get("/api/v1/courses/9002/enrolments/u000200", headers=auth).json()
    assert a == b


def test_same_seed_same_data(sim: RunningSimulator, http: httpx.Client, auth: dict[str, str]) -> None:
    with RunningSimulator(CONFIG) as twin, httpx.Client(base_url=twin.base_url) as other:
        other_auth = {"Authorization": f"Bearer {get_token(other)}"}
        for course_id in (9001, 9004):
            assert all_rows(http, auth, course_id) == all_rows(other, other_auth, course_id)
        for user_id in ("u000001", "u000126", "u000250"):
            path = f"/api/v1/courses/9002/enrolments/{user_id}"
            assert http.get(path, headers=auth).json() == other.get(path, headers=other_auth).json()
    changed = SimulatorState(SimulatorConfig(courses=2, users=250, subcategories=1, seed=34))
    assert changed.enrolments(9001) != sim.state.enrolments(9001)


def test_generation_of_a_large_config() -> None:
    state = SimulatorState(SimulatorConfig(courses=40, users=500))
    assert len(state.course_ids()) == 40
    assert len(state.enrolments(9040)) == 500


# ---------------------------------------------------------------------- control: data changes


def test_update_changes_exactly_one_row(sim: RunningSimulator, http: httpx.Client, auth: dict[str, str]) -> None:
    before = all_rows(http, auth, 9001)
    other_before = all_rows(http, auth, 9002)
    # a learner enrolled in both courses: only the 9001 row may change
    target = next(r for r in before if r["status"] == "IN_PROGRESS" and r["user_id"] >= "u000126")
    detail_path = f"/api/v1/courses/9001/enrolments/{target['user_id']}"
    detail_before = http.get(detail_path, headers=auth).json()

    r = http.post(
        "/_control/enrolments/update", json={"course_id": 9001, "user_id": target["user_id"], "status": "CANCELLED"}
    )
    assert r.status_code == 200
    new_row = r.json()
    assert new_row["status"] == "CANCELLED" and new_row["status_msg"] == "수강취소"
    assert new_row["update_time"] > target["update_time"]

    after = all_rows(http, auth, 9001)
    changed = [(a, b) for a, b in zip(before, after, strict=True) if a != b]
    assert changed == [(target, new_row)]
    assert http.get(detail_path, headers=auth).json() == detail_before
    assert all_rows(http, auth, 9002) == other_before

    # repeated changes always get a newer update_time; status_msg may be given explicitly
    again = sim.state.update_enrolment(9001, target["user_id"], status="CANCELLED", status_msg="취소(본인)")
    assert again["update_time"] > new_row["update_time"]
    assert again["status_msg"] == "취소(본인)"
    assert http.get(detail_path, headers=auth).json() == detail_before

    unknown = http.post("/_control/enrolments/update", json={"course_id": 9001, "user_id": "u999999"})
    assert unknown.status_code == 404
    bad = http.post("/_control/enrolments/update", json={"course_id": 9001, "user_id": "u000001", "status": "X"})
    assert bad.status_code == 400


def test_update_to_completed_changes_detail(sim: RunningSimulator, http: httpx.Client, auth: dict[str, str]) -> None:
    target = next(r for r in sim.state.enrolments(9001) if r["status"] == "IN_PROGRESS")
    row = sim.state.update_enrolment(9001, target["user_id"], status="COMPLETED", sjc_date="2026-11-19")
    assert row["status_msg"] == "수료" and row["sjc_date"] == "2026-11-19"
    detail = http.get(f"/api/v1/courses/9001/enrolments/{target['user_id']}", headers=auth).json()
    assert detail["completed"] is True and detail["completion_date"] == "2026-11-19"


def test_remove_detail_only_remove_and_add(sim: RunningSimulator, http: httpx.Client, auth: dict[str, str]) -> None:
    path = "/api/v1/courses/9001/enrolments/u000010"
    assert http.get(path, headers=auth).status_code == 200

    assert http.post(
        "/_control/enrolments/remove-detail-only", json={"course_id": 9001, "user_id": "u000010"}
    ).is_success
    gone = http.get(path, headers=auth)
    assert gone.status_code == 404 and gone.json() == {"error": "not_found"}
    assert "u000010" in {r["user_id"] for r in all_rows(http, auth, 9001)}

    assert http.post("/_control/enrolments/remove", json={"course_id": 9001, "user_id": "u000011"}).is_success
    rows = all_rows(http, auth, 9001)
    assert len(rows) == 249 and "u000011" not in {r["user_id"] for r in rows}
    assert http.get("/api/v1/courses/9001/enrolments/u000011", headers=auth).status_code == 404

    added = http.post("/_control/enrolments/add", json={"course_id": 9001, "user_id": "u000011"})
    assert added.status_code == 200 and added.json()["status"] == "ENROLLED"
    assert http.post("/_control/enrolments/add", json={"course_id": 9001, "user_id": "u000011"}).status_code == 409
    rows = all_rows(http, auth, 9001)
    assert len(rows) == 250 and [r["user_id"] for r in rows] == sorted(r["user_id"] for r in rows)
    assert http.get("/api/v1/courses/9001/enrolments/u000011", headers=auth).status_code == 200

    row = sim.state.add_enrolment(9001, "u777777", status="IN_PROGRESS")
    assert row["status_msg"] == "수강중"
    assert all_rows(http, auth, 9001)[-1] == row


def test_reset_restores_initial_data(sim: RunningSimulator, http: httpx.Client, auth: dict[str, str]) -> None:
    initial = all_rows(http, auth, 9001)
    sim.state.remove_enrolment(9001, "u000001")
    sim.state.add_fault(503, count=-1, path_contains="/categories/")
    assert http.post("/_control/reset").status_code == 200
    assert all_rows(http, auth, 9001) == initial
    assert http.get("/api/v1/categories/303", headers=auth).status_code == 200
    assert http.get("/_control/stats").json()["requests_by_kind"]["enrolments"] == 3


# ---------------------------------------------------------------------- faults


def test_fault_503_twice_then_ok(sim: RunningSimulator, http: httpx.Client, auth: dict[str, str]) -> None:
    r = http.post("/_control/faults", json={"status": 503, "count": 2})
    assert r.status_code == 200
    path = "/api/v1/courses/9001/enrolments"
    for _ in range(2):
        failed = http.get(path, headers=auth)
        assert failed.status_code == 503 and failed.json() == {"error": "upstream_error"}
    assert http.get(path, headers=auth).status_code == 200
    assert http.get("/_control/stats").json()["responses_by_status"] == {"200": 2, "503": 2}


def test_fault_path_contains(sim: RunningSimulator, http: httpx.Client, auth: dict[str, str]) -> None:
    http.post("/_control/faults", json={"status": 409, "count": 1, "path_contains": "/enrolments/u000002"})
    assert http.get("/api/v1/courses/9001/enrolments", headers=auth).status_code == 200
    assert http.get("/api/v1/courses/9001/enrolments/u000001", headers=auth).status_code == 200
    r = http.get("/api/v1/courses/9001/enrolments/u000002", headers=auth)
    assert r.status_code == 409 and r.json() == {"error": "conflict"}
    assert http.get("/api/v1/courses/9001/enrolments/u000002", headers=auth).status_code == 200


def test_fault_forever_clear_and_kinds(sim: RunningSimulator, http: httpx.Client, auth: dict[str, str]) -> None:
    http.post("/_control/faults", json={"status": 403, "count": -1, "path_contains": "/categories/"})
    for _ in range(3):
        r = http.get("/api/v1/categories/303", headers=auth)
        assert r.status_code == 403 and r.json() == {"error": "forbidden"}
    assert http.delete("/_control/faults").status_code == 200
    assert http.get("/api/v1/categories/303", headers=auth).status_code == 200

    # faults apply to the token call too, and FIFO order holds
    sim.state.add_fault(400)
    sim.state.add_fault(502)
    r = http.post("/api/v1/auth/token", json=CREDS)
    assert r.status_code == 400 and r.json() == {"error": "bad_request"}
    assert http.get("/api/v1/categories/303", headers=auth).status_code == 502
    assert http.post("/api/v1/auth/token", json=CREDS).status_code == 200


def test_fault_429_with_retry_after(sim: RunningSimulator, http: httpx.Client, auth: dict[str, str]) -> None:
    http.post("/_control/faults", json={"status": 429, "retry_after": 2})
    r = http.get("/api/v1/courses/9001/enrolments", headers=auth)
    assert r.status_code == 429
    assert r.headers["Retry-After"] == "2"
    assert r.json() == {"error": "rate_limited"}
    assert http.get("/api/v1/courses/9001/enrolments", headers=auth).status_code == 200


def test_fault_timeout_hangs(sim: RunningSimulator, http: httpx.Client, auth: dict[str, str]) -> None:
    http.post("/_control/faults", json={"timeout": True, "hang_s": 10, "path_contains": "/enrolments/u000003"})
    with pytest.raises(httpx.ReadTimeout):
        http.get("/api/v1/courses/9001/enrolments/u000003", headers=auth, timeout=0.3)
    # the hang ends once the client gave up; the next call answers normally
    wait_for(lambda: sim.state.stats()["in_flight"] == 0, timeout_s=30, what="the hang to end")
    assert http.get("/api/v1/courses/9001/enrolments/u000003", headers=auth).status_code == 200


def test_fault_short_hang_then_normal_answer(sim: RunningSimulator, http: httpx.Client, auth: dict[str, str]) -> None:
    sim.state.add_fault(timeout=True, hang_s=0.2)
    started = time.monotonic()
    r = http.get("/api/v1/categories/303", headers=auth, timeout=5.0)
    assert r.status_code == 200
    assert time.monotonic() - started >= 0.2


# ---------------------------------------------------------------------- latency, concurrency, stats


async def _concurrent_gets(base_url: str, auth: dict[str, str], n: int) -> list[httpx.Response]:
    async with httpx.AsyncClient(base_url=base_url, timeout=10.0) as client:
        paths = [f"/api/v1/courses/9001/enrolments/u{i + 1:06d}" for i in range(n)]
        return await asyncio.gather(*(client.get(p, headers=auth) for p in paths))


def test_stats_max_in_flight(sim: RunningSimulator, http: httpx.Client, auth: dict[str, str]) -> None:
    assert http.post("/_control/latency", json={"latency_ms": 300}).status_code == 200
    http.post("/_control/stats/reset")
    responses = asyncio.run(_concurrent_gets(sim.base_url, auth, 8))
    assert [r.status_code for r in responses] == [200] * 8
    stats = http.get("/_control/stats").json()
    assert stats["max_in_flight"] == 8
    assert stats["in_flight"] == 0
    assert stats["requests_total"] == 8
    assert stats["requests_by_kind"] == {"token": 0, "category": 0, "courses": 0, "enrolments": 0, "detail": 8}
    assert stats["responses_by_status"] == {"200": 8}

    assert http.post("/_control/stats/reset").status_code == 200
    zero = http.get("/_control/stats").json()
    assert zero["requests_total"] == 0 and zero["max_in_flight"] == 0 and zero["responses_by_status"] == {}


def test_latency_is_added(sim: RunningSimulator, http: httpx.Client, auth: dict[str, str]) -> None:
    sim.state.set_latency(150)
    started = time.monotonic()
    assert http.get("/api/v1/categories/303", headers=auth).status_code == 200
    assert time.monotonic() - started >= 0.15
    sim.state.set_latency(60_000)  # control endpoints have none: a minute of it would time this call out
    assert http.get("/_control/stats", timeout=5).status_code == 200
    sim.state.set_latency(0)


def test_rate_limit_beyond_max_in_flight(sim: RunningSimulator, auth: dict[str, str]) -> None:
    sim.state.set_latency(300)
    sim.state.set_max_in_flight(2)
    responses = asyncio.run(_concurrent_gets(sim.base_url, auth, 6))
    codes = sorted(r.status_code for r in responses)
    assert codes.count(200) >= 2 and codes.count(429) >= 1
    assert set(codes) == {200, 429}
    limited = next(r for r in responses if r.status_code == 429)
    assert limited.headers["Retry-After"] == "1"
    assert limited.json() == {"error": "rate_limited"}


def test_statuses_are_the_contracts() -> None:
    assert set(STATUSES) == set(get_args(Status))
