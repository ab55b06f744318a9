"""Pure decisions of the outbox: retry or park, where rows go, channels, messages, the fake's range parser."""

from __future__ import annotations

import pytest

from enrolment_sync.outbox import messages
from enrolment_sync.outbox.policy import (
    MAX_CELL_CHARS,
    SHEET_COLUMNS,
    a1,
    cell_text,
    channel_id,
    channels_for,
    column_letter,
    plan_writes,
    retry_decision,
    row_range,
    sheet_row,
    split_urls,
)
from enrolment_sync.testing.fake_sheets import Span, parse_range

HEADER = [list(SHEET_COLUMNS)]


@pytest.mark.parametrize(
    ("attempts", "dead", "delay_s"), [(1, False, 0.75), (3, False, 3.0), (7, False, 7.5), (8, True, 0), (9, True, 0)]
)
def test_the_last_allowed_attempt_parks_the_message(attempts: int, dead: bool, delay_s: float) -> None:
    decision = retry_decision(attempts, max_attempts=8, base_s=1, max_s=10, rand=lambda: 0.5)
    assert decision.dead is dead
    assert decision.delay_s == delay_s


@pytest.mark.parametrize(
    ("column_a", "rows", "updates", "appends", "header"),
    [
        ([], {"k1": ["k1"]}, [], [["k1"]], True),
        ([*HEADER, ["k1"], ["k2"]], {"k2": ["k2", "x"]}, [(3, ["k2", "x"])], [], False),
        ([*HEADER, ["k1"]], {"k1": ["k1", 1], "k9": ["k9"]}, [(2, ["k1", 1])], [["k9"]], False),
        ([*HEADER, [], ["k2"]], {"k2": ["k2"]}, [(3, ["k2"])], [], False),  # a blank row keeps numbering
        ([*HEADER, ["k1"], ["k1"]], {"k1": ["k1"]}, [(2, ["k1"]), (3, ["k1"])], [], False),  # copied by hand
        ([["k1"]], {"k1": ["k1"]}, [(1, ["k1"])], [], False),  # no header: row 1 is data, never overwritten
    ],
)
def test_plan_writes_rewrites_known_keys_in_place_and_appends_the_rest(
    column_a: list[list[str]], rows: dict[str, list[object]], updates: list[object], appends: list[object], header: bool
) -> None:
    plan = plan_writes(column_a, rows)
    assert plan.updates == updates
    assert plan.appends == appends
    assert plan.needs_header is header


def test_sheet_row_follows_the_columns_and_blanks_nulls() -> None:
    row = sheet_row(
        "303:9001:u1", {"change": "NEW", "user_id": "u1", "exam_score": None, "completed": False}, synced_at="t"
    )
    assert len(row) == len(SHEET_COLUMNS)
    values = dict(zip(SHEET_COLUMNS, row, strict=True))
    assert values["source_id"] == "303:9001:u1" and values["last_change"] == "NEW"
    assert values["exam_score"] == "" and values["completed"] is False and values["synced_at"] == "t"


def test_a1_quotes_titles_and_spans_every_column() -> None:
    assert a1("it's 33기", "A:A") == "'it''s 33기'!A:A"
    assert row_range("category_303", 7) == f"'category_303'!A7:{column_letter(len(SHEET_COLUMNS))}7"
    assert [column_letter(n) for n in (1, 18, 26, 27, 52)] == ["A", "R", "Z", "AA", "AZ"]


def test_high_severity_also_goes_to_the_high_channels() -> None:
    urls, high = split_urls("json://a/x, json://b/y\njson://a/x"), split_urls(" json://pager/z ")
    assert urls == ["json://a/x", "json://b/y", "json://a/x"]
    assert channels_for("low", urls=urls[:2], urls_high=high) == ["json://a/x", "json://b/y"]
    assert channels_for("high", urls=urls[:2], urls_high=high) == ["json://a/x", "json://b/y", "json://pager/z"]
    assert channel_id("json://a/x") == channel_id("json://a/x") != channel_id("json://b/y")
    assert "a/x" not in channel_id("json://a/x")


