"""What every route gets: the stores, the configuration and the templates of one web app."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import cast

from fastapi.templating import Jinja2Templates
from starlette.requests import Request

from peerwatch.accounts.store import AccountStore
from peerwatch.audit.log import AuditLog
from peerwatch.web.audit_check import AuditChainCheck
from peerwatch.web.scoped_targets import ScopedTargets
from peerwatch.web.security import CookieConfig


@dataclass(frozen=True)
class WebConfig:
    cookies: CookieConfig = field(default_factory=CookieConfig)  # cookie flags (Secure or not)


@dataclass(frozen=True)
class WebContext:
    accounts: AccountStore
    audit: AuditLog
    targets: ScopedTargets
    config: WebConfig
    templates: Jinja2Templates
    chain: AuditChainCheck  # the audit chain verified so far by this app (auditor page)


def web_context(request: Request) -> WebContext:
    return cast(WebContext, request.app.state.peerwatch)
