"""The Korean channel plugins' decisions: the API base override and how each vendor's answer is judged."""

from __future__ import annotations

from typing import Any

import pytest

from enrolment_sync.outbox.plugins._common import Answer, api_base
from enrolment_sync.outbox.plugins.dooray import dooray_host, dooray_verdict
from enrolment_sync.outbox.plugins.jandi import jandi_verdict
from enrolment_sync.outbox.plugins.kakaowork import kakaowork_verdict
from enrolment_sync.outbox.plugins.naverworks import TOKEN_MARGIN_S, naverworks_verdict, token_from

DEFAULT = "https://api.vendor.example"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, DEFAULT),
        ("", DEFAULT),
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
        ("http://localhost:8080/", "http://localhost:8080"),
        ("http://[::1]:9000/prefix/", "http://[::1]:9000/prefix"),
        ("https://proxy.example.com/kakao", "https://proxy.example.com/kakao"),
    ],
)
def test_api_base_accepted(value: str | None, expected: str) -> None:
    assert api_base(value, DEFAULT) == expected


@pytest.mark.parametrize(
    "value",
    ["http://proxy.example.com", "http://10.0.0.5:8080", "ftp://127.0.0.1", "127.0.0.1:8080", "https://h/?a=1"],
)
def test_api_base_refused(value: str) -> None:
    with pytest.raises(ValueError, match="base"):
        api_base(value, DEFAULT)


@pytest.mark.parametrize(
    ("status", "body", "ok"),
    [
        (200, {"success": True, "message": {"id": "1"}}, True),
        (200, {"success": False, "error": {"code": "conversation_not_found", "message": "x"}}, False),
        (200, {}, False),
        (200, None, False),
        (401, {"success": False, "error": {"code": "unauthorized", "message": "x"}}, False),
        (503, None, False),
    ],
)
def test_kakaowork_is_judged_by_its_body(status: int, body: Any, ok: bool) -> None:
    assert (kakaowork_verdict(Answer(status, body)) is None) is ok


@pytest.mark.parametrize(
    ("status", "body", "ok"),
    [
        (200, {}, True),
        (200, None, True),
        (200, {"code": 50001, "msg": "topic is archived"}, False),
        (404, {"code": 40400, "msg": "webhook not found"}, False),
        (500, None, False),
    ],
)
def test_jandi_verdict(status: int, body: Any, ok: bool) -> None:
    assert (jandi_verdict(Answer(status, body)) is None) is ok


@pytest.mark.parametrize(
    ("status", "body", "ok"),
    [
        (200, {"header": {"isSuccessful": True, "resultCode": 0, "resultMessage": ""}}, True),
        (200, None, True),
        (200, {"header": {"isSuccessful": False, "resultCode": -100, "resultMessage": "disabled"}}, False),
        (404, {"header": {"isSuccessful": False}}, False),
        (500, None, False),
    ],
)
def test_dooray_verdict(status: int, body: Any, ok: bool) -> None:
    assert (dooray_verdict(Answer(status, body)) is None) is ok


def test_dooray_tenant_or_host() -> None:
    assert dooray_host("acme") == "acme.dooray.com"
    assert dooray_host("hook.dooray.com") == "hook.dooray.com"


@pytest.mark.parametrize(("status", "ok"), [(201, True), (200, True), (400, False), (401, False), (403, False)])
def test_naverworks_message_verdict(status: int, ok: bool) -> None:
    assert (naverworks_verdict(Answer(status, None)) is None) is ok


def test_naverworks_token_is_renewed_before_it_expires() -> None:
    got = token_from(Answer(200, {"access_token": "t", "expires_in": "86400"}), now_s=1000.0)
    assert got == ("t", 1000.0 + 86400 - TOKEN_MARGIN_S)
    assert token_from(Answer(200, {"access_token": "t", "expires_in": 60}), now_s=5.0) == ("t", 5.0)


def test_naverworks_token_refusal_says_why() -> None:
    got = token_from(Answer(401, {"error": "invalid_client", "error_description": "bad"}), now_s=0.0)
    assert got == "token request: HTTP 401, invalid_client: bad"
