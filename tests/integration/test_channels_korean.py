"""Kakao Work, JANDI, NAVER WORKS and Dooray! through the real notification consumer, against loopback fakes
that follow each vendor's documented request and answer (enrolment_sync.testing.vendors)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from psycopg.types.json import Jsonb
from typer.testing import CliRunner

from enrolment_sync.cli import app
from enrolment_sync.config import Settings, get_settings
from enrolment_sync.errors import ConfigError
from enrolment_sync.outbox.channels import AppriseChannels
from enrolment_sync.runtime import configure_logging
from enrolment_sync.testing.vendors import DoorayFake, JandiFake, KakaoWorkFake, NaverWorksFake
from tests.outbox_fixtures import drain, outbox_settings

KAKAO_KEY = "kw-appkey.SECRET-K4K40"
JANDI_TOKEN = "SECRETjandiTOKEN0001"
DOORAY_PATH = ("3036349505739914786", "3090768012345678901", "SECRETdoorayTOKEN01")
NW_SECRET = "SECRET-nw-client-secret"
WRONG = "WRONG-SECRET-0000"
SECRETS = (KAKAO_KEY, JANDI_TOKEN, DOORAY_PATH[2], NW_SECRET, WRONG)
VENDORS = ("kakaowork", "jandi", "naverworks", "dooray")


@dataclass
class Vendor:
    name: str
    fake: Any
    keyfile: str = ""

    def url(self, *, wrong_secret: bool = False) -> str:
        secret = WRONG if wrong_secret else None
        if self.name == "kakaowork":
            return str(self.fake.apprise_url(app_key=secret))
        if self.name == "naverworks":
            return str(self.fake.apprise_url(keyfile=self.keyfile, client_secret=secret))
        return str(self.fake.apprise_url(token=secret))

    def texts(self) -> list[str]:
        """Each received message as one text (title and body), whatever the vendor's body shape."""
        out = []
        for m in self.fake.state.messages():
            if self.name == "jandi":
                out.append(m["body"] + "\n" + "\n".join(i["description"] for i in m["connectInfo"]))
            elif self.name == "dooray":
                out.append(m["text"] + "\n" + "\n".join(a["text"] for a in m["attachments"]))
            else:
                out.append(m["text"])
        return out


@pytest.fixture(scope="module")
def rsa_key(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, bytes]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path = tmp_path_factory.mktemp("naverworks") / "private_20261123.key"
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return str(path), public


@pytest.fixture(scope="module")
def running_vendors(rsa_key: tuple[str, bytes]) -> Iterator[dict[str, Vendor]]:
    keyfile, public = rsa_key
    with ExitStack() as stack:
        fakes = {
            "kakaowork": KakaoWorkFake(app_key=KAKAO_KEY),
            "jandi": JandiFake(token=JANDI_TOKEN),
            "naverworks": NaverWorksFake(
                client_id="nw-client-id",
                client_secret=NW_SECRET,
                service_account="abcde.serviceaccount@example.com",
                public_key_pem=public,
            ),
            "dooray": DoorayFake(hook_path=DOORAY_PATH),
        }
        yield {name: Vendor(name, stack.enter_context(fake), keyfile) for name, fake in fakes.items()}


@pytest.fixture
def vendors(running_vendors: dict[str, Vendor], request: pytest.FixtureRequest) -> dict[str, Vendor]:
    """The module's fakes, as new: nothing received, no failure set, a NAVER WORKS client of this test's own."""
    for vendor in running_vendors.values():
        if vendor.name == "naverworks":
            vendor.fake.reset(client_id=f"nw-client-{abs(hash(request.node.nodeid))}")
        else:
            vendor.fake.state.reset()
    return running_vendors


def stale_alert(pg: psycopg.Connection[Any], category_id: int = 303) -> int:
    row = pg.execute(
        "insert into alert (alert_type, severity, source_type, source_id, message, detail) "
        "values ('STALE', 'high', 'category', %s, '동기화 지연: 26시간 넘게 성공한 실행 없음', %s) returning id",
        (f"enrolment_sync:category:{category_id}", Jsonb({"category_id": category_id, "stale_after_hours": 26})),
    ).fetchone()
    assert row is not None
    return int(row["id"])


def one_attempt_settings(database_url: str, url: str) -> Settings:
    """A retry backoff longer than a drain: a failing delivery is attempted exactly once per drain."""
    return outbox_settings(
        database_url, None, notify_urls_high=url, outbox_backoff_base_seconds=60, outbox_backoff_max_seconds=60
    )


@pytest.mark.parametrize("name", VENDORS)
def test_each_korean_channel_gets_the_korean_message_through_the_consumer(
    name: str, pg: psycopg.Connection[Any], database_url: str, vendors: dict[str, Vendor]
) -> None:
    vendor = vendors[name]
    alert_id = stale_alert(pg)

    drain(outbox_settings(database_url, None, notify_urls_high=vendor.url()), database_url, only="notify")

    texts = vendor.texts()
    assert len(texts) == 1, (texts, vendor.fake.state.refused)
    assert "동기화 지연" in texts[0] and "303" in texts[0] and f"알림 id: {alert_id}" in texts[0]
    row = pg.execute("select status, attempts, delivered_to, last_error from notification_outbox").fetchone()
    assert row is not None and row["status"] == "DONE" and len(row["delivered_to"]) == 1, row


FAILURES = [(v, f) for v in VENDORS for f in ("wrong_secret", "refuse", "http_4xx", "http_5xx")]


