"""National operations: selection by filters, frozen snapshots, per-unit dispatch packages."""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Iterable
from pathlib import Path

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError

from peerwatch.leads import operation as operation_module
from peerwatch.leads.operation import (
    OperationError,
    OperationFilters,
    Operations,
    watchlist_categories,
)
from peerwatch.leads.workflow import LeadWorkflow
from peerwatch.watchlist.store import WatchlistStore
from tests.leads.doubles import DAY, T0, FakeTargets, Obs, placement, seed_targets
from tests.leads.test_workflow import ticking

CATEGORIES = {"btih:" + "ab" * 20: "A", "btih:" + "cd" * 20: "B"}


def categories(keys: Iterable[str]) -> set[str]:
    return {CATEGORIES[k] for k in keys if k in CATEGORIES}


@pytest.fixture
def targets() -> FakeTargets:
    t = FakeTargets()
    paris = placement("192.0.2.10")
    # Paris (75, BRI-75): two targets; Lille (59, SR-59): one; Marseille (13, SR-13): one, CGNAT.
    t.add(1, [Obs("s1", 1, T0, "192.0.2.10", 51413, placement=paris)], score=80)
    t.add(2, [Obs("s1", 2, T0 + 2000, "192.0.2.11", 6881, placement=paris)], score=40)
    lille = placement("198.51.100.7", jurisdiction="59", unit="SR-59")
    t.add(
        3,
        [
            Obs("s1", 3, T0 - 10 * DAY, "198.51.100.7", 6881, placement=lille),
            Obs("s1", 4, T0 - 10 * DAY + 400, "198.51.100.7", 6881, placement=lille),
        ],
        score=70,
        jurisdiction="59",
        unit="SR-59",
    )
    cgnat = placement("100.64.0.9", jurisdiction="13", unit="SR-13", flags=frozenset({"cgnat"}))
    t.add(
        4,
        [
            Obs(
                "s2",
                1,
                T0 + 5000,
                "100.64.0.9",
                None,
                method="dht-get-peers",
                outcome="claim",
                content_key="btih:" + "cd" * 20,
                placement=cgnat,
            )
        ],
        score=60,
        jurisdiction="13",
        unit="SR-13",
        flags=frozenset({"cgnat"}),
    )
    # No jurisdiction could be determined: no unit either.
    t.add(5, [Obs("s1", 5, T0, "203.0.113.5", 6881)], score=90, jurisdiction=None, unit=None)
    return t


@pytest.fixture
def flow(engine: Engine) -> LeadWorkflow:
    seed_targets(engine, range(1, 10))
    return LeadWorkflow(engine, clock_ms=ticking(T0 + DAY))


@pytest.fixture
def ops(engine: Engine, targets: FakeTargets, flow: LeadWorkflow) -> Operations:
    return Operations(engine, targets, flow, categories=categories, clock_ms=ticking(T0 + 2 * DAY))


def ids(op: operation_module.Operation) -> list[int]:
    return [s["id"] for s in op.targets]


def test_filters_pick_the_leads(ops: Operations, flow: LeadWorkflow) -> None:
    def pick(**kw: object) -> list[int]:
        return sorted(s["id"] for s in ops.select(OperationFilters(**kw)))  # type: ignore[arg-type]

    assert pick() == [1, 2, 3, 4, 5]
    assert pick(min_score=60) == [1, 3, 4, 5]
    assert pick(since_ms=T0 - DAY) == [1, 2, 4, 5]
    assert pick(jurisdictions=("59", "13")) == [3, 4]
    assert pick(category="B") == [4]
    assert pick(category="A", min_score=50, jurisdictions=("75",)) == [1]
    flow.claim(2, unit="BRI-75", actor="alice")
    flow.set_state(2, "closed", actor="alice", outcome="duplicate")
    assert pick(jurisdictions=("75",)) == [1]
    assert pick(jurisdictions=("75",), include_closed=True) == [1, 2]


def test_category_filter_without_categories_is_refused(
    engine: Engine, targets: FakeTargets, flow: LeadWorkflow
) -> None:
    with pytest.raises(OperationError, match="category filter needs"):
        Operations(engine, targets, flow).select(OperationFilters(category="A"))


def test_operation_is_frozen(ops: Operations, targets: FakeTargets, tmp_path: Path) -> None:
    op = ops.create("Op Nov", OperationFilters(min_score=50), actor="lead")
    assert ids(op) == [1, 4, 3, 5]  # by unit (BRI-75, SR-13, SR-59), the unassigned last
    before = ops.show("Op Nov")
    ops.dispatch(op.id, tmp_path / "a")
    # After: scores change, the target is seen again, a new target appears.
    targets.rescore(1, 10)
    targets.see(3, Obs("s1", 9, T0 + DAY, "198.51.100.8", 6881))
    targets.add(6, [Obs("s1", 10, T0, "192.0.2.66", 1)], score=99)
    assert ops.show(op.id) == before
    assert before["targets"][0]["score"] == 80
    ops.dispatch(op.id, tmp_path / "b")
    assert _tree(tmp_path / "a") == _tree(tmp_path / "b")
    # The same filters now pick something else: only a new operation would see it.
    assert ids(ops.create("Op Dec", OperationFilters(min_score=50), actor="lead")) == [6, 4, 3, 5]
    assert [o.name for o in ops.list()] == ["Op Nov", "Op Dec"]


