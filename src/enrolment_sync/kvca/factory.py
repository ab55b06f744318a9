"""Building the KVCA client from Settings (the job takes a factory, so tests and benchmarks can count calls)."""

from __future__ import annotations

from collections.abc import Callable

from .. import redact
from ..config import Settings
from .client import KvcaClient

ClientFactory = Callable[[Settings], KvcaClient]


def client_from_settings(settings: Settings) -> KvcaClient:
    redact.register_settings(settings)
    return KvcaClient(
        base_url=settings.kvca_base_url,
        client_id=settings.kvca_client_id,
        client_secret=settings.kvca_client_secret.get_secret_value(),
        timeout_s=settings.kvca_timeout_seconds,
        max_concurrency=settings.kvca_max_concurrency,
        retries=settings.kvca_retries,
        backoff_base_s=settings.kvca_backoff_base_seconds,
        backoff_max_s=settings.kvca_backoff_max_seconds,
        page_size=settings.kvca_page_size,
        max_pages=settings.kvca_max_pages,
        max_requests_per_second=settings.kvca_max_requests_per_second,
    )
