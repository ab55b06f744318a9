"""NAVER WORKS bot (API 2.0, service account):
`naverworks://CLIENT_ID:CLIENT_SECRET@BOT_ID/channels/CHANNEL_ID?account=SERVICE_ACCOUNT&keyfile=PRIVATE_KEY_PATH`
(or `/users/USER_ID`).

Token: a JWT (iss client id, sub service account) signed RS256 with the private key, exchanged at
POST {auth}/oauth2/v2.0/token (grant_type jwt-bearer, scope bot); kept until shortly before it expires and
renewed once when the message API answers 401. Message: POST {api}/v1.0/bots/{bot}/channels/{id}/messages
with `{"content": {"type": "text", "text": ...}}`, answered 201 (any 2xx is taken as delivered).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, ClassVar

import jwt
from apprise import NotifyType
from apprise.plugins.base import NotifyBase
from apprise.url import PrivacyMode
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from ._common import Answer, api_base, full_text, improper, post_json, refused, short

AUTH_BASE = "https://auth.worksmobile.com"
API_BASE = "https://www.worksapis.com"
GRANT_TYPE = "urn:ietf:params:oauth:grant-type:jwt-bearer"
SCOPE = "bot"
ASSERTION_LIFETIME_S = 3600
# a token is renewed this long before NAVER WORKS says it expires (clock skew, a slow send)
TOKEN_MARGIN_S = 300
TARGET_KINDS = ("channels", "users")

_tokens: dict[tuple[str, str, str], tuple[str, float]] = {}
_tokens_lock = threading.Lock()

SERVICE = "NAVER WORKS"


def token_from(answer: Answer, *, now_s: float) -> tuple[str, float] | str:
    """(access token, monotonic time to renew at) from the token endpoint's answer, or why there is none."""
    body = answer.body if isinstance(answer.body, dict) else {}
    token = body.get("access_token")
    if answer.status == 200 and isinstance(token, str) and token:
        try:
            expires_in = int(body.get("expires_in") or 0)  # documented as a string of seconds
        except (TypeError, ValueError):
            expires_in = 0
        return token, now_s + max(0, expires_in - TOKEN_MARGIN_S)
    error = body.get("error") or body.get("code")
    detail = body.get("error_description") or body.get("description") or ""
    return f"token request: HTTP {answer.status}, {short(error)}: {short(detail)}"


def naverworks_verdict(answer: Answer) -> str | None:
    """None when the message API accepted the message, else why not (no secret in it)."""
    if 200 <= answer.status < 300:
        return None
    body = answer.body if isinstance(answer.body, dict) else {}
    return f"HTTP {answer.status}, {short(body.get('code'))}: {short(body.get('description') or '')}"


