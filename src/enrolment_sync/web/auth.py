"""Who may use the console: logins, signed session cookies, the API token, CSRF and origin checks.

The decisions (which role a password gives, whether a request comes from our own origin, whether a CSRF token
matches) are pure functions; `Gate` holds the secrets and turns a request into a `Viewer` or a refusal.
Passwords and tokens are compared in constant time and never logged, stored or echoed.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import urlsplit

from itsdangerous import BadSignature, URLSafeTimedSerializer
from starlette.requests import Request

from ..config import Settings

SESSION_COOKIE = "ops_session"
COOKIE_PATH = "/ops"
MAX_USERNAME_CHARS = 64


class Role(StrEnum):
    ADMIN = "admin"
    READONLY = "readonly"
    TOKEN = "token"  # WORKER_API_TOKEN: scripts and tests; acts like admin


@dataclass(frozen=True)
class Viewer:
    """Someone with credentials: their name (recorded in the audit), role and the session's CSRF token."""

    name: str
    role: Role
    csrf: str = ""

    @property
    def can_act(self) -> bool:
        return self.role in (Role.ADMIN, Role.TOKEN)

    @property
    def by_token(self) -> bool:
        return self.role is Role.TOKEN


class NotSignedIn(Exception):
    """No credentials, or bad ones."""


class Forbidden(Exception):
    """Credentials, but not for this (read-only login, bad CSRF token, another origin)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ReadOnly(Forbidden):
    """A read-only login tried to act: refused, and recorded in the audit."""


class ConsoleDisabled(Exception):
    """No console credential is configured: the console stays closed rather than open."""


def _equal(given: str, expected: str) -> bool:
    return secrets.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


def role_for_password(password: str, *, admin: str | None, readonly: str | None) -> Role | None:
    """The role a password gives. Both comparisons always run, so timing says nothing about which matched."""
    is_admin = admin is not None and _equal(password, admin)
    is_readonly = readonly is not None and _equal(password, readonly)
    if is_admin:
        return Role.ADMIN
    if is_readonly:
        return Role.READONLY
    return None


def clean_username(raw: str) -> str | None:
    """The name a login is recorded under: trimmed, printable, at most MAX_USERNAME_CHARS; None if unusable."""
    name = " ".join(raw.split())
    if not name or len(name) > MAX_USERNAME_CHARS or not name.isprintable():
        return None
    return name


def same_origin(own_origin: str, *, origin: str | None, referer: str | None) -> bool:
    """A state-changing request must say it comes from our own origin (Origin, else Referer); silence fails."""
    if origin:
        return origin.lower() == own_origin.lower()
    if referer:
        parts = urlsplit(referer)
        return f"{parts.scheme}://{parts.netloc}".lower() == own_origin.lower()
    return False


def csrf_matches(given: str | None, expected: str) -> bool:
    return bool(given) and bool(expected) and _equal(given or "", expected)


def own_origin(request: Request) -> str:
    host = request.headers.get("host") or request.url.netloc
    return f"{request.url.scheme}://{host}"


def safe_next(target: str | None) -> str:
    """Where to go after logging in: only a console path (never another site)."""
    if target and target.startswith(COOKIE_PATH) and not target.startswith("//") and "\\" not in target:
        return target
    return COOKIE_PATH


class Gate:
    """The console's credentials and session signer, built once per app from Settings."""

    def __init__(self, settings: Settings) -> None:
        def secret(value: object) -> str | None:
            return value.get_secret_value() if value is not None else None  # type: ignore[attr-defined]

        self.admin = secret(settings.ops_admin_password)
        self.readonly = secret(settings.ops_readonly_password)
        self.token = secret(settings.worker_api_token)
        self.max_age_s = int(settings.ops_session_hours * 3600)
        key = secret(settings.ops_session_secret) or secrets.token_urlsafe(32)
        # Sessions are signed under the current passwords too: changing a password ends its sessions.
        fingerprint = hashlib.sha256(f"{self.admin}\0{self.readonly}".encode()).hexdigest()
        self.signer = URLSafeTimedSerializer(key, salt=f"enrolment-sync-ops-session:{fingerprint}")

    @property
    def logins_enabled(self) -> bool:
        return self.admin is not None or self.readonly is not None

    @property
    def enabled(self) -> bool:
        return self.logins_enabled or self.token is not None

    def login(self, username: str, password: str) -> Viewer | None:
        role = role_for_password(password, admin=self.admin, readonly=self.readonly)
        name = clean_username(username)
        if role is None or name is None:
            return None
        return Viewer(name=name, role=role, csrf=secrets.token_urlsafe(32))

    def session_cookie(self, viewer: Viewer) -> str:
        return self.signer.dumps({"u": viewer.name, "r": str(viewer.role), "c": viewer.csrf})

    def viewer(self, request: Request) -> Viewer:
        """The requester, from a bearer token or a session cookie. Raises NotSignedIn / ConsoleDisabled."""
        if not self.enabled:
            raise ConsoleDisabled
        header = request.headers.get("authorization")
        if header is not None:
            scheme, _, value = header.partition(" ")
            if self.token is not None and scheme.lower() == "bearer" and _equal(value, self.token):
                return Viewer(name="api-token", role=Role.TOKEN)
            raise NotSignedIn
        cookie = request.cookies.get(SESSION_COOKIE)
        if not cookie:
            raise NotSignedIn
        try:
            data = self.signer.loads(cookie, max_age=self.max_age_s)
            role = Role(data["r"])
        except (BadSignature, KeyError, TypeError, ValueError):
            raise NotSignedIn from None
        if role is Role.TOKEN or (role is Role.ADMIN and self.admin is None):
            raise NotSignedIn
        if role is Role.READONLY and self.readonly is None:
            raise NotSignedIn
        return Viewer(name=str(data["u"]), role=role, csrf=str(data["c"]))

    def check_origin_and_token(self, request: Request, viewer: Viewer, csrf_token: str | None) -> None:
        """A POST from a browser: our own origin and the session's CSRF token."""
        origin, referer = request.headers.get("origin"), request.headers.get("referer")
        if viewer.by_token:
            # No browser attaches a bearer token by itself, so a token needs no CSRF token; a foreign
            # Origin is still refused.
            if origin and not same_origin(own_origin(request), origin=origin, referer=None):
                raise Forbidden("다른 출처(origin)에서 온 요청입니다")
            return
        if not same_origin(own_origin(request), origin=origin, referer=referer):
            raise Forbidden("다른 출처(origin)에서 온 요청이거나 출처를 알 수 없습니다")
        if not csrf_matches(csrf_token, viewer.csrf):
            raise Forbidden("CSRF 토큰이 없거나 맞지 않습니다. 페이지를 새로 고친 뒤 다시 시도하세요")

    def check_action(self, request: Request, viewer: Viewer, csrf_token: str | None) -> None:
        """A POST that changes something: the checks above, then an admin role."""
        self.check_origin_and_token(request, viewer, csrf_token)
        if not viewer.can_act:
            raise ReadOnly("읽기 전용 로그인은 작업을 실행할 수 없습니다")
