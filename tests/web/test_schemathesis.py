"""schemathesis against the OpenAPI description of the running app (ASGI, no network): for each
role's bearer token, every API operation gets generated requests, valid and invalid, and no answer
may be a server error (`not_a_server_error`). Examples per operation are bounded so that the whole
module stays well under a minute; `derandomize` makes a failure reproducible."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Err

from peerwatch.web.site import create_app
from tests.web.conftest import USERS, Site

#: Examples per operation and role; PEERWATCH_SCHEMATHESIS_EXAMPLES=200 for a longer hunt.
_N = int(os.environ.get("PEERWATCH_SCHEMATHESIS_EXAMPLES", "8"))
EXAMPLES = {GenerationMode.POSITIVE: _N, GenerationMode.NEGATIVE: max(1, _N // 2)}


def fuzz(web: FastAPI, headers: dict[str, str]) -> tuple[list[str], Counter[int]]:
    """Failures (operation, mode, what) and the count of each status seen."""
    schema = schemathesis.openapi.from_asgi("/api/openapi.json", web)
    failures: list[str] = []
    statuses: Counter[int] = Counter()
    for result in schema.get_all_operations():
        if isinstance(result, Err):
            failures.append(f"the description does not load: {result.err()}")
            continue
        operation = result.ok()
        for mode, examples in EXAMPLES.items():

            @settings(
                max_examples=examples,
                deadline=None,
                derandomize=True,
                database=None,
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=list(HealthCheck),
            )
            @given(case=operation.as_strategy(generation_mode=mode))
            def run(case: Any) -> None:
                response = case.call(headers=headers)
                statuses[response.status_code] += 1
                case.validate_response(response, checks=[not_a_server_error])

            try:
                run()
            except (Exception, BaseExceptionGroup) as exc:  # collect every failure
                failures.append(f"{operation.label} ({mode.value}): {exc}")
    return failures, statuses


@pytest.fixture
def app_of(site: Site) -> Iterator[FastAPI]:
    web = create_app(site.app, site.config)
    yield web
    jobs = getattr(web.state, "watchlist_imports", None)
    if jobs is not None:
        jobs.wait_all()  # imports the fuzzing started must end before the database goes


@pytest.mark.parametrize("engine", ["sqlite"], indirect=True)
@pytest.mark.parametrize("name", sorted(USERS))
def test_no_server_error_for_any_role(site: Site, app_of: FastAPI, name: str) -> None:
    role, unit = USERS[name]
    _t, value = site.app.accounts.add_token(f"st-{name}", role, unit=unit)
    failures, statuses = fuzz(app_of, {"Authorization": f"Bearer {value}"})
    assert not failures, "\n\n".join(failures)
    # The requests got past authentication: /api/v1/me at least answers every role.
    assert statuses[200] > 0 and not any(s >= 500 for s in statuses), statuses
    assert site.app.audit.verify().ok


def test_the_harness_reports_a_server_error() -> None:
    """The check above can fail: an endpoint that breaks on some input is found."""
    web = FastAPI(openapi_url="/api/openapi.json")

    @web.get("/api/v1/half")
    def half(n: int) -> dict[str, int]:
        return {"half": 100 // (n % 7)}  # n % 7 == 0 divides by zero

    @web.exception_handler(ZeroDivisionError)
    async def broken(request: Any, exc: Exception) -> Any:
        from starlette.responses import JSONResponse

        return JSONResponse({"detail": "boom"}, status_code=500)

    failures, statuses = fuzz(web, {})
    assert failures and "/api/v1/half" in failures[0], (failures, statuses)
