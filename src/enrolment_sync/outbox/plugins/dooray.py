"""Dooray! messenger incoming hook: `dooray://TENANT/SERVICE_ID/HOOK_ID/TOKEN` →
POST https://TENANT.dooray.com/services/SERVICE_ID/HOOK_ID/TOKEN (a TENANT with a dot is a whole host,
e.g. `dooray://hook.dooray.com/...`).

Body `{"botName", "text", "attachments": [{"title", "text", "color"}]}`. The answer carries
`{"header": {"isSuccessful", "resultCode", "resultMessage"}}`: a 2xx whose header says false is a failure.
"""

from __future__ import annotations

from typing import Any, ClassVar

from apprise import NotifyType
from apprise.plugins.base import NotifyBase
from apprise.url import PrivacyMode

from ._common import Answer, api_base, improper, post_json, refused, short, type_name

DEFAULT_BOT_NAME = "수강 동기화"
COLOR_BY_TYPE = {"info": "blue", "success": "green", "warning": "yellow", "failure": "red"}
# Dooray asks hooks to send at most about one message a second
DOORAY_SECONDS_PER_REQUEST = 1.0

SERVICE = "Dooray!"


def dooray_host(tenant: str) -> str:
    return tenant if "." in tenant else f"{tenant}.dooray.com"


def dooray_verdict(answer: Answer) -> str | None:
    """None when Dooray accepted the message, else why not (no secret in it)."""
    body = answer.body if isinstance(answer.body, dict) else {}
    header = body.get("header")
    header = header if isinstance(header, dict) else {}
    if 200 <= answer.status < 300 and header.get("isSuccessful", True) is not False:
        return None
    if header:
        return f"HTTP {answer.status}, {short(header.get('resultCode'))}: {short(header.get('resultMessage') or '')}"
    return f"HTTP {answer.status}"


class NotifyDooray(NotifyBase):
    service_name = SERVICE
    protocol = "dooray"
    setup_url = "https://helpdesk.dooray.com/"
    request_rate_per_sec = DOORAY_SECONDS_PER_REQUEST
    templates = ("{schema}://{tenant}/{service_id}/{hook_id}/{token}",)
    template_tokens: ClassVar[dict[str, Any]] = dict(
        NotifyBase.template_tokens,
        tenant={"name": "Tenant (or host)", "type": "string", "required": True, "map_to": "host"},
        service_id={"name": "Service ID", "type": "string", "private": True, "required": True},
        hook_id={"name": "Hook ID", "type": "string", "private": True, "required": True},
        token={"name": "Token", "type": "string", "private": True, "required": True},
    )
    template_args: ClassVar[dict[str, Any]] = dict(
        NotifyBase.template_args,
        base={"name": "API base", "type": "string"},
        bot={"name": "Bot name", "type": "string"},
    )

    def __init__(
        self, hook_path: list[str] | None = None, base: str | None = None, bot: str | None = None, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.hook_path = list(hook_path or [])
        if not self.host or len(self.hook_path) != 3:
            raise improper(SERVICE, "dooray://TENANT/SERVICE_ID/HOOK_ID/TOKEN")
        try:
            self.base = api_base(base, f"https://{dooray_host(self.host)}")
        except ValueError as exc:
            raise improper(SERVICE, str(exc)) from exc
        self.base_param = base
        self.bot = bot or DEFAULT_BOT_NAME

    def send(self, body: str, title: str = "", notify_type: NotifyType = NotifyType.INFO, **kwargs: Any) -> bool:
        color = COLOR_BY_TYPE.get(type_name(notify_type), "blue")
        payload = {
            "botName": self.bot,
            "text": title or body,
            "attachments": [{"text": body, "color": color}] if title else [],
        }
        path = "/".join(self.quote(p, safe="") for p in self.hook_path)
        answer = post_json(self, f"{self.base}/services/{path}", payload, headers={"User-Agent": self.app_id})
        if answer is None:
            return False
        reason = dooray_verdict(answer)
        if reason:
            return refused(self, reason)
        self.logger.info("Dooray!: message sent")
        return True

    @property
    def url_identifier(self) -> tuple[Any, ...]:
        return (self.protocol, self.host, *self.hook_path, self.base)

    def url(self, privacy: bool = False, *args: Any, **kwargs: Any) -> str:
        params = self.url_parameters(*args, privacy=privacy, **kwargs)
        if self.base_param:
            params["base"] = self.base_param
        if self.bot != DEFAULT_BOT_NAME:
            params["bot"] = self.bot
        return "{schema}://{tenant}/{path}/?{params}".format(
            schema=self.protocol,
            tenant=self.host,
            path="/".join(self.pprint(p, privacy, mode=PrivacyMode.Secret, safe="") for p in self.hook_path),
            params=self.urlencode(params),
        )

    @staticmethod
    def parse_url(url: str) -> dict[str, Any] | None:
        results = NotifyBase.parse_url(url, verify_host=False)
        if not results:
            return results
        parts = NotifyBase.split_path(results["fullpath"])
        results["hook_path"] = parts[1:] if parts[:1] == ["services"] else parts
        for key in ("base", "bot"):
            if results["qsd"].get(key):
                results[key] = NotifyBase.unquote(results["qsd"][key])
        return results
