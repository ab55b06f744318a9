"""Kakao Work bot: `kakaowork://APP_KEY@CONVERSATION_ID` → POST {base}/v1/messages.send.

Kakao Work answers with a body that says whether it worked (`{"success": true, ...}` or
`{"success": false, "error": {"code": ..., "message": ...}}`): the body decides, not only the status.
"""

from __future__ import annotations

from typing import Any, ClassVar

from apprise import NotifyType
from apprise.plugins.base import NotifyBase
from apprise.url import PrivacyMode

from ._common import Answer, api_base, full_text, improper, post_json, refused, short

DEFAULT_BASE = "https://api.kakaowork.com"

SERVICE = "Kakao Work"


def kakaowork_verdict(answer: Answer) -> str | None:
    """None when Kakao Work accepted the message, else why not (no secret in it)."""
    body = answer.body if isinstance(answer.body, dict) else {}
    if answer.status == 200 and body.get("success") is True:
        return None
    error = body.get("error")
    code, message = (error.get("code"), error.get("message")) if isinstance(error, dict) else (None, None)
    if code or message:
        return f"HTTP {answer.status}, error {short(code)}: {short(message or '')}"
    return f"HTTP {answer.status} without success=true"


class NotifyKakaoWork(NotifyBase):
    service_name = SERVICE
    protocol = "kakaowork"
    setup_url = "https://docs.kakaoi.ai/kakao_work/webapireference/messages/"
    request_rate_per_sec = 0
    templates = ("{schema}://{app_key}@{conversation_id}",)
    template_tokens: ClassVar[dict[str, Any]] = dict(
        NotifyBase.template_tokens,
        app_key={"name": "App Key", "type": "string", "private": True, "required": True, "map_to": "user"},
        conversation_id={"name": "Conversation ID", "type": "string", "required": True, "map_to": "host"},
    )
    template_args: ClassVar[dict[str, Any]] = dict(
        NotifyBase.template_args, base={"name": "API base", "type": "string"}
    )

    def __init__(self, base: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not self.user or not self.host:
            raise improper(SERVICE, "kakaowork://APP_KEY@CONVERSATION_ID")
        try:
            self.base = api_base(base, DEFAULT_BASE)
        except ValueError as exc:
            raise improper(SERVICE, str(exc)) from exc
        self.base_param = base

    def send(self, body: str, title: str = "", notify_type: NotifyType = NotifyType.INFO, **kwargs: Any) -> bool:
        answer = post_json(
            self,
            f"{self.base}/v1/messages.send",
            {"conversation_id": self.host, "text": full_text(title, body)},
            headers={"Authorization": f"Bearer {self.user}", "User-Agent": self.app_id},
        )
        if answer is None:
            return False
        reason = kakaowork_verdict(answer)
        if reason:
            return refused(self, reason)
        self.logger.info("Kakao Work: message sent")
        return True

    @property
    def url_identifier(self) -> tuple[Any, ...]:
        return (self.protocol, self.user, self.host, self.base)

    def url(self, privacy: bool = False, *args: Any, **kwargs: Any) -> str:
        params = self.url_parameters(*args, privacy=privacy, **kwargs)
        if self.base_param:
            params["base"] = self.base_param
        return "{schema}://{key}@{conversation}/?{params}".format(
            schema=self.protocol,
            key=self.pprint(self.user, privacy, mode=PrivacyMode.Secret, safe=""),
            conversation=self.quote(self.host, safe=""),
            params=self.urlencode(params),
        )

    @staticmethod
    def parse_url(url: str) -> dict[str, Any] | None:
        results = NotifyBase.parse_url(url, verify_host=False)
        if not results:
            return results
        if results["qsd"].get("base"):
            results["base"] = NotifyBase.unquote(results["qsd"]["base"])
        return results
