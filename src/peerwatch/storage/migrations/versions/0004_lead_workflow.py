"""Lead workflow: claims and their history, alerts, national operations, retention log (issue 4).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

# Append-only tables: the database itself refuses UPDATE and DELETE on them (docs/operations.md).
_APPEND_ONLY = (
    "lead_history",
    "operations",  # an operation is frozen once created
    "operation_targets",
    "retention_purges",
    "evidence_purged",
)


def upgrade() -> None:
    op.create_table(
        "lead_states",
        sa.Column("target_id", _Id, nullable=False, autoincrement=False),
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("unit", sa.String(100)),
        sa.Column("holder", sa.String(200)),
        sa.Column("since_ms", sa.BigInteger),
        sa.Column("outcome", sa.String(64)),
        sa.Column("updated_ms", sa.BigInteger, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint("target_id", name="pk_lead_states"),
        sa.ForeignKeyConstraint(
            ["target_id"], ["targets.id"], name="fk_lead_states_target_id_targets"
        ),
    )
    op.create_index("ix_lead_states_unit", "lead_states", ["unit"])
    op.create_table(
        "lead_history",
        sa.Column("id", _Id, primary_key=True, autoincrement=True),
        sa.Column("target_id", _Id, nullable=False),
        sa.Column("at_ms", sa.BigInteger, nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("unit", sa.String(100)),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("from_state", sa.String(32), nullable=False),
        sa.Column("to_state", sa.String(32), nullable=False),
        sa.Column("from_unit", sa.String(100)),
        sa.Column("to_unit", sa.String(100)),
        sa.Column("outcome", sa.String(64)),
        sa.Column("note", sa.Text),
        sa.PrimaryKeyConstraint("id", name="pk_lead_history"),
        sa.ForeignKeyConstraint(
            ["target_id"], ["targets.id"], name="fk_lead_history_target_id_targets"
        ),
    )
    op.create_index("ix_lead_history_target_id", "lead_history", ["target_id"])
    op.create_table(
        "lead_alerts",
        sa.Column("id", _Id, primary_key=True, autoincrement=True),
        sa.Column("unit", sa.String(100), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("target_id", _Id, nullable=False),
        sa.Column("dedup", sa.String(100), nullable=False),
        sa.Column("created_ms", sa.BigInteger, nullable=False),
        sa.Column("first_ms", sa.BigInteger),
        sa.Column("last_ms", sa.BigInteger),
        sa.Column("observations", sa.Integer, nullable=False),
        sa.Column("detail", sa.Text, nullable=False),
        sa.Column("acknowledged_ms", sa.BigInteger),
        sa.Column("acknowledged_by", sa.String(200)),
        sa.PrimaryKeyConstraint("id", name="pk_lead_alerts"),
        sa.ForeignKeyConstraint(
            ["target_id"], ["targets.id"], name="fk_lead_alerts_target_id_targets"
        ),
        sa.UniqueConstraint(
            "unit", "kind", "target_id", "dedup", name="uq_lead_alerts_unit_kind_target_id_dedup"
        ),
    )
    op.create_index("ix_lead_alerts_unit", "lead_alerts", ["unit"])
    op.create_table(
        "operations",
        sa.Column("id", _Id, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("created_ms", sa.BigInteger, nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.Column("filters", sa.Text, nullable=False),
        sa.Column("target_count", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_operations"),
        sa.UniqueConstraint("name", name="uq_operations_name"),
    )
    op.create_table(
        "operation_targets",
        sa.Column("operation_id", _Id, nullable=False, autoincrement=False),
        sa.Column("target_id", _Id, nullable=False, autoincrement=False),
        sa.Column("unit", sa.String(100)),
        sa.Column("jurisdiction", sa.String(100)),
        sa.Column("snapshot", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("operation_id", "target_id", name="pk_operation_targets"),
        sa.ForeignKeyConstraint(
            ["target_id"], ["targets.id"], name="fk_operation_targets_target_id_targets"
        ),
        sa.ForeignKeyConstraint(
            ["operation_id"], ["operations.id"], name="fk_operation_targets_operation_id_operations"
        ),
    )
    op.create_table(
        "retention_purges",
        sa.Column("id", _Id, primary_key=True, autoincrement=True),
        sa.Column("at_ms", sa.BigInteger, nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("rule", sa.Text, nullable=False),
        sa.Column("days", sa.Integer, nullable=False),
        sa.Column("cutoff_ms", sa.BigInteger, nullable=False),
        sa.Column("records", sa.Integer, nullable=False),
        sa.Column("targets", sa.Integer, nullable=False),
        sa.Column("detail", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_retention_purges"),
    )
    op.create_table(
        "evidence_purged",
        sa.Column("sensor_id", sa.String(100), nullable=False),
        sa.Column("seq", sa.BigInteger, nullable=False, autoincrement=False),
        sa.Column("record_sha256", sa.LargeBinary(32), nullable=False),
        sa.Column("link", sa.LargeBinary(32), nullable=False),
        sa.Column("signature", sa.LargeBinary(64), nullable=False),
        sa.Column("observed_ms", sa.BigInteger, nullable=False),
        sa.Column("purge_id", _Id, nullable=False),
        sa.PrimaryKeyConstraint("sensor_id", "seq", name="pk_evidence_purged"),
        sa.ForeignKeyConstraint(
            ["sensor_id"], ["sensors.id"], name="fk_evidence_purged_sensor_id_sensors"
        ),
        sa.ForeignKeyConstraint(
            ["purge_id"],
            ["retention_purges.id"],
            name="fk_evidence_purged_purge_id_retention_purges",
        ),
    )
    for table in _APPEND_ONLY:
        _forbid_changes(table)


def _forbid_changes(table: str) -> None:
    message = f"{table} is append-only"
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            f"CREATE FUNCTION {table}_append_only() RETURNS trigger LANGUAGE plpgsql AS "
            f"$$ BEGIN RAISE EXCEPTION '{message}'; END $$"
        )
        op.execute(
            f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
            f"FOR EACH ROW EXECUTE FUNCTION {table}_append_only()"
        )
    else:
        for event in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER {table}_no_{event.lower()} BEFORE {event} ON {table} "
                f"BEGIN SELECT RAISE(ABORT, '{message}'); END"
            )


def downgrade() -> None:
    op.drop_table("evidence_purged")
    op.drop_table("retention_purges")
    op.drop_table("operation_targets")
    op.drop_table("operations")
    op.drop_table("lead_alerts")
    op.drop_table("lead_history")
    op.drop_table("lead_states")
    if op.get_bind().dialect.name == "postgresql":
        for table in _APPEND_ONLY:
            op.execute(f"DROP FUNCTION IF EXISTS {table}_append_only()")