def test_names_must_be_unique_and_selection_not_empty(ops: Operations) -> None:
    ops.create("op", OperationFilters(), actor="lead")
    with pytest.raises(OperationError, match="named 'op' already exists"):
        ops.create("op", OperationFilters(), actor="lead")
    with pytest.raises(OperationError, match="no lead matches"):
        ops.create("none", OperationFilters(min_score=1000), actor="lead")
    with pytest.raises(OperationError, match="no operation 'nope'"):
        ops.get("nope")
    assert [o.name for o in ops.list()] == ["op"]


def test_claimed_lead_goes_to_its_holder(ops: Operations, flow: LeadWorkflow) -> None:
    flow.claim(3, unit="OFMIN", actor="alice")
    op = ops.create("op", OperationFilters(), actor="lead")
    three = next(s for s in op.targets if s["id"] == 3)
    assert three["unit"] == "OFMIN" and three["jurisdiction"] == "59"
    assert three["lead"]["state"] == "claimed" and three["lead"]["holder"] == "alice"


def test_dispatch_packages_per_unit_and_national_summary(ops: Operations, tmp_path: Path) -> None:
    op = ops.create("national", OperationFilters(), actor="lead")
    out = tmp_path / "dispatch"
    result = ops.dispatch("national", out)
    assert result.headline == "5 targets in 3 départements"
    assert result.units == {"BRI-75": 2, "SR-13": 1, "SR-59": 1, "_unassigned": 1}

    manifest = json.loads((out / "manifest.json").read_text())
    assert (manifest["format"], manifest["version"]) == ("peerwatch-operation-package", 1)
    assert manifest["operation"]["name"] == "national" and manifest["operation"]["id"] == op.id
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert sorted([*manifest["files"], "manifest.json"]) == files
    for name, digest in manifest["files"].items():
        assert hashlib.sha256((out / name).read_bytes()).hexdigest() == digest
    assert {u["unit"]: u["folder"] for u in manifest["units"]}["_unassigned"] == (
        "units/_unassigned"
    )

    summary = json.loads((out / "national-summary.json").read_text())
    assert summary["headline"] == "5 targets in 3 départements"
    assert summary["by_jurisdiction"] == [
        {"code": "13", "name": "Département 13", "targets": 1, "units": ["SR-13"]},
        {"code": "59", "name": "Département 59", "targets": 1, "units": ["SR-59"]},
        {"code": "75", "name": "Département 75", "targets": 2, "units": ["BRI-75"]},
    ]
    assert summary["without_jurisdiction"] == 1
    summary_rows = list(csv.DictReader(io.StringIO((out / "national-summary.csv").read_text())))
    assert [(r["jurisdiction"], r["targets"]) for r in summary_rows] == [
        ("13", "1"),
        ("59", "1"),
        ("75", "2"),
        ("", "1"),
    ]

    paris = out / "units" / "BRI-75"
    doc = json.loads((paris / "targets.json").read_text())
    assert doc["unit"] == "BRI-75" and [t["id"] for t in doc["targets"]] == [1, 2]
    unit_manifest = json.loads((paris / "manifest.json").read_text())
    assert unit_manifest["targets"] == 2
    for name, digest in unit_manifest["files"].items():
        assert hashlib.sha256((paris / name).read_bytes()).hexdigest() == digest
    rows = list(csv.DictReader(io.StringIO((paris / "targets.csv").read_text())))
    assert [(r["target_id"], r["score"], r["requisition_lines"]) for r in rows] == [
        ("1", "80", "1"),
        ("2", "40", "1"),
    ]
    lines = list(csv.DictReader(io.StringIO((paris / "requisitions.csv").read_text())))
    assert [(r["target_id"], r["ip"], r["port"], r["time_utc"], r["asn"]) for r in lines] == [
        ("1", "192.0.2.10", "51413", "2025-11-24T16:00:00Z", "64500"),
        ("2", "192.0.2.11", "6881", "2025-11-24T16:00:02Z", "64500"),
    ]
    # Lille: two observations in one second are one requisition line.
    lille = list(csv.DictReader(io.StringIO((out / "units/SR-59/requisitions.csv").read_text())))
    assert len(lille) == 1 and lille[0]["observations"] == "2"
    # Marseille: CGNAT and no port, the line and the target carry the warning.
    marseille = json.loads((out / "units/SR-13/targets.json").read_text())["targets"][0]
    assert marseille["requisition"][0]["port"] is None
    assert any("carrier-grade NAT" in w for w in marseille["warnings"])
    assert "carrier-grade NAT" in (out / "units/SR-13/requisitions.csv").read_text()


