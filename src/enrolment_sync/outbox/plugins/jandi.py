"""JANDI incoming webhook: `jandi://TEAM_ID/TOKEN` → POST {base}/connect-api/webhook/TEAM_ID/TOKEN.

JANDI requires `Accept: application/vnd.tosslab.jandi-v2+json` and a JSON body `{"body", "connectColor",
"connectInfo": [{"title", "description"}]}` (its "Receiving Incoming Webhooks" guide). The guide does not
document the answer: a 2xx is taken as delivered unless its body is an error object (`code` + `msg`).
"""

from __future__ import annotations

from typing import Any, ClassVar

from apprise import NotifyType
from apprise.plugins.base import NotifyBase
from apprise.url import PrivacyMode

from ._common import Answer, api_base, color_of, improper, post_json, refused, short

DEFAULT_BASE = "https://wh.jandi.com"
ACCEPT = "application/vnd.tosslab.jandi-v2+json"
SUCCESS_CODES = (None, 0, "0", 200, "200")

SERVICE = "JANDI"


def jandi_verdict(answer: Answer) -> str | None:
    """None when JANDI accepted the message, else why not (no secret in it)."""
    body = answer.body if isinstance(answer.body, dict) else {}
    code, msg = body.get("code"), body.get("msg")
    if 200 <= answer.status < 300 and code in SUCCESS_CODES:
        return None
    if code is not None or msg:
        return f"HTTP {answer.status}, code {short(code)}: {short(msg or '')}"
    return f"HTTP {answer.status}"


class NotifyJandi(NotifyBase):
    service_name = SERVICE
    protocol = "jandi"
    setup_url = "https://support.jandi.com/en/articles/6352697-receiving-incoming-webhooks-in-jandi"
    request_rate_per_sec = 0
    templates = ("{schema}://{team}/{token}",)
    template_tokens: ClassVar[dict[str, Any]] = dict(
        NotifyBase.template_tokens,
        team={"name": "Team ID", "type": "string", "required": True, "map_to": "host"},
        token={"name": "Webhook token", "type": "string", "private": True, "required": True},
    )
    template_args: ClassVar[dict[str, Any]] = dict(
        NotifyBase.template_args, base={"name": "API base", "type": "string"}
    )

    def __init__(self, token: str | None = None, base: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.token = token or ""
        if not self.host or not self.token or "/" in self.token:
            raise improper(SERVICE, "jandi://TEAM_ID/TOKEN (the two last parts of the webhook URL)")
        try:
            self.base = api_base(base, DEFAULT_BASE)
        except ValueError as exc:
            raise improper(SERVICE, str(exc)) from exc
        self.base_param = base

    def send(self, body: str, title: str = "", notify_type: NotifyType = NotifyType.INFO, **kwargs: Any) -> bool:
        payload = {
            "body": title or body,
            "connectColor": color_of(notify_type),
            "connectInfo": [{"title": title, "description": body}] if title else [],
        }
        answer = post_json(
            self,
            f"{self.base}/connect-api/webhook/{self.quote(self.host, safe='')}/{self.quote(self.token, safe='')}",
            payload,
            headers={"Accept": ACCEPT, "User-Agent": self.app_id},
        )
        if answer is None:
            return False
        reason = jandi_verdict(answer)
        if reason:
            return refused(self, reason)
        self.logger.info("JANDI: message sent")
        return True

    @property
    def url_identifier(self) -> tuple[Any, ...]:
        return (self.protocol, self.host, self.token, self.base)

    def url(self, privacy: bool = False, *args: Any, **kwargs: Any) -> str:
        params = self.url_parameters(*args, privacy=privacy, **kwargs)
        if self.base_param:
            params["base"] = self.base_param
        return "{schema}://{team}/{token}/?{params}".format(
            schema=self.protocol,
            team=self.quote(self.host, safe=""),
            token=self.pprint(self.token, privacy, mode=PrivacyMode.Secret, safe=""),
            params=self.urlencode(params),
        )

    @staticmethod
    def parse_url(url: str) -> dict[str, Any] | None:
        results = NotifyBase.parse_url(url, verify_host=False)
        if not results:
            return results
        parts = NotifyBase.split_path(results["fullpath"])
        results["token"] = parts[0] if len(parts) == 1 else ""
        if results["qsd"].get("base"):
            results["base"] = NotifyBase.unquote(results["qsd"]["base"])
        return results