@pytest.mark.parametrize(("name", "failure"), FAILURES)
def test_a_vendor_failure_answer_fails_the_delivery_without_leaking_a_secret(
    name: str,
    failure: str,
    pg: psycopg.Connection[Any],
    database_url: str,
    vendors: dict[str, Vendor],
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    vendor = vendors[name]
    configure_logging("DEBUG")  # what LOG_LEVEL=DEBUG gives an operator: the most a log can say
    caplog.set_level(logging.DEBUG)
    if failure != "wrong_secret":
        vendor.fake.state.fail_with = failure
    stale_alert(pg)
    settings = one_attempt_settings(database_url, vendor.url(wrong_secret=failure == "wrong_secret"))

    drain(settings, database_url, only="notify")

    assert vendor.fake.state.messages() == []
    row = pg.execute("select status, attempts, delivered_to, last_error from notification_outbox").fetchone()
    assert row is not None and row["status"] == "PENDING" and row["attempts"] == 1 and row["delivered_to"] == []
    assert row["last_error"].startswith(f"delivery failed on {name}://")
    logs = caplog.text + capsys.readouterr().err
    assert "refused the message" in logs  # the vendor's reason is logged (without the secret)
    for secret in SECRETS:
        assert secret not in row["last_error"] and secret not in logs, secret

    if failure == "http_5xx":  # the vendor recovers: the retry delivers
        vendor.fake.state.fail_with = None
        pg.execute("update notification_outbox set next_attempt_at = now()")
        drain(settings, database_url, only="notify")
        assert len(vendor.texts()) == 1
        assert pg.execute("select status from notification_outbox").fetchone() == {"status": "DONE"}


def test_naverworks_keeps_its_token_and_renews_it_once_after_a_401(
    pg: psycopg.Connection[Any], database_url: str, vendors: dict[str, Vendor]
) -> None:
    vendor = vendors["naverworks"]
    settings = outbox_settings(database_url, None, notify_urls_high=vendor.url())
    stale_alert(pg, 303)
    stale_alert(pg, 304)

    drain(settings, database_url, only="notify")
    assert len(vendor.texts()) == 2 and vendor.fake.token_requests == 1  # one token for both messages

    vendor.fake.revoke_tokens()  # NAVER WORKS no longer takes the cached token
    stale_alert(pg, 305)
    drain(settings, database_url, only="notify")

    assert len(vendor.texts()) == 3 and vendor.fake.token_requests == 2
    assert vendor.fake.state.refused == ["token"]  # one 401, then the fresh token worked
    statuses = pg.execute("select distinct status from notification_outbox").fetchall()
    assert statuses == [{"status": "DONE"}]


def test_naverworks_with_a_wrong_client_secret_stops_at_the_token_endpoint(
    pg: psycopg.Connection[Any], database_url: str, vendors: dict[str, Vendor]
) -> None:
    vendor = vendors["naverworks"]
    stale_alert(pg)

    drain(one_attempt_settings(database_url, vendor.url(wrong_secret=True)), database_url, only="notify")

    assert vendor.fake.state.refused == ["client"] and vendor.fake.token_requests == 1
    assert pg.execute("select status from notification_outbox").fetchone() == {"status": "PENDING"}


@pytest.mark.parametrize(
    "url",
    [
        "kakaowork://key@1001?base=http://hooks.example.com",  # plain http off loopback
        "jandi://15000001/token?base=ftp://127.0.0.1",
        "dooray://acme/only-two/parts",
        "jandi://15000001",
        "naverworks://id:secret@bot/channels/ch?account=a@example.com&keyfile=/nonexistent/private.key",
    ],
)
def test_a_bad_channel_url_stops_the_consumer_at_start_naming_no_secret(url: str) -> None:
    with pytest.raises(ConfigError, match="not a usable Apprise URL") as caught:
        AppriseChannels([url])
    assert "secret" not in str(caught.value) and "token" not in str(caught.value)


@pytest.fixture
def notify_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in ("DATABASE_URL", "NOTIFY_URLS", "NOTIFY_URLS_HIGH"):
        monkeypatch.delenv(name, raising=False)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_notify_test_reports_each_channel_and_fails_when_one_does(
    notify_env: None, vendors: dict[str, Vendor], monkeypatch: pytest.MonkeyPatch
) -> None:
    kakao, jandi = vendors["kakaowork"], vendors["jandi"]
    jandi.fake.state.fail_with = "refuse"
    monkeypatch.setenv("NOTIFY_URLS", kakao.url())
    monkeypatch.setenv("NOTIFY_URLS_HIGH", jandi.url())

    result = CliRunner().invoke(app, ["notify", "test"])

    assert result.exit_code == 1, result.output
    assert "kakaowork://****@1001" in result.stdout and "jandi://15000001/****" in result.stdout
    assert "전송됨" in result.stdout and "실패" in result.stdout
    assert "알림 채널 시험" in kakao.texts()[0]
    assert all(secret not in result.output for secret in SECRETS)


def test_notify_test_with_url_tries_only_that_channel(
    notify_env: None, vendors: dict[str, Vendor], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NOTIFY_URLS", vendors["jandi"].url())

    result = CliRunner().invoke(app, ["notify", "test", "--url", vendors["dooray"].url()])

    assert result.exit_code == 0, result.output
    assert len(vendors["dooray"].texts()) == 1 and vendors["jandi"].texts() == []
    assert "dooray://acme/****/****/****" in result.stdout
