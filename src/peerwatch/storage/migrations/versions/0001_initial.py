"""Initial schema: watchlists and the evidence log.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "watch_lists",
        sa.Column("id", _Id, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("created_ms", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_watch_lists"),
        sa.UniqueConstraint("name", name="uq_watch_lists_name"),
    )
    op.create_table(
        "list_versions",
        sa.Column("id", _Id, primary_key=True, autoincrement=True),
        sa.Column("list_id", _Id, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("imported_ms", sa.BigInteger, nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("sources", sa.Text, nullable=False),
        sa.Column("default_category", sa.String(100)),
        sa.Column("item_count", sa.Integer, nullable=False),
        sa.Column("hash_count", sa.Integer, nullable=False),
        sa.Column("skipped_count", sa.Integer, nullable=False),
        sa.Column("active", sa.Boolean, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_list_versions"),
        sa.ForeignKeyConstraint(
            ["list_id"],
            ["watch_lists.id"],
            name="fk_list_versions_list_id_watch_lists",
            ondelete="CASCADE",
        ),
        sa.UniqueConstraint("list_id", "version", name="uq_list_versions_list_id_version"),
    )
    op.create_table(
        "watch_items",
        sa.Column("id", _Id, primary_key=True, autoincrement=True),
        sa.Column("version_id", _Id, nullable=False),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("location", sa.String(200), nullable=False),
        sa.Column("category", sa.String(100)),
        sa.Column("name", sa.Text),
        sa.Column("size", sa.BigInteger),
        sa.Column("attributes", sa.Text),
        sa.PrimaryKeyConstraint("id", name="pk_watch_items"),
        sa.ForeignKeyConstraint(
            ["version_id"],
            ["list_versions.id"],
            name="fk_watch_items_version_id_list_versions",
            ondelete="CASCADE",
        ),
    )
    op.create_index("ix_watch_items_version_id", "watch_items", ["version_id"])
    op.create_table(
        "watch_hashes",
        sa.Column("item_id", _Id, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("value", sa.LargeBinary(32), nullable=False),
        sa.ForeignKeyConstraint(
            ["item_id"],
            ["watch_items.id"],
            name="fk_watch_hashes_item_id_watch_items",
            ondelete="CASCADE",
        ),
    )
    op.create_index("ix_watch_hashes_value", "watch_hashes", ["value"])
    op.create_index("ix_watch_hashes_item_id", "watch_hashes", ["item_id"])
    op.create_table(
        "sensors",
        sa.Column("id", sa.String(100), nullable=False),
        sa.Column("public_key", sa.LargeBinary(32), nullable=False),
        sa.Column("created_ms", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_sensors"),
    )
    op.create_table(
        "evidence_records",
        sa.Column("sensor_id", sa.String(100), nullable=False),
        sa.Column("seq", sa.BigInteger, nullable=False, autoincrement=False),
        sa.Column("record", sa.LargeBinary, nullable=False),
        sa.Column("link", sa.LargeBinary(32), nullable=False),
        sa.Column("signature", sa.LargeBinary(64), nullable=False),
        sa.Column("observed_ms", sa.BigInteger, nullable=False),
        sa.Column("network", sa.String(32), nullable=False),
        sa.Column("method", sa.String(64), nullable=False),
        sa.Column("content_key", sa.String(140), nullable=False),
        sa.Column("ip", sa.String(64), nullable=False),
        sa.Column("port", sa.Integer),
        sa.PrimaryKeyConstraint("sensor_id", "seq", name="pk_evidence_records"),
        sa.ForeignKeyConstraint(
            ["sensor_id"], ["sensors.id"], name="fk_evidence_records_sensor_id_sensors"
        ),
    )
    op.create_index("ix_evidence_records_observed_ms", "evidence_records", ["observed_ms"])
    op.create_index("ix_evidence_records_content_key", "evidence_records", ["content_key"])
    op.create_index("ix_evidence_records_ip", "evidence_records", ["ip"])


def downgrade() -> None:
    op.drop_table("evidence_records")
    op.drop_table("sensors")
    op.drop_table("watch_hashes")
    op.drop_table("watch_items")
    op.drop_table("list_versions")
    op.drop_table("watch_lists")