class NotifyNaverWorks(NotifyBase):
    service_name = SERVICE
    protocol = "naverworks"
    setup_url = "https://developers.worksmobile.com/kr/docs/bot-api"
    request_rate_per_sec = 0
    templates = ("{schema}://{client_id}:{client_secret}@{bot_id}/{kind}/{target}",)
    template_tokens: ClassVar[dict[str, Any]] = dict(
        NotifyBase.template_tokens,
        client_id={"name": "Client ID", "type": "string", "required": True, "map_to": "user"},
        client_secret={
            "name": "Client Secret",
            "type": "string",
            "private": True,
            "required": True,
            "map_to": "password",
        },
        bot_id={"name": "Bot ID", "type": "string", "required": True, "map_to": "host"},
        kind={"name": "channels or users", "type": "choice:string", "values": TARGET_KINDS, "required": True},
        target={"name": "Channel or user ID", "type": "string", "required": True},
    )
    template_args: ClassVar[dict[str, Any]] = dict(
        NotifyBase.template_args,
        account={"name": "Service account", "type": "string", "required": True},
        keyfile={"name": "Private key file", "type": "string", "required": True},
        base={"name": "API base", "type": "string"},
    )

    def __init__(
        self,
        kind: str | None = None,
        target: str | None = None,
        account: str | None = None,
        keyfile: str | None = None,
        base: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not (self.user and self.password and self.host and kind in TARGET_KINDS and target and account):
            raise improper(
                SERVICE,
                "naverworks://CLIENT_ID:CLIENT_SECRET@BOT_ID/channels/CHANNEL_ID"
                "?account=SERVICE_ACCOUNT&keyfile=PRIVATE_KEY_PATH",
            )
        self.client_id: str = self.user
        self.client_secret: str = self.password
        self.kind, self.target, self.account = kind, target, str(account)
        self.keyfile = keyfile or ""
        try:
            self.private_key = Path(self.keyfile).read_bytes()
            load_pem_private_key(self.private_key, password=None)
        except (OSError, ValueError, TypeError) as exc:
            raise improper(
                SERVICE, f"keyfile={self.keyfile!r} is not a readable PEM private key ({type(exc).__name__})"
            ) from exc
        try:
            self.auth_base = api_base(base, AUTH_BASE)
            self.api_base = api_base(base, API_BASE)
        except ValueError as exc:
            raise improper(SERVICE, str(exc)) from exc
        self.base_param = base

    @property
    def _token_key(self) -> tuple[str, str, str]:
        return (self.auth_base, self.client_id, self.account)

    def _token(self) -> str | None:
        with _tokens_lock:
            cached = _tokens.get(self._token_key)
        if cached and time.monotonic() < cached[1]:
            return cached[0]
        now = int(time.time())
        assertion = jwt.encode(
            {"iss": self.client_id, "sub": self.account, "iat": now, "exp": now + ASSERTION_LIFETIME_S},
            self.private_key,
            algorithm="RS256",
        )
        form = {
            "assertion": assertion,
            "grant_type": GRANT_TYPE,
            "client_id": self.client_id,
            "client_secret": self.client_secret,
            "scope": SCOPE,
        }
        answer = post_json(
            self,
            f"{self.auth_base}/oauth2/v2.0/token",
            None,
            headers={"Content-Type": "application/x-www-form-urlencoded", "User-Agent": self.app_id},
            data=form,
        )
        if answer is None:
            return None
        got = token_from(answer, now_s=time.monotonic())
        if isinstance(got, str):
            refused(self, got)
            return None
        with _tokens_lock:
            _tokens[self._token_key] = got
        return got[0]

    def _forget(self, token: str) -> None:
        with _tokens_lock:
            if _tokens.get(self._token_key, ("",))[0] == token:
                del _tokens[self._token_key]

    def _post_message(self, token: str, text: str) -> Answer | None:
        path = f"/v1.0/bots/{self.quote(self.host, safe='')}/{self.kind}/{self.quote(self.target, safe='')}/messages"
        return post_json(
            self,
            f"{self.api_base}{path}",
            {"content": {"type": "text", "text": text}},
            headers={"Authorization": f"Bearer {token}", "User-Agent": self.app_id},
        )

    def send(self, body: str, title: str = "", notify_type: NotifyType = NotifyType.INFO, **kwargs: Any) -> bool:
        text = full_text(title, body)
        token = self._token()
        if token is None:
            return False
        answer = self._post_message(token, text)
        if answer is not None and answer.status == 401:  # revoked or expired early: one fresh token, one retry
            self._forget(token)
            token = self._token()
            if token is None:
                return False
            answer = self._post_message(token, text)
        if answer is None:
            return False
        reason = naverworks_verdict(answer)
        if reason:
            return refused(self, reason)
        self.logger.info("NAVER WORKS: message sent")
        return True

    @property
    def url_identifier(self) -> tuple[Any, ...]:
        return (self.protocol, self.user, self.password, self.host, self.kind, self.target, self.api_base)

    def url(self, privacy: bool = False, *args: Any, **kwargs: Any) -> str:
        params = self.url_parameters(*args, privacy=privacy, **kwargs)
        params |= {"account": self.account, "keyfile": self.keyfile}
        if self.base_param:
            params["base"] = self.base_param
        return "{schema}://{client_id}:{secret}@{bot}/{kind}/{target}/?{params}".format(
            schema=self.protocol,
            client_id=self.quote(self.user, safe=""),
            secret=self.pprint(self.password, privacy, mode=PrivacyMode.Secret, safe=""),
            bot=self.quote(self.host, safe=""),
            kind=self.kind,
            target=self.quote(self.target, safe=""),
            params=self.urlencode(params),
        )

    @staticmethod
    def parse_url(url: str) -> dict[str, Any] | None:
        results = NotifyBase.parse_url(url, verify_host=False)
        if not results:
            return results
        parts = NotifyBase.split_path(results["fullpath"])
        if len(parts) == 2:
            results["kind"], results["target"] = parts
        for key in ("account", "keyfile", "base"):
            if results["qsd"].get(key):
                results[key] = NotifyBase.unquote(results["qsd"][key])
        return results
