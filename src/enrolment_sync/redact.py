"""Secret values never leave the process: every text stored, logged, answered or sent passes `redact` first.

The secrets are values, not patterns: the KVCA client secret and every access token the client received,
WORKER_API_TOKEN, the Google service account's key (and any long line of its file), the passwords inside
notification and database URLs. They are registered once known (`register_settings`, and the KVCA client for
its tokens) and masked wherever they appear, whoever wrote the text: an upstream that echoes a request,
a library's exception, our own message. Each is also masked in the forms it takes inside JSON and URLs.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterable, Mapping, MutableMapping
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

if TYPE_CHECKING:
    from .config import Settings

MASK = "[redacted]"
MIN_SECRET_CHARS = 6  # shorter values would mask ordinary words (and nothing that short is a real secret)
MIN_KEY_LINE_CHARS = 16  # a line of a PEM key long enough to be worth masking on its own

_lock = threading.Lock()
_known: set[str] = set()
_pattern: re.Pattern[str] | None = None


def forms(secret: str) -> set[str]:
    """The secret as it appears raw, JSON-escaped and percent-encoded (a PEM key's newlines differ in each)."""
    found = {secret, json.dumps(secret, ensure_ascii=False)[1:-1], quote(secret, safe="")}
    if "-----BEGIN" in secret:  # a key cut short in a message still gives away its lines
        found |= {line.strip() for line in secret.splitlines() if len(line.strip()) >= MIN_KEY_LINE_CHARS}
        found -= {line for line in found if line.startswith("-----")}
    return {f for f in found if len(f) >= MIN_SECRET_CHARS}


def register(*secrets: str | None) -> None:
    """Mask these values from now on (None, empty and too-short values are ignored)."""
    global _pattern
    new = set()
    for secret in secrets:
        if secret and len(secret) >= MIN_SECRET_CHARS:
            new |= forms(secret)
    with _lock:
        if new - _known:
            _known.update(new)
            _pattern = None


def _compiled() -> re.Pattern[str] | None:
    global _pattern
    with _lock:
        if _pattern is None and _known:
            # longest first, so a secret that contains another is masked whole
            _pattern = re.compile("|".join(re.escape(s) for s in sorted(_known, key=len, reverse=True)))
        return _pattern


def redact(text: str) -> str:
    pattern = _compiled()
    if pattern is None or not text:
        return text
    return pattern.sub(MASK, text)


def redact_json(value: Any) -> Any:
    """Every string in a JSON-like value (keys too), redacted; other values as they are."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, Mapping):
        return {redact_json(k): redact_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_json(v) for v in value]
    return value


def structlog_processor(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """For structlog's chain, after the traceback is formatted: every value rendered as text is redacted."""
    for key, value in list(event_dict.items()):
        if isinstance(value, str):
            event_dict[key] = redact(value)
        elif isinstance(value, BaseException):
            event_dict[key] = redact(f"{type(value).__name__}: {value}")
        elif isinstance(value, Mapping | list | tuple):
            event_dict[key] = redact_json(value)
    return event_dict


def url_passwords(urls: Iterable[str]) -> list[str]:
    """The password part of each URL (`scheme://user:password@host/...`), where there is one."""
    found = []
    for url in urls:
        try:
            password = urlsplit(url.strip()).password
        except ValueError:
            continue
        if password:
            found.append(password)
    return found


def _service_account_secrets(path: Path | None) -> list[str]:
    if path is None:
        return []
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return []
    try:
        info = json.loads(text)
    except ValueError:
        return [text.strip()]
    if not isinstance(info, dict):
        return []
    return [str(info[k]) for k in ("private_key", "private_key_id") if info.get(k)]


def register_settings(settings: Settings) -> None:
    """Every secret the settings hold or point at."""
    register(
        settings.kvca_client_secret.get_secret_value(),
        settings.worker_api_token.get_secret_value() if settings.worker_api_token else None,
        *url_passwords(re.split(r"[\s,]+", f"{settings.notify_urls} {settings.notify_urls_high}")),
        *url_passwords([settings.database_url.get_secret_value()] if settings.database_url else []),
        *_service_account_secrets(settings.google_service_account_file),
    )
