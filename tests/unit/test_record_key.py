"""The record key, decided without a database: what the short key does to a learner in two courses."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest

from enrolment_sync.keymigration import is_old_key, old_record_key
from enrolment_sync.kvca.adapter import status_record
from enrolment_sync.kvca.contract import parse_status_row
from enrolment_sync.records import Incoming, Stored, diff, record_key
from enrolment_sync.testing.kvca import SimulatorConfig, SimulatorState

KeyFn = Callable[[int, int, str], str]
CATEGORY = 303


def short_key(category_id: int, _course_id: int, user_id: str) -> str:
    return old_record_key(category_id, user_id)


def fetch(state: SimulatorState, key: KeyFn) -> list[tuple[int, list[Incoming]]]:
    """Every course's status rows as the engine builds them, then keyed by `key`."""
    out = []
    for course_id in state.course_ids(CATEGORY):
        records = []
        for raw in state.enrolments(course_id):
            rec = status_record(CATEGORY, raw, parse_status_row(raw, course_id))
            records.append(dataclasses.replace(rec, source_id=key(CATEGORY, course_id, rec.user_id)))
        out.append((course_id, records))
    return out


def run_once(state: SimulatorState, store: dict[tuple[str, str], Stored], key: KeyFn) -> tuple[int, int]:
    """One run, course after course, diffing by key against what is stored: (new, changed)."""
    new = changed = 0
    for _course_id, incoming in fetch(state, key):
        d = diff(incoming, store, present=None)
        new += len(d.new)
        changed += len(d.changed)
        for rec in d.to_write:
            store[(rec.source_type, rec.source_id)] = Stored(rec.content_hash, False, rec.alert_fields())
    return new, changed


@pytest.mark.parametrize(
    ("category_id", "course_id", "user_id", "final", "old"),
    [
        (303, 9001, "u000045", "303:9001:u000045", "303:u000045"),
        (304, 9004, "kim.minji", "304:9004:kim.minji", "304:kim.minji"),
    ],
)
def test_key_shapes(category_id: int, course_id: int, user_id: str, final: str, old: str) -> None:
    assert record_key(category_id, course_id, user_id) == final
    assert old_record_key(category_id, user_id) == old
    assert is_old_key(old)
    assert not is_old_key(final)


def test_the_short_key_merges_a_learner_in_two_courses_and_flips_every_run() -> None:
    state = SimulatorState(SimulatorConfig(courses=2, users=89))
    course_a, course_b = state.course_ids(CATEGORY)
    a_users = {r["user_id"] for r in state.enrolments(course_a)}
    b_users = {r["user_id"] for r in state.enrolments(course_b)}
    shared = a_users & b_users
    assert len(shared) == 45

    store: dict[tuple[str, str], Stored] = {}
    first = run_once(state, store, short_key)
    second = run_once(state, store, short_key)
    third = run_once(state, store, short_key)

    assert len(store) == len(a_users | b_users) == 133  # 178 enrolments, 45 of them lost in the merge
    assert first == (133, 45)  # course B overwrites course A's row of every shared learner
    assert second == third == (0, 90)  # nothing changed upstream, yet every shared learner changes twice


def test_the_final_key_keeps_both_courses_and_sees_no_change() -> None:
    state = SimulatorState(SimulatorConfig(courses=2, users=89))
    store: dict[tuple[str, str], Stored] = {}

    assert run_once(state, store, record_key) == (178, 0)
    assert run_once(state, store, record_key) == (0, 0)
    assert len(store) == 178