def test_one_jurisdiction_headline_is_singular(ops: Operations, tmp_path: Path) -> None:
    ops.create("lille", OperationFilters(jurisdictions=("59",)), actor="lead")
    assert ops.dispatch("lille", tmp_path / "o").headline == "1 target in 1 département"


def test_dispatch_failure_leaves_nothing(
    ops: Operations, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    op = ops.create("op", OperationFilters(), actor="lead")
    calls = []
    real = operation_module._requisitions_csv

    def failing(targets: list[dict[str, object]]) -> str:
        calls.append(1)
        if len(calls) == 3:
            raise OSError(28, "No space left on device")
        return real(targets)

    monkeypatch.setattr(operation_module, "_requisitions_csv", failing)
    out = tmp_path / "packages" / "dispatch"
    with pytest.raises(OSError, match="No space left"):
        ops.dispatch(op.id, out)
    assert calls == [1, 1, 1]
    assert list(out.parent.iterdir()) == []  # neither the package nor its temporary folder
    monkeypatch.undo()
    (out / "x").parent.mkdir()
    (out / "x").write_text("already here")
    with pytest.raises(OperationError, match="exists and is not an empty folder"):
        ops.dispatch(op.id, out)
    assert [p.name for p in out.iterdir()] == ["x"]


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_an_operation_cannot_be_edited_in_the_database(ops: Operations, engine: Engine) -> None:
    op = ops.create("op", OperationFilters(), actor="lead")
    for statement in (
        "UPDATE operation_targets SET unit = 'X'",
        "DELETE FROM operation_targets",
        "UPDATE operations SET name = 'other'",
    ):
        with pytest.raises(DBAPIError, match="append-only"), engine.begin() as conn:
            conn.execute(text(statement))
    assert ops.get(op.id).targets == op.targets


def test_categories_come_from_the_active_watchlists(engine: Engine, tmp_path: Path) -> None:
    watched = tmp_path / "list.csv"
    watched.write_text("btih,category\n" + "ab" * 20 + ",A\n" + "cd" * 20 + ",B\n")
    store = WatchlistStore(engine)
    store.import_files([watched], list_name="cases")
    categories_of = watchlist_categories(store)
    assert categories_of(["btih:" + "ab" * 20]) == {"A"}
    assert categories_of(["btih:" + "ab" * 20, "btih:" + "cd" * 20, "btih:" + "ef" * 20]) == {
        "A",
        "B",
    }
    assert categories_of(["ed2k:nothex", "weird", "btih:" + "ef" * 20]) == set()


def test_package_fields_are_the_documented_ones(ops: Operations, tmp_path: Path) -> None:
    """The package is a published format: its fields are exactly these, each named in
    docs/operations.md; adding one means documenting it, removing one means a new version."""
    ops.create("op", OperationFilters(), actor="lead")
    out = tmp_path / "o"
    ops.dispatch("op", out)
    doc = json.loads((out / "units/SR-13/targets.json").read_text())
    (target,) = doc["targets"]
    fields = {
        "package": (set(doc), {"format", "version", "operation", "unit", "targets"}),
        "operation": (
            set(doc["operation"]),
            {"id", "name", "created", "created_by", "filters"},
        ),
        "filters": (
            set(doc["operation"]["filters"]),
            {"min_score", "seen_since", "category", "jurisdictions", "include_closed"},
        ),
        "target": (
            set(target),
            {
                "id",
                "label",
                "score",
                "jurisdiction",
                "jurisdiction_name",
                "unit",
                "first_seen",
                "last_seen",
                "ips",
                "flags",
                "networks",
                "content_keys",
                "categories",
                "lead",
                "requisition",
                "warnings",
            },
        ),
        "lead": (
            set(target["lead"]),
            {"target_id", "state", "unit", "holder", "since", "outcome", "updated"},
        ),
        "line": (
            set(target["requisition"][0]),
            {
                "ip",
                "port",
                "time",
                "asn",
                "organisation",
                "basis",
                "method",
                "content_key",
                "evidence",
                "observations",
                "flags",
                "warnings",
            },
        ),
        "summary": (
            set(json.loads((out / "national-summary.json").read_text())),
            {
                "format",
                "version",
                "operation",
                "headline",
                "targets",
                "jurisdictions",
                "without_jurisdiction",
                "by_jurisdiction",
                "by_unit",
            },
        ),
        "manifest": (
            set(json.loads((out / "manifest.json").read_text())),
            {"format", "version", "operation", "headline", "units", "files"},
        ),
    }
    for name, (found, expected) in fields.items():
        assert found == expected, name
    docs = (Path(__file__).resolve().parents[2] / "docs" / "operations.md").read_text()
    named = {f for _, expected in fields.values() for f in expected}
    assert [f for f in sorted(named) if f'"{f}"' not in docs and f"`{f}`" not in docs] == []
