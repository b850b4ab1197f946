"""Targets: observations grouped into stable identities, with explained links and scores (issue 4).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "targets",
        sa.Column("id", _Id, autoincrement=False, nullable=False),
        sa.Column("created_ms", sa.BigInteger, nullable=False),
        sa.Column("split_from", _Id),
        sa.Column("first_ms", sa.BigInteger, nullable=False),
        sa.Column("last_ms", sa.BigInteger, nullable=False),
        sa.Column("observations", sa.BigInteger, nullable=False),
        sa.Column("positive_first_ms", sa.BigInteger),
        sa.Column("positive_last_ms", sa.BigInteger),
        sa.Column("possessed_items", sa.Integer, nullable=False),
        sa.Column("max_severity", sa.Integer, nullable=False),
        sa.Column("possessed_bytes", sa.BigInteger, nullable=False),
        sa.Column("possessed_mib_bits", sa.Integer, nullable=False),
        sa.Column("seeded_items", sa.Integer, nullable=False),
        sa.Column("claimed_items", sa.Integer, nullable=False),
        sa.Column("positive_networks", sa.Integer, nullable=False),
        sa.Column("networks", sa.Text, nullable=False),
        sa.Column("ips", sa.Text, nullable=False),
        sa.Column("content_keys", sa.Text, nullable=False),
        sa.Column("flags", sa.Text, nullable=False),
        sa.Column("place_ip", sa.String(64)),
        sa.Column("place_observed_ms", sa.BigInteger),
        sa.Column("placed_ms", sa.BigInteger),
        sa.Column("country", sa.String(8)),
        sa.Column("jurisdiction", sa.String(100)),
        sa.Column("jurisdiction_name", sa.String(200)),
        sa.Column("jurisdiction_method", sa.String(32)),
        sa.Column("jurisdiction_confidence", sa.String(32)),
        sa.Column("unit", sa.String(100)),
        sa.Column("location_confidence", sa.String(16), nullable=False),
        sa.Column("place_sources", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_targets"),
    )
    op.create_index("ix_targets_jurisdiction", "targets", ["jurisdiction"])
    op.create_index("ix_targets_unit", "targets", ["unit"])
    op.create_table(
        "target_links",
        sa.Column("id", _Id, autoincrement=False, nullable=False),
        sa.Column("target_id", _Id, nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("network", sa.String(32), nullable=False),
        sa.Column("ip", sa.String(64), nullable=False),
        sa.Column("port", sa.Integer),
        sa.Column("client", sa.String(200)),
        sa.Column("asn", sa.BigInteger),
        sa.Column("first_ms", sa.BigInteger, nullable=False),
        sa.Column("last_ms", sa.BigInteger, nullable=False),
        sa.Column("positive_last_ms", sa.BigInteger),
        sa.Column("sensor_id", sa.String(100), nullable=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("observations", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_target_links"),
        sa.ForeignKeyConstraint(
            ["target_id"], ["targets.id"], name="fk_target_links_target_id_targets"
        ),
    )
    op.create_index("ix_target_links_target_id", "target_links", ["target_id"])
    op.create_index("ix_target_links_last_ms", "target_links", ["last_ms"])
    op.create_table(
        "target_observations",
        sa.Column("sensor_id", sa.String(100), nullable=False),
        sa.Column("seq", sa.BigInteger, autoincrement=False, nullable=False),
        sa.Column("target_id", _Id, nullable=False),
        sa.Column("link_id", _Id, nullable=False),
        sa.Column("observed_ms", sa.BigInteger, nullable=False),
        sa.Column("network", sa.String(32), nullable=False),
        sa.Column("method", sa.String(64), nullable=False),
        sa.Column("outcome", sa.String(64)),
        sa.Column("content_key", sa.String(140), nullable=False),
        sa.Column("ip", sa.String(64), nullable=False),
        sa.Column("port", sa.Integer),
        sa.Column("client", sa.String(200)),
        sa.Column("completion_ppm", sa.Integer),
        sa.PrimaryKeyConstraint("sensor_id", "seq", name="pk_target_observations"),
    )
    op.create_index("ix_target_observations_target_id", "target_observations", ["target_id"])
    op.create_index("ix_target_observations_link_id", "target_observations", ["link_id"])
    op.create_table(
        "target_items",
        sa.Column("target_id", _Id, autoincrement=False, nullable=False),
        sa.Column("content_key", sa.String(140), nullable=False),
        sa.Column("network", sa.String(32), nullable=False),
        sa.Column("first_ms", sa.BigInteger, nullable=False),
        sa.Column("last_ms", sa.BigInteger, nullable=False),
        sa.Column("possessions", sa.BigInteger, nullable=False),
        sa.Column("claims", sa.BigInteger, nullable=False),
        sa.Column("negatives", sa.BigInteger, nullable=False),
        sa.Column("best_ppm", sa.Integer),
        sa.Column("positive_first_ms", sa.BigInteger),
        sa.Column("positive_last_ms", sa.BigInteger),
        sa.PrimaryKeyConstraint("target_id", "content_key", name="pk_target_items"),
    )
    op.create_table(
        "target_contents",
        sa.Column("content_key", sa.String(140), nullable=False),
        sa.Column("watched", sa.Boolean, nullable=False),
        sa.Column("category", sa.String(100)),
        sa.Column("severity", sa.Integer, nullable=False),
        sa.Column("size", sa.BigInteger),
        sa.Column("lists", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("content_key", name="pk_target_contents"),
    )
    op.create_table(
        "target_cursors",
        sa.Column("sensor_id", sa.String(100), nullable=False),
        sa.Column("last_seq", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("sensor_id", name="pk_target_cursors"),
    )
    op.create_table(
        "target_meta",
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("value", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_target_meta"),
    )


def downgrade() -> None:
    for table in (
        "target_meta",
        "target_cursors",
        "target_contents",
        "target_items",
        "target_observations",
        "target_links",
        "targets",
    ):
        op.drop_table(table)
