"""What the Korean channel plugins share: the API base override, the JSON POST, secret-free failure texts."""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import requests
from apprise import NotifyType
from apprise.exception import AppriseImproperlyConfigured
from apprise.plugins.base import NotifyBase

LOOPBACK_NAMES = frozenset({"localhost"})
COLOR_BY_TYPE = {"info": "#3B82F6", "success": "#22C55E", "warning": "#F59E0B", "failure": "#EF4444"}
MAX_REASON_CHARS = 200


@dataclass(frozen=True)
class Answer:
    """A vendor's answer, reduced to what the verdicts look at."""

    status: int
    body: Any  # parsed JSON, or None when the body is empty or not JSON


def api_base(value: str | None, default: str) -> str:
    """The API base: the vendor's, or `?base=` (https anywhere; plain http only on a loopback host)."""
    if not value:
        return default
    parts = urlsplit(value.strip())
    host = parts.hostname or ""
    if parts.scheme not in ("http", "https") or not host or parts.query or parts.fragment:
        raise ValueError("base must be an http(s) address with no query, e.g. https://proxy.example.com")
    if parts.scheme == "http" and not _is_loopback(host):
        raise ValueError(f"base: plain http is allowed only for a loopback host, not {host!r}")
    return value.strip().rstrip("/")


def _is_loopback(host: str) -> bool:
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def full_text(title: str, body: str) -> str:
    """Title and body as one chat message (channels with a single text field)."""
    return f"{title}\n\n{body}" if title else body


def type_name(notify_type: NotifyType | str) -> str:
    return notify_type.value if isinstance(notify_type, NotifyType) else str(notify_type)


def color_of(notify_type: NotifyType | str) -> str:
    return COLOR_BY_TYPE.get(type_name(notify_type), COLOR_BY_TYPE["info"])


def short(value: Any) -> str:
    """A vendor's error text, bounded (it goes into logs)."""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text[:MAX_REASON_CHARS]


def post_json(
    plugin: NotifyBase,
    url: str,
    payload: Any,
    *,
    headers: dict[str, str],
    data: dict[str, str] | None = None,
) -> Answer | None:
    """POST JSON (UTF-8, Korean unescaped) or a form; None when no answer came (already logged, without the URL).

    Only the exception's type is logged: requests puts the address, which holds the token on webhook channels,
    in its messages.
    """
    if data is None:
        content: Any = json.dumps(payload, ensure_ascii=False).encode("utf-8")
        headers = {"Content-Type": "application/json; charset=utf-8", **headers}
    else:
        content = data
    plugin.throttle()
    try:
        r = requests.post(
            url,
            data=content,
            headers=headers,
            verify=plugin.verify_certificate,
            timeout=plugin.request_timeout,
            allow_redirects=False,
        )
    except requests.RequestException as exc:
        plugin.logger.warning("%s: no answer (%s)", plugin.service_name, type(exc).__name__)
        return None
    try:
        body = r.json() if r.content else None
    except ValueError:
        body = None
    return Answer(r.status_code, body)


def improper(service: str, reason: str) -> AppriseImproperlyConfigured:
    """The error a plugin raises for a bad URL; logged too, since Apprise.add() keeps only True/False."""
    NotifyBase.logger.warning("%s URL: %s", service, reason)
    return AppriseImproperlyConfigured(f"{service}: {reason}")


def refused(plugin: NotifyBase, reason: str) -> bool:
    plugin.logger.warning("%s refused the message: %s", plugin.service_name, reason)
    return False
