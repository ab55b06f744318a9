"""Settings: the only place that reads the environment (env vars and an optional `.env`)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from urllib.parse import urlsplit

import platformdirs
from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from .alert_policy import parse_quiet_hours
from .errors import ConfigError

JOB_NAME = "enrolment_sync"
DEFAULT_KVCA_BASE_URL = "http://127.0.0.1:18081"
DEMO_CLIENT_SECRET = "demo-secret"  # the simulator's; refused for any upstream beyond loopback
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
MIN_OPS_PASSWORD_CHARS = 8


def _default_home() -> Path:
    return Path(platformdirs.user_data_dir("enrolment-sync", appauthor=False))


class Settings(BaseSettings):
    """Every tunable of the worker. Units are in the names; secrets are `SecretStr` and never logged."""

    # hide_input_in_errors: a refused value may be a secret (a password, a URL with one), never echo it.
    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", hide_input_in_errors=True
    )

    database_url: SecretStr | None = Field(
        default=None,
        description="Postgres URL. Unset: an embedded Postgres under ENROLMENT_SYNC_HOME, migrated on start.",
    )
    enrolment_sync_home: Path = Field(default_factory=_default_home)

    kvca_base_url: str = DEFAULT_KVCA_BASE_URL
    kvca_client_id: str = "demo-client"
    kvca_client_secret: SecretStr = SecretStr(DEMO_CLIENT_SECRET)
    kvca_timeout_seconds: float = Field(default=10.0, gt=0)
    kvca_max_concurrency: int = Field(default=8, ge=1, le=256)
    kvca_retries: int = Field(default=3, ge=0, le=20)
    kvca_backoff_base_seconds: float = Field(default=0.5, ge=0)
    kvca_backoff_max_seconds: float = Field(default=30.0, ge=0)
    kvca_page_size: int = Field(default=100, ge=1, le=100)
    kvca_max_pages: int = Field(
        default=1000,
        ge=1,
        le=1_000_000,
        description="Most pages one list may take; an answer claiming more fails the run, naming the endpoint.",
    )
    kvca_max_requests_per_second: float = Field(
        default=5000,
        gt=0,
        description="Most upstream requests per second (beside KVCA_MAX_CONCURRENCY in flight).",
    )

    alert_cooldown_minutes: float = Field(default=60, ge=0)
    job_lock_ttl_seconds: float = Field(default=300, gt=0)
    stale_after_hours: float = Field(default=26, gt=0)

    worker_api_token: SecretStr | None = None
    log_level: str = "INFO"

    ops_admin_password: SecretStr | None = Field(
        default=None, description="Console login that may act (docs/console.md)."
    )
    ops_readonly_password: SecretStr | None = Field(default=None, description="Console login that may only look.")
    ops_session_secret: SecretStr | None = Field(
        default=None, description="Signs console sessions; unset: a random one per process (logins end on restart)."
    )
    ops_session_hours: float = Field(default=12, gt=0, le=24 * 30)
    ops_refresh_seconds: float = Field(default=15, ge=0)

    retention_interval_seconds: float = Field(default=3600, ge=0, description="How often serve prunes; 0: never.")
    retention_runs_days: float = Field(default=90, gt=0)
    retention_failed_runs_days: float = Field(default=365, gt=0)
    retention_resolved_alerts_days: float = Field(default=180, gt=0)
    retention_done_requests_days: float = Field(default=30, gt=0)
    retention_batch_rows: int = Field(default=1000, ge=1, le=100_000)

    outbox_max_attempts: int = Field(default=8, ge=1)
    outbox_lease_seconds: float = Field(default=120, gt=0)
    outbox_backoff_base_seconds: float = Field(default=5, ge=0)
    outbox_backoff_max_seconds: float = Field(default=3600, ge=0)
    outbox_poll_interval_seconds: float = Field(default=2, gt=0)
    google_service_account_file: Path | None = None
    google_sheet_id: str | None = None
    sheets_writes_per_minute: int = Field(default=60, ge=1)
    notify_urls: str = ""
    notify_urls_high: str = ""
    google_sheets_api_url: str | None = Field(
        default=None,
        description="Send Sheets API calls here instead of https://sheets.googleapis.com (the fake, on loopback).",
    )
    sheets_reads_per_minute: int = Field(default=60, ge=1)
    outbox_sheet_batch_size: int = Field(default=500, ge=1, le=5000)
    outbox_notify_batch_size: int = Field(default=20, ge=1, le=500)
    outbox_digest_max_wait_seconds: float = Field(default=900, ge=0)
    outbox_alert_lookback_hours: float = Field(default=24, gt=0)
    outbox_done_retention_hours: float = Field(default=720, ge=1)

    scheduler_tick_seconds: float = Field(default=1.0, gt=0, le=60)
    schedule_grace_minutes: float = Field(default=30, gt=0)
    schedule_pause_after_failures: int = Field(default=6, ge=0)
    retry_delays: str = "5m,15m,45m"
    request_lock_wait_seconds: float = Field(default=900, ge=0)
    request_lease_seconds: float = Field(default=60, gt=0)
    request_max_attempts: int = Field(default=3, ge=1)
    request_poll_interval_seconds: float = Field(default=1.0, gt=0, le=60)
    # the alert lifecycle (docs/alerts.md)
    quiet_hours: str = Field(
        default="", description="KST window, e.g. 22:00-08:00: notifications below high wait for its end (one digest)."
    )
    notify_urls_escalate: str = Field(default="", description="Apprise URLs for high alerts nobody took up in time.")
    escalate_after_minutes: float = Field(default=30, gt=0)
    mass_change_share: float = Field(default=0.2, gt=0, le=1)
    mass_change_min_rows: int = Field(default=20, ge=1)

    @field_validator("log_level")
    @classmethod
    def _upper_level(cls, value: str) -> str:
        value = value.upper()
        if value not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise ValueError("LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR")
        return value

    @field_validator("retry_delays")
    @classmethod
    def _durations(cls, value: str) -> str:
        from .scheduler.slots import parse_durations_s

        try:
            parse_durations_s(value)
        except ConfigError as exc:
            raise ValueError(f"RETRY_DELAYS: {exc}") from exc
        return value

    @field_validator("quiet_hours")
    @classmethod
    def _quiet_hours(cls, value: str) -> str:
        parse_quiet_hours(value)  # its ValueError names the expected shape
        return value.strip()

    @model_validator(mode="after")
    def _console_passwords(self) -> Settings:
        admin, readonly = self.ops_admin_password, self.ops_readonly_password
        for name, value in (("OPS_ADMIN_PASSWORD", admin), ("OPS_READONLY_PASSWORD", readonly)):
            if value is not None and len(value.get_secret_value()) < MIN_OPS_PASSWORD_CHARS:
                raise ValueError(f"{name} must be at least {MIN_OPS_PASSWORD_CHARS} characters")
        if admin is not None and readonly is not None and admin.get_secret_value() == readonly.get_secret_value():
            raise ValueError("OPS_ADMIN_PASSWORD and OPS_READONLY_PASSWORD must differ (the password decides the role)")
        return self

    @model_validator(mode="after")
    def _no_demo_credentials_beyond_loopback(self) -> Settings:
        host = urlsplit(self.kvca_base_url).hostname or ""
        demo = self.kvca_client_secret.get_secret_value() == DEMO_CLIENT_SECRET
        if demo and host not in LOOPBACK_HOSTS:
            raise ValueError(
                f"KVCA_BASE_URL points at {host}, but KVCA_CLIENT_SECRET is the simulator's demo value: "
                "set KVCA_CLIENT_ID and KVCA_CLIENT_SECRET"
            )
        return self

    @property
    def retry_delays_s(self) -> tuple[float, ...]:
        from .scheduler.slots import parse_durations_s

        return parse_durations_s(self.retry_delays)


def explain_settings_error(exc: ValidationError) -> list[str]:
    """One line per problem: the variable's name and what is wrong, never the value (it may be a secret).

    Built from the error's parts rather than its text, so no pydantic version can put the input back in.
    """
    lines = []
    for err in exc.errors(include_input=False, include_url=False):
        name = ".".join(str(part) for part in err["loc"]).upper()
        what = err["msg"].removeprefix("Value error, ")
        lines.append(f"{name}: {what}" if name else what)
    return lines


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
