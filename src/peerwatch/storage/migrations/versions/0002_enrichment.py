"""Enrichment: GeoIP sources, network flag lists, jurisdictions and units (issue 4).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "geoip_databases",
        sa.Column("id", _Id, primary_key=True, autoincrement=True),
        sa.Column("role", sa.String(8), nullable=False),
        sa.Column("path", sa.Text, nullable=False),
        sa.Column("database_type", sa.String(100), nullable=False),
        sa.Column("build_epoch", sa.BigInteger, nullable=False),
        sa.Column("ip_version", sa.Integer, nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("configured_ms", sa.BigInteger, nullable=False),
        sa.Column("active", sa.Boolean, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_geoip_databases"),
    )
    op.create_table(
        "flag_lists",
        sa.Column("id", _Id, primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("imported_ms", sa.BigInteger, nullable=False),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("entry_count", sa.Integer, nullable=False),
        sa.Column("active", sa.Boolean, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_flag_lists"),
        sa.UniqueConstraint("kind", "version", name="uq_flag_lists_kind_version"),
    )
    op.create_table(
        "flag_entries",
        sa.Column("list_id", _Id, nullable=False),
        sa.Column("line", sa.Integer, nullable=False),
        sa.Column("network", sa.String(64)),
        sa.Column("asn", sa.BigInteger),
        sa.Column("name", sa.Text),
        sa.ForeignKeyConstraint(
            ["list_id"],
            ["flag_lists.id"],
            name="fk_flag_entries_list_id_flag_lists",
            ondelete="CASCADE",
        ),
    )
    op.create_index("ix_flag_entries_list_id", "flag_entries", ["list_id"])
    op.create_table(
        "jurisdiction_maps",
        sa.Column("id", _Id, primary_key=True, autoincrement=True),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("imported_ms", sa.BigInteger, nullable=False),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("code_property", sa.String(100), nullable=False),
        sa.Column("name_property", sa.String(100), nullable=False),
        sa.Column("country", sa.String(2)),
        sa.Column("feature_count", sa.Integer, nullable=False),
        sa.Column("active", sa.Boolean, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_jurisdiction_maps"),
        sa.UniqueConstraint("version", name="uq_jurisdiction_maps_version"),
    )
    op.create_table(
        "jurisdictions",
        sa.Column("id", _Id, primary_key=True, autoincrement=True),
        sa.Column("map_id", _Id, nullable=False),
        sa.Column("code", sa.String(64), nullable=False),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("feature_index", sa.Integer, nullable=False),
        sa.Column("geometry", sa.Text),
        sa.PrimaryKeyConstraint("id", name="pk_jurisdictions"),
        sa.ForeignKeyConstraint(
            ["map_id"],
            ["jurisdiction_maps.id"],
            name="fk_jurisdictions_map_id_jurisdiction_maps",
            ondelete="CASCADE",
        ),
        sa.UniqueConstraint("map_id", "code", name="uq_jurisdictions_map_id_code"),
    )
    op.create_table(
        "unit_lists",
        sa.Column("id", _Id, primary_key=True, autoincrement=True),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("imported_ms", sa.BigInteger, nullable=False),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("map_version", sa.Integer, nullable=False),
        sa.Column("unit_count", sa.Integer, nullable=False),
        sa.Column("active", sa.Boolean, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_unit_lists"),
        sa.UniqueConstraint("version", name="uq_unit_lists_version"),
    )
    op.create_table(
        "units",
        sa.Column("id", _Id, primary_key=True, autoincrement=True),
        sa.Column("list_id", _Id, nullable=False),
        sa.Column("code", sa.String(100), nullable=False),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("line", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_units"),
        sa.ForeignKeyConstraint(
            ["list_id"],
            ["unit_lists.id"],
            name="fk_units_list_id_unit_lists",
            ondelete="CASCADE",
        ),
        sa.UniqueConstraint("list_id", "code", name="uq_units_list_id_code"),
    )
    op.create_table(
        "unit_jurisdictions",
        sa.Column("list_id", _Id, nullable=False),
        sa.Column("unit_code", sa.String(100), nullable=False),
        sa.Column("jurisdiction", sa.String(64), nullable=False),
        sa.ForeignKeyConstraint(
            ["list_id"],
            ["unit_lists.id"],
            name="fk_unit_jurisdictions_list_id_unit_lists",
            ondelete="CASCADE",
        ),
        sa.UniqueConstraint(
            "list_id", "jurisdiction", name="uq_unit_jurisdictions_list_id_jurisdiction"
        ),
    )


def downgrade() -> None:
    op.drop_table("unit_jurisdictions")
    op.drop_table("units")
    op.drop_table("unit_lists")
    op.drop_table("jurisdictions")
    op.drop_table("jurisdiction_maps")
    op.drop_index("ix_flag_entries_list_id", table_name="flag_entries")
    op.drop_table("flag_entries")
    op.drop_table("flag_lists")
    op.drop_table("geoip_databases")
