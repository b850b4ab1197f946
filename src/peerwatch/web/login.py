"""Signing in: password, then the TOTP code when the account has one; rate limited and audited.

A fresh session token is issued at each step (the pending one is closed when the second factor is
accepted), so a token seen before sign-in is never the token of a signed-in session.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

from fastapi.responses import RedirectResponse
from starlette.requests import Request
from starlette.responses import Response

from peerwatch.accounts.store import User, is_name
from peerwatch.web.context import web_context
from peerwatch.web.security import client_address


def account_key(typed: str) -> str:
    """The name as the limiter and the audit log record it: a well-formed name as typed
    (lowercased), anything else as a digest, so that junk can neither be stored nor break a
    query."""
    name = typed.strip().lower()
    if is_name(name):
        return name
    return "invalid:" + hashlib.sha256(typed.encode("utf-8", "replace")).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class Outcome:
    token: str | None = None  # the new session token, when this step succeeded
    pending: bool = False  # the password was right and a TOTP code is needed next
    retry_after_s: int = 0  # rate limited: nothing was checked
    restart: bool = False  # the pending session is gone (expired): start again


class LoginFlow:
    def __init__(self, request: Request) -> None:
        self._request = request
        self._ctx = web_context(request)
        self._address = client_address(request)

    def _audit(self, action: str, account: str, user: User | None, detail: dict[str, str]) -> None:
        self._ctx.audit.append(
            actor=account,
            role=None if user is None else user.role.value,
            unit=None if user is None else user.unit,
            address=self._address,
            action=action,
            obj=f"user:{account}",
            detail=detail,
        )

    def _limited(self, account: str) -> int:
        accounts = self._ctx.accounts
        wait_ms = accounts.limiter.retry_after_ms(account, self._address, accounts.now_ms())
        if wait_ms:
            self._audit("login.limited", account, None, {})
        return math.ceil(wait_ms / 1000)

    def password(self, typed_name: str, password: str) -> Outcome:
        accounts = self._ctx.accounts
        account = account_key(typed_name)
        wait = self._limited(account)
        if wait:
            return Outcome(retry_after_s=wait)
        user = accounts.check_password(account, password)
        if user is None:
            accounts.limiter.record(account, self._address, False, accounts.now_ms())
            self._audit("login.failed", account, None, {"step": "password"})
            return Outcome()
        self._close_previous()
        if user.totp:
            token = accounts.open_session(user, stage="totp", address=self._address)
            self._audit("login.password-ok", account, user, {"next": "totp"})
            return Outcome(token=token, pending=True)
        accounts.limiter.record(account, self._address, True, accounts.now_ms())
        token = accounts.open_session(user, stage="active", address=self._address)
        self._audit("login.ok", account, user, {"factors": "password"})
        return Outcome(token=token)

    def second_factor(self, pending_token: str, code: str) -> Outcome:
        accounts = self._ctx.accounts
        session = accounts.session(pending_token)
        if session is None or session.stage != "totp":
            return Outcome(restart=True)
        user = session.user
        wait = self._limited(user.name)
        if wait:
            return Outcome(retry_after_s=wait)
        if not accounts.check_totp(user, code):
            accounts.limiter.record(user.name, self._address, False, accounts.now_ms())
            self._audit("login.failed", user.name, user, {"step": "totp"})
            return Outcome()
        accounts.limiter.record(user.name, self._address, True, accounts.now_ms())
        accounts.close_session(pending_token)
        token = accounts.open_session(user, stage="active", address=self._address)
        self._audit("login.ok", user.name, user, {"factors": "password+totp"})
        return Outcome(token=token)

    def _close_previous(self) -> None:
        cookie = self._ctx.config.cookies
        previous = self._request.cookies.get(cookie.session_name)
        if previous:
            self._ctx.accounts.close_session(previous)

    def redirect_with_session(self, token: str, to: str) -> Response:
        cookie = self._ctx.config.cookies
        response = RedirectResponse(to, status_code=303)
        # A session cookie (no Max-Age): it goes when the browser closes; the server side
        # expires it anyway after AccountsConfig.session_ms.
        cookie.set(response, cookie.session_name, token, max_age_s=None)
        cookie.clear(response, cookie.login_name)
        return response

    def logout(self, token: str) -> Response:
        accounts = self._ctx.accounts
        session = accounts.session(token)
        accounts.close_session(token)
        if session is not None:
            self._audit("logout", session.user.name, session.user, {})
        cookie = self._ctx.config.cookies
        response = RedirectResponse("/login", status_code=303)
        cookie.clear(response, cookie.session_name)
        return response
