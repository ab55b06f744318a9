"""Loopback fakes of the Korean chat vendors, following each one's documented request and answer.

One Starlette app per vendor, served on 127.0.0.1 by `runtime.ThreadedServer`. Each fake checks what the
vendor checks (path, credentials, required headers, body shape) and answers as the vendor does, success and
failure alike; `fail_with` makes it give one of the vendor's failure answers instead:

- `"refuse"`: the vendor's "it did not work" answer on HTTP 200 where the vendor has one (Kakao Work
  `success: false`, Dooray! `header.isSuccessful: false`, JANDI `code`/`msg`), a 403 for NAVER WORKS;
- `"http_4xx"`: 400 with the vendor's error body; `"http_5xx"`: 503.

Documented by the vendors (see docs/outbox.md): the paths, headers and request bodies, Kakao Work's
`success`/`error` answer, Dooray!'s `header` answer, NAVER WORKS' token exchange and 201. Not documented
publicly, so chosen here: the exact error codes and texts, JANDI's answer body.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import parse_qsl

import jwt
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .servers import ThreadedServer

Failure = Literal["refuse", "http_4xx", "http_5xx"]
JANDI_ACCEPT = "application/vnd.tosslab.jandi-v2+json"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
NAVERWORKS_TOKEN_SECONDS = 86400


@dataclass
class VendorState:
    """What a fake received and how it should answer next (shared with the server thread)."""

    received: list[dict[str, Any]] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    fail_with: Failure | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def accept(self, message: dict[str, Any]) -> None:
        with self.lock:
            self.received.append(message)

    def refuse(self, reason: str) -> None:
        with self.lock:
            self.refused.append(reason)

    def messages(self) -> list[dict[str, Any]]:
        with self.lock:
            return list(self.received)

    def reset(self) -> None:
        with self.lock:
            self.received.clear()
            self.refused.clear()
            self.fail_with = None


async def _json_object(request: Request) -> dict[str, Any] | None:
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
        return None
    try:
        body = await request.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


async def _form(request: Request) -> dict[str, str]:
    """A urlencoded form (the token endpoint's only content type), parsed without python-multipart."""
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/x-www-form-urlencoded":
        return {}
    return dict(parse_qsl((await request.body()).decode("utf-8")))


class _Fake:
    """A vendor's app on a loopback port; `base_url` once entered."""

    def __init__(self, routes: list[Route]) -> None:
        self.state = VendorState()
        self.server = ThreadedServer(Starlette(routes=routes))
        self.base_url = ""

    def __enter__(self) -> Any:
        self.server.__enter__()
        self.base_url = self.server.base_url
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.__exit__(*exc)

    def _failure(self, refuse: Callable[[], Response], error_body: dict[str, Any]) -> Response | None:
        mode = self.state.fail_with
        if mode == "refuse":
            return refuse()
        if mode == "http_4xx":
            return JSONResponse(error_body, status_code=400)
        if mode == "http_5xx":
            return Response("Service Unavailable", status_code=503)
        return None


class KakaoWorkFake(_Fake):
    """POST /v1/messages.send, `Authorization: Bearer APP_KEY`, JSON only; answers `{"success": ...}`."""

    def __init__(self, *, app_key: str, conversation_ids: tuple[str, ...] = ("1001",)) -> None:
        self.app_key = app_key
        self.conversation_ids = conversation_ids
        super().__init__([Route("/v1/messages.send", self.send, methods=["POST"])])

    def apprise_url(self, *, app_key: str | None = None, conversation_id: str | None = None) -> str:
        return (
            f"kakaowork://{app_key or self.app_key}@{conversation_id or self.conversation_ids[0]}?base={self.base_url}"
        )

    @staticmethod
    def _error(code: str, message: str, status: int = 200) -> JSONResponse:
        return JSONResponse({"success": False, "error": {"code": code, "message": message}}, status_code=status)

    async def send(self, request: Request) -> Response:
        if request.headers.get("authorization") != f"Bearer {self.app_key}":
            self.state.refuse("app key")
            return self._error("unauthorized", "invalid app key", 401)
        body = await _json_object(request)
        if body is None or not isinstance(body.get("conversation_id"), str) or not isinstance(body.get("text"), str):
            self.state.refuse("body")
            return self._error("invalid_parameter", "conversation_id and text are required (application/json)", 400)
        if body["conversation_id"] not in self.conversation_ids:
            self.state.refuse("conversation")
            return self._error("conversation_not_found", "conversation not found")
        failure = self._failure(
            lambda: self._error("bot_not_in_conversation", "the bot is not a member of the conversation"),
            {"success": False, "error": {"code": "invalid_parameter", "message": "bad request"}},
        )
        if failure is not None:
            return failure
        self.state.accept(body)
        message = {"id": str(len(self.state.messages())), "conversation_id": body["conversation_id"]}
        return JSONResponse({"success": True, "message": {**message, "text": body["text"]}})


class JandiFake(_Fake):
    """POST /connect-api/webhook/{team}/{token} with JANDI's Accept header and its body shape."""

    def __init__(self, *, team: str = "15000001", token: str) -> None:
        self.team, self.token = team, token
        super().__init__([Route("/connect-api/webhook/{team}/{token}", self.send, methods=["POST"])])

    def apprise_url(self, *, token: str | None = None) -> str:
        return f"jandi://{self.team}/{token or self.token}?base={self.base_url}"

    async def send(self, request: Request) -> Response:
        if (request.path_params["team"], request.path_params["token"]) != (self.team, self.token):
            self.state.refuse("webhook")
            return JSONResponse({"code": 40400, "msg": "webhook not found"}, status_code=404)
        if request.headers.get("accept") != JANDI_ACCEPT:
            self.state.refuse("accept")
            return JSONResponse({"code": 40000, "msg": "Accept must be " + JANDI_ACCEPT}, status_code=400)
        body = await _json_object(request)
        if body is None or not _jandi_shape(body):
            self.state.refuse("body")
            return JSONResponse({"code": 40000, "msg": "body is required"}, status_code=400)
        failure = self._failure(
            lambda: JSONResponse({"code": 50001, "msg": "topic is archived"}),
            {"code": 40000, "msg": "bad request"},
        )
        if failure is not None:
            return failure
        self.state.accept(body)
        return JSONResponse({})


def _jandi_shape(body: dict[str, Any]) -> bool:
    info = body.get("connectInfo", [])
    return (
        isinstance(body.get("body"), str)
        and bool(body["body"])
        and isinstance(body.get("connectColor", ""), str)
        and isinstance(info, list)
        and all(isinstance(i, dict) and set(i) <= {"title", "description", "imageUrl"} for i in info)
    )


class DoorayFake(_Fake):
    """POST /services/{service}/{hook}/{token}; answers `{"header": {"isSuccessful", ...}}`."""

    def __init__(self, *, hook_path: tuple[str, str, str]) -> None:
        self.hook_path = hook_path
        super().__init__([Route("/services/{a}/{b}/{c}", self.send, methods=["POST"])])

    def apprise_url(self, *, token: str | None = None) -> str:
        a, b, c = self.hook_path
        return f"dooray://acme/{a}/{b}/{token or c}?base={self.base_url}"

    @staticmethod
    def _header(ok: bool, code: int, message: str, status: int = 200) -> JSONResponse:
        body = {"header": {"isSuccessful": ok, "resultCode": code, "resultMessage": message}}
        return JSONResponse(body, status_code=status)

    async def send(self, request: Request) -> Response:
        p = request.path_params
        if (p["a"], p["b"], p["c"]) != self.hook_path:
            self.state.refuse("hook")
            return self._header(False, -404, "hook not found", 404)
        body = await _json_object(request)
        attachments = (body or {}).get("attachments", [])
        if (
            body is None
            or not isinstance(body.get("botName"), str)
            or not isinstance(body.get("text"), str)
            or not isinstance(attachments, list)
        ):
            self.state.refuse("body")
            return self._header(False, -400, "botName and text are required", 400)
        failure = self._failure(
            lambda: self._header(False, -100, "the hook is disabled"),
            {"header": {"isSuccessful": False, "resultCode": -400, "resultMessage": "bad request"}},
        )
        if failure is not None:
            return failure
        self.state.accept(body)
        return self._header(True, 0, "")


class NaverWorksFake(_Fake):
    """Token endpoint (JWT bearer grant, RS256 assertion checked with the public key) and the bot message API."""

    def __init__(
        self,
        *,
        client_id: str,
        client_secret: str,
        service_account: str,
        public_key_pem: bytes,
        bot_id: str = "2000001",
        channel_id: str = "ch-ops",
    ) -> None:
        self.client_id, self.client_secret, self.service_account = client_id, client_secret, service_account
        self.public_key_pem = public_key_pem
        self.bot_id, self.channel_id = bot_id, channel_id
        self.tokens: set[str] = set()
        self.token_requests = 0
        self._serial = itertools.count(1)
        super().__init__(
            [
                Route("/oauth2/v2.0/token", self.token, methods=["POST"]),
                Route("/v1.0/bots/{bot}/{kind}/{target}/messages", self.message, methods=["POST"]),
            ]
        )

    def apprise_url(self, *, keyfile: str, client_secret: str | None = None) -> str:
        return (
            f"naverworks://{self.client_id}:{client_secret or self.client_secret}@{self.bot_id}/channels/"
            f"{self.channel_id}?account={self.service_account}&keyfile={keyfile}&base={self.base_url}"
        )

    def revoke_tokens(self) -> None:
        with self.state.lock:
            self.tokens.clear()

    def reset(self, *, client_id: str) -> None:
        """Forget everything; a new client id, so no token cached by an earlier client is reused."""
        self.state.reset()
        self.revoke_tokens()
        with self.state.lock:
            self.client_id = client_id
            self.token_requests = 0

    async def token(self, request: Request) -> Response:
        form = await _form(request)
        with self.state.lock:
            self.token_requests += 1
        if form.get("client_id") != self.client_id or form.get("client_secret") != self.client_secret:
            self.state.refuse("client")
            return JSONResponse({"error": "invalid_client", "error_description": "client authentication failed"}, 401)
        if form.get("grant_type") != JWT_BEARER or "bot" not in str(form.get("scope", "")).split(","):
            self.state.refuse("grant")
            return JSONResponse({"error": "invalid_request", "error_description": "grant_type or scope"}, 400)
        try:
            claims = jwt.decode(str(form.get("assertion", "")), self.public_key_pem, algorithms=["RS256"])
        except jwt.PyJWTError:
            self.state.refuse("assertion")
            return JSONResponse({"error": "invalid_grant", "error_description": "assertion is not valid"}, 400)
        if claims.get("iss") != self.client_id or claims.get("sub") != self.service_account:
            self.state.refuse("claims")
            return JSONResponse({"error": "invalid_grant", "error_description": "iss or sub"}, 400)
        token = f"nw-token-{next(self._serial)}-{int(time.time())}"
        with self.state.lock:
            self.tokens.add(token)
        return JSONResponse(
            {
                "access_token": token,
                "refresh_token": f"refresh-{token}",
                "scope": "bot",
                "token_type": "Bearer",
                "expires_in": str(NAVERWORKS_TOKEN_SECONDS),
            }
        )

    async def message(self, request: Request) -> Response:
        auth = request.headers.get("authorization", "")
        with self.state.lock:
            known = auth.startswith("Bearer ") and auth.removeprefix("Bearer ") in self.tokens
        if not known:
            self.state.refuse("token")
            return JSONResponse({"code": "UNAUTHORIZED", "description": "Authentication failed"}, 401)
        p = request.path_params
        if p["bot"] != self.bot_id or p["kind"] not in ("channels", "users") or p["target"] != self.channel_id:
            self.state.refuse("target")
            return JSONResponse({"code": "NOT_FOUND", "description": "bot or channel not found"}, 404)
        body = await _json_object(request)
        content = (body or {}).get("content")
        if not isinstance(content, dict) or content.get("type") != "text" or not isinstance(content.get("text"), str):
            self.state.refuse("body")
            return JSONResponse({"code": "INVALID_PARAMETER", "description": "content.type text is required"}, 400)
        failure = self._failure(
            lambda: JSONResponse({"code": "FORBIDDEN", "description": "the bot is not in the channel"}, 403),
            {"code": "INVALID_PARAMETER", "description": "bad request"},
        )
        if failure is not None:
            return failure
        self.state.accept(content)
        return Response(status_code=201)
