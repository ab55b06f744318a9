"""Delivery to real channels through Apprise URLs (Slack, e-mail, webhooks, ...)."""

from __future__ import annotations

from typing import Protocol

import apprise
import structlog

from ..errors import ConfigError
from .messages import Message
from .plugins import register as register_korean_channels
from .policy import channel_id

log = structlog.get_logger(__name__)
register_korean_channels()  # kakaowork:// jandi:// naverworks:// dooray:// in every Apprise object built here


class Channels(Protocol):
    def send(self, url: str, message: Message) -> bool:
        """Deliver to one channel; True only when the channel accepted it."""
        ...


def _redacted(url: str) -> str:
    return url.split("://", 1)[0] + "://…" + channel_id(url)


class AppriseChannels:
    """One Apprise object per URL, so each channel's result is known on its own (and retried on its own)."""

    def __init__(self, urls: list[str]) -> None:
        self._by_url: dict[str, apprise.Apprise] = {}
        for url in urls:
            ap = apprise.Apprise()
            if not ap.add(url):
                raise ConfigError(f"not a usable Apprise URL in NOTIFY_URLS / NOTIFY_URLS_HIGH: {_redacted(url)}")
            self._by_url[url] = ap

    def send(self, url: str, message: Message) -> bool:
        ap = self._by_url.get(url)
        if ap is None:
            ap = apprise.Apprise()
            if not ap.add(url):
                return False
            self._by_url[url] = ap
        try:
            ok = ap.notify(body=message.body, title=message.title, notify_type=message.notify_type)
        except Exception as exc:  # a plugin bug must not stop the consumer: it is a failed delivery
            log.warning("channel raised", channel=_redacted(url), error=f"{type(exc).__name__}: {exc}")
            return False
        if not ok:
            log.warning("channel refused the notification", channel=_redacted(url))
        return bool(ok)


def redacted(url: str) -> str:
    """How a channel is named in logs and errors (the URL may hold a token)."""
    return _redacted(url)
