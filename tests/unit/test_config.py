"""Settings and connection targets: defaults, refusals, the pooler switch."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from enrolment_sync.config import Settings
from enrolment_sync.db import parse_target
from enrolment_sync.errors import ConfigError


def test_defaults_match_the_documented_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DATABASE_URL", "KVCA_BASE_URL", "KVCA_CLIENT_SECRET", "WORKER_API_TOKEN", "LOG_LEVEL"):
        monkeypatch.delenv(name, raising=False)
    s = Settings(_env_file=None)  # type: ignore[call-arg]
    assert s.database_url is None
    assert (s.kvca_timeout_seconds, s.kvca_max_concurrency, s.kvca_retries) == (10, 8, 3)
    assert (s.alert_cooldown_minutes, s.job_lock_ttl_seconds, s.stale_after_hours) == (60, 300, 26)


def test_environment_is_read_and_secrets_hidden(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KVCA_CLIENT_SECRET", "hunter2")
    monkeypatch.setenv("KVCA_MAX_CONCURRENCY", "16")
    s = Settings(_env_file=None)  # type: ignore[call-arg]
    assert s.kvca_max_concurrency == 16
    assert "hunter2" not in repr(s) and "hunter2" not in str(s.model_dump())


@pytest.mark.parametrize(
    ("name", "value"),
    [("KVCA_MAX_CONCURRENCY", "0"), ("KVCA_TIMEOUT_SECONDS", "-1"), ("LOG_LEVEL", "LOUD"), ("KVCA_RETRIES", "x")],
)
def test_bad_values_name_the_setting(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError, match=name.lower()):
        Settings(_env_file=None)  # type: ignore[call-arg]


def test_demo_secret_is_refused_beyond_loopback() -> None:
    with pytest.raises(ValidationError, match="KVCA_CLIENT_SECRET"):
        Settings(_env_file=None, kvca_base_url="https://lms.example.org")  # type: ignore[call-arg]
    ok = Settings(_env_file=None, kvca_base_url="https://lms.example.org", kvca_client_secret="real")  # type: ignore[call-arg]
    assert ok.kvca_base_url == "https://lms.example.org"


@pytest.mark.parametrize(
    ("url", "prepared"),
    [
        ("postgresql://u:p@db.abc.supabase.co:5432/postgres", True),
        ("postgresql://u:p@aws-0-ap-northeast-2.pooler.supabase.com:6543/postgres", False),
        ("postgresql://u:p@pooler.example:5432/postgres?pgbouncer=true&sslmode=require", False),
    ],
)
def test_transaction_pooler_gets_no_prepared_statements(url: str, prepared: bool) -> None:
    target = parse_target(url)
    assert (target.prepare_threshold is not None) is prepared
    assert "pgbouncer" not in target.conninfo


def test_a_wrong_scheme_is_named() -> None:
    with pytest.raises(ConfigError, match="postgresql://"):
        parse_target("mysql://root@localhost/db")
