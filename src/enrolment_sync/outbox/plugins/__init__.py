"""Apprise plugins for the channels Korean teams read and Apprise lacks: Kakao Work, JANDI, NAVER WORKS, Dooray!.

`register()` adds their schemas to Apprise's plugin manager (a process-wide singleton), so every
`apprise.Apprise()` built afterwards takes `kakaowork://`, `jandi://`, `naverworks://` and `dooray://` URLs.
"""

from __future__ import annotations

from apprise.manager_plugins import NotificationManager

from .dooray import NotifyDooray
from .jandi import NotifyJandi
from .kakaowork import NotifyKakaoWork
from .naverworks import NotifyNaverWorks

__all__ = ["PLUGINS", "NotifyDooray", "NotifyJandi", "NotifyKakaoWork", "NotifyNaverWorks", "register"]

PLUGINS = (NotifyKakaoWork, NotifyJandi, NotifyNaverWorks, NotifyDooray)


def register() -> None:
    """Idempotent: a schema already served by our plugin is left as it is."""
    manager = NotificationManager()
    for plugin in PLUGINS:
        if plugin.protocol not in manager or manager[plugin.protocol] is not plugin:
            manager.add(plugin, schemas=plugin.protocol, force=True)