def test_the_digest_counts_changes_and_lists_alerts_in_korean() -> None:
    alerts = [{"severity": "high", "message": f"수강 상태 변경 u{n}"} for n in range(25)]
    msg = messages.change_digest(
        run_id=7,
        category_id=303,
        facts={"new_count": 2, "changed_count": 25, "written_count": 27, "open_count": 0, "dead_count": 1},
        alerts=alerts,
        alert_total=30,
        sheet_location="Google Sheet x",
    )
    assert "신규 2" in msg.title and "변경 25" in msg.title
    assert "실행 #7" in msg.body and "dead" in msg.body and "… 외 10건" in msg.body
    assert msg.body.count("• ") == messages.MAX_ALERT_LINES
    assert msg.notify_type == "warning"


def test_the_failed_alert_message_names_group_run_and_error() -> None:
    msg = messages.failed_alert(
        {
            "id": 5,
            "severity": "high",
            "source_id": "enrolment_sync:TIMEOUT",
            "run_id": 9,
            "detail": {"error_group": "TIMEOUT", "run_id": 9, "error_message": "read timed out"},
        }
    )
    assert "TIMEOUT" in msg.title and "실행(run_id): 9" in msg.body and "read timed out" in msg.body
    assert msg.notify_type == "failure"


@pytest.mark.parametrize(
    ("text", "span"),
    [
        ("'category_303'!A:A", Span("category_303", 1, 1, 1, None)),
        ("'a''b'!A2:R2", Span("a'b", 1, 2, 18, 2)),
        ("Sheet1!B3", Span("Sheet1", 2, 3, 2, 3)),
        ("'category_303'", Span("category_303", 1, 1, None, None)),
        ("'category_303'!A1", Span("category_303", 1, 1, 1, 1)),
    ],
)
def test_the_fake_parses_a1_ranges_as_gspread_sends_them(text: str, span: Span) -> None:
    assert parse_range(text) == span


@pytest.mark.parametrize(
    ("text", "cell"),
    [
        ("수강중", "수강중"),
        ("a\tb\nc\rd", "a\tb\nc\rd"),  # what a cell may hold stays
        ("수강\x01중\x00", "수강\ufffd중\ufffd"),
        ("\x1b[31mred\x1b[0m", "\ufffd[31mred\ufffd[0m"),
        ("=1+1", "=1+1"),  # never a formula is the writer's job (RAW, string cells), not a text change
        ("x" * (MAX_CELL_CHARS + 5), "x" * MAX_CELL_CHARS),
    ],
)
def test_cell_text_replaces_control_characters_and_keeps_google_s_limit(text: str, cell: str) -> None:
    assert cell_text(text) == cell


def test_sheet_row_sanitises_upstream_text_and_keeps_numbers() -> None:
    row = sheet_row("303:9001:u1", {"status_msg": "a\x02b", "progress_rate": 72.5}, synced_at="t")
    assert row[SHEET_COLUMNS.index("status_msg")] == "a\ufffdb"
    assert row[SHEET_COLUMNS.index("progress_rate")] == 72.5


DEAD_NOTE = {"queue": "notification_outbox", "what": "CHANGE_DIGEST", "message_ids": [7], "count": 1, "max_attempts": 8}


@pytest.mark.parametrize(
    ("messages_listed", "title_part", "lines"),
    [
        ([], "메시지 보류", []),
        (
            [{"id": 7, "delivered_to": [], "sent_unconfirmed": {"json://…abc": 8}}],
            "전달 확인 안 됨",
            ["전송했으나 확인 안 됨: json://…abc (8회)"],
        ),
        (
            [{"id": 7, "delivered_to": ["d1"], "sent_unconfirmed": {"slack://…f00": 1}}],
            "전달 확인 안 됨",
            ["전송했으나 확인 안 됨: slack://…f00 (1회)", "전달 확인됨(채널 id): d1"],
        ),
        ([{"id": 7, "delivered_to": ["d1"], "sent_unconfirmed": {}}], "메시지 보류", ["전달 확인됨(채널 id): d1"]),
    ],
)
def test_a_dead_letter_notice_says_what_is_known_of_delivery(
    messages_listed: list[dict[str, object]], title_part: str, lines: list[str]
) -> None:
    message = messages.dead_letter({**DEAD_NOTE, "messages": messages_listed})
    assert title_part in message.title
    for line in lines:
        assert line in message.body
    assert ("보류" in message.title + message.body) is (title_part == "메시지 보류")
