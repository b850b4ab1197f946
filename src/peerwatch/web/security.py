"""Browser-facing protections: response headers, cookies and CSRF tokens (docs/webapp.md).

CSRF: every POST form carries a token the server checks before the route runs.
- Signed in (any stage): the token is HMAC-SHA256(session token, "peerwatch-csrf-v1"), bound to
  the session; the session token itself sits in an HttpOnly cookie no script or other site reads.
- Not signed in (the login form): double-submit, a random value in a SameSite=Strict cookie that
  the form must repeat.
JSON API calls authenticated by a session cookie send the same token in `X-CSRF-Token`; calls with
a bearer token need none (a browser never adds that header by itself).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

CSRF_FIELD = "csrf"
CSRF_HEADER = "X-CSRF-Token"
_CSRF_LABEL = b"peerwatch-csrf-v1"

# No inline script or style and nothing from elsewhere: default-src 'self' covers scripts, styles,
# images and fonts; the others close what default-src does not (frames, forms, <base>, plugins).
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'; "
    "object-src 'none'"
)
_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
}


@dataclass(frozen=True)
class CookieConfig:
    secure: bool = False  # add Secure (and the __Host- prefix): set it whenever HTTPS is in front

    @property
    def session_name(self) -> str:
        # __Host- cookies must be Secure, Path=/ and without Domain (RFC 6265bis 4.1.3.2).
        return "__Host-pw_session" if self.secure else "pw_session"

    @property
    def login_name(self) -> str:
        return "__Host-pw_login" if self.secure else "pw_login"

    def set(self, response: Response, name: str, value: str, max_age_s: int | None) -> None:
        response.set_cookie(
            name,
            value,
            max_age=max_age_s,
            path="/",
            secure=self.secure,
            httponly=True,
            samesite="strict",
        )

    def clear(self, response: Response, name: str) -> None:
        response.delete_cookie(name, path="/", secure=self.secure, httponly=True, samesite="strict")


def session_csrf(session_token: str) -> str:
    return hmac.new(session_token.encode("utf-8"), _CSRF_LABEL, hashlib.sha256).hexdigest()


def new_login_csrf() -> str:
    return secrets.token_urlsafe(32)


def same(given: str | None, expected: str | None) -> bool:
    if not given or not expected:
        return False
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


def client_address(request: Request) -> str:
    """The peer address of the connection. A reverse proxy in front would hide the real client:
    X-Forwarded-For is not trusted (anyone can send it); see docs/webapp.md."""
    return request.client.host[:64] if request.client else "unknown"


class SecurityHeaders:
    """Adds the security headers to every response; pages and API answers are never cached."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        static = str(scope.get("path", "")).startswith("/static/")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in _HEADERS.items():
                    headers[name] = value
                if not static:
                    headers["Cache-Control"] = "no-store"
            await send(message)

        await self.app(scope, receive, send_with_headers)
