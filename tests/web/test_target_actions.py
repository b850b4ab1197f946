"""Claims, releases, transfers and state changes from the target page and the API: CSRF, the
permission, the scope (another unit's target is 404 like a missing one), 409 with the workflow's
sentence for an illegal move, and one audit entry per attempt in a chain that verifies."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient

from peerwatch.leads.workflow import LeadState
from tests.web.conftest import Site, csrf_of


def _page_csrf(client: TestClient, target_id: int) -> str:
    page = client.get(f"/leads/{target_id}")
    assert page.status_code == 200
    return csrf_of(page.text)


def _token(site: Site, name: str, role: str, unit: str | None = None) -> dict[str, str]:
    _t, value = site.app.accounts.add_token(name, role, unit=unit)
    return {"Authorization": f"Bearer {value}"}


def test_claim_from_the_page_needs_the_csrf_token(site: Site) -> None:
    client = site.signed_in("inv75")
    target_id = site.targets["U75"][0]
    page = client.get(f"/leads/{target_id}")
    assert 'id="claim"' in page.text and "Claim for U75" in page.text
    # Times read as UTC ISO 8601 to the millisecond, as in the evidence and the case package.
    assert re.search(
        r"First / last seen \(UTC\)</th><td>\d{4}-\d\d-\d\dT[\d:]{8}\.\d{3}Z", page.text
    )
    refused = client.post(f"/leads/{target_id}/claim", data={"note": "x"}, follow_redirects=False)
    assert refused.status_code == 403
    assert site.app.leads.get(target_id).state is LeadState.NEW

    csrf = csrf_of(page.text)
    # An investigator claims for its own unit, whatever the form says.
    done = client.post(
        f"/leads/{target_id}/claim",
        data={"csrf": csrf, "unit": "U13", "note": "ours"},
        follow_redirects=False,
    )
    assert done.status_code == 303 and done.headers["location"] == f"/leads/{target_id}#lead"
    lead = site.app.leads.get(target_id)
    assert (lead.state, lead.unit, lead.holder) == (LeadState.CLAIMED, "U75", "inv75")
    entry = site.app.audit.latest(1)[0]
    assert (entry.action, entry.object, entry.actor, entry.unit) == (
        "target.claim",
        f"target:{target_id}",
        "inv75",
        "U75",
    )
    assert entry.detail["ok"] is True and entry.detail["unit"] == "U75"
    after = client.get(f"/leads/{target_id}").text
    assert '<td id="lead-state-value">claimed</td>' in after and 'id="release"' in after
    assert "ours" in after  # the history's note


def test_state_changes_and_illegal_moves_from_the_page(site: Site) -> None:
    client = site.signed_in("inv75")
    target_id = site.targets["U75"][0]
    csrf = _page_csrf(client, target_id)

    def post(action: str, **data: str) -> tuple[int, str]:
        r = client.post(
            f"/leads/{target_id}/{action}", data={"csrf": csrf, **data}, follow_redirects=False
        )
        return r.status_code, r.text

    status, text = post("release")
    assert status == 409
    assert f"target {target_id} is new: cannot release (allowed: claim -&gt; claimed)" in text
    refusal = site.app.audit.latest(1)[0]
    assert refusal.action == "target.release" and refusal.detail["ok"] is False
    assert "cannot release" in str(refusal.detail["refused"])

    assert post("claim")[0] == 303
    assert post("state", state="in-investigation")[0] == 303
    status, text = post("state", state="closed")
    assert status == 409 and "needs an outcome" in text
    assert post("state", state="requisition-sent")[0] == 303
    status, text = post("release")
    assert status == 409 and "requisition-sent: cannot release" in text
    assert post("state", state="closed", outcome="isp-no-data")[0] == 303
    lead = site.app.leads.get(target_id)
    assert (lead.state, lead.outcome) == (LeadState.CLOSED, "isp-no-data")
    actions = [h.action for h in site.app.leads.history(target_id)]
    assert actions == ["claim", "state", "state", "state"]
    assert site.app.audit.verify().ok


def test_api_claim_transfer_release_with_session_and_token(site: Site) -> None:
    target_id = site.targets["U75"][0]
    inv75 = site.signed_in("inv75")
    # With the session cookie the API needs the CSRF header.
    assert inv75.post(f"/api/v1/targets/{target_id}/claim", json={}).status_code == 403
    csrf = _page_csrf(inv75, target_id)
    r = inv75.post(
        f"/api/v1/targets/{target_id}/claim", json={"note": "n"}, headers={"X-CSRF-Token": csrf}
    )
    assert r.status_code == 200, r.text
    assert r.json()["lead"]["unit"] == "U75" and r.json()["lead"]["state"] == "claimed"

    coord = site.client()
    headers = _token(site, "coord-script", "coordinator")
    r = coord.post(f"/api/v1/targets/{target_id}/claim", json={"unit": "U13"}, headers=headers)
    assert r.status_code == 409
    assert r.json()["detail"].startswith(f"target {target_id} is held by unit U75 since ")
    r = coord.post(
        f"/api/v1/targets/{target_id}/transfer", json={"to_unit": "U13"}, headers=headers
    )
    assert r.status_code == 200 and r.json()["lead"]["unit"] == "U13"
    # inv75 no longer holds it: its release is refused with the holder's name.
    r = inv75.post(f"/api/v1/targets/{target_id}/release", json={}, headers={"X-CSRF-Token": csrf})
    assert r.status_code == 409 and "held by unit U13" in r.json()["detail"]
    # The holding unit reads what it holds, though the target is routed to U75.
    holder = _token(site, "u13-script", "investigator", unit="U13")
    assert site.client().get(f"/api/v1/targets/{target_id}", headers=holder).status_code == 200
    listed = site.client().get("/api/v1/targets", headers=holder).json()
    assert target_id in [t["id"] for t in listed]
    r = coord.get(f"/api/v1/targets/{target_id}/lead", headers=headers)
    body = r.json()
    assert [h["action"] for h in body["history"]] == ["claim", "transfer"]
    assert body["lead"]["holder"] == "token:coord-script"
    assert body["requisition"] and body["requisition"][0]["basis"] == "possession"
    assert (
        coord.post(f"/api/v1/targets/{target_id}/release", json={}, headers=headers).json()["lead"][
            "state"
        ]
        == "new"
    )
    # Malformed bodies are refused before the workflow runs.
    assert (
        coord.post(
            f"/api/v1/targets/{target_id}/state", json={"state": "open"}, headers=headers
        ).status_code
        == 422
    )
    assert (
        coord.post(
            f"/api/v1/targets/{target_id}/claim", json={"unit": "U 1"}, headers=headers
        ).status_code
        == 422
    )
    actions = [e.action for e in site.app.audit.iter_entries() if e.action.startswith("target.")]
    assert actions.count("target.claim") == 2 and actions.count("target.transfer") == 1
    assert actions.count("target.release") == 2
    assert site.app.audit.verify().ok


def test_other_units_targets_are_404_for_every_action(site: Site) -> None:
    inv13 = site.signed_in("inv13")
    csrf = _page_csrf(inv13, site.targets["U13"][0])
    headers = {"X-CSRF-Token": csrf}
    forbidden = site.targets["U75"] + site.targets["-"]
    for target_id in [*forbidden, 999_999]:
        for action, body in (
            ("claim", {}),
            ("release", {}),
            ("transfer", {"to_unit": "U13"}),
            ("state", {"state": "in-investigation"}),
        ):
            page = inv13.post(
                f"/leads/{target_id}/{action}",
                data={"csrf": csrf, **body},
                follow_redirects=False,
            )
            api = inv13.post(f"/api/v1/targets/{target_id}/{action}", json=body, headers=headers)
            assert page.status_code == 404 and "no such target" in page.text, (target_id, action)
            assert (api.status_code, api.json()) == (404, {"detail": "no such target"})
            entry = site.app.audit.latest(1)[0]
            assert entry.action == "target.denied"
            reason = "missing" if target_id == 999_999 else "outside-scope"
            assert entry.detail == {"reason": reason}
        assert inv13.get(f"/api/v1/targets/{target_id}/lead").status_code == 404
    for target_id in forbidden:
        assert site.app.leads.get(target_id).version == 0  # nothing was written
    # No claim, transfer or state entry was written for them.
    objects = {
        e.object for e in site.app.audit.iter_entries() if e.action.startswith("target.claim")
    }
    assert not objects
    assert site.app.audit.verify().ok


def test_roles_without_the_permission_are_403(site: Site) -> None:
    target_id = site.targets["U75"][0]
    for name in ("auditor", "admin"):
        client = site.signed_in(name)
        csrf = csrf_of(client.get("/").text)
        r = client.post(
            f"/leads/{target_id}/claim", data={"csrf": csrf, "unit": "U75"}, follow_redirects=False
        )
        assert r.status_code == 403
        r = client.post(
            f"/api/v1/targets/{target_id}/claim",
            json={"unit": "U75"},
            headers={"X-CSRF-Token": csrf},
        )
        assert r.status_code == 403
    assert site.app.leads.get(target_id).version == 0


def test_coordinator_picks_the_unit_and_the_page_shows_the_timeline(site: Site) -> None:
    client = site.signed_in("coord")
    target_id = site.targets["-"][0]  # placed nowhere (CGNAT): only coordinators see it
    page = client.get(f"/leads/{target_id}").text
    assert 'id="claim-unit"' in page and 'id="timeline"' in page
    assert 'id="requisition-lines"' in page
    r = client.post(
        f"/leads/{target_id}/claim",
        data={"csrf": csrf_of(page), "unit": "U13"},
        follow_redirects=False,
    )
    assert r.status_code == 303
    assert site.app.leads.get(target_id).unit == "U13"
    # Without a unit a coordinator's claim is refused with the reason.
    other = site.targets["U13"][0]
    r = client.post(f"/leads/{other}/claim", data={"csrf": csrf_of(page)}, follow_redirects=False)
    assert r.status_code == 409 and "names the unit" in r.text
