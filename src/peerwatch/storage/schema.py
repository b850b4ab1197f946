"""The tables, as SQLAlchemy Core metadata.

The migrations in `migrations/versions/` are the authority on what a database holds; a test compares
them with this module so the two never drift (tests/storage/test_migrations.py).
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

# Constraint names are fixed so that migrations can refer to them on both SQLite and PostgreSQL.
metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# Integer primary keys: BigInteger on PostgreSQL, INTEGER (rowid alias) on SQLite.
_Id = BigInteger().with_variant(Integer(), "sqlite")

watch_lists = Table(
    "watch_lists",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("name", String(200), nullable=False, unique=True),
    Column("created_ms", BigInteger, nullable=False),
)

# One row per imported version of a list. Exactly one version of a list is active (matched) at a
# time;
# older versions stay for provenance until the list is removed.
list_versions = Table(
    "list_versions",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("list_id", _Id, ForeignKey("watch_lists.id", ondelete="CASCADE"), nullable=False),
    Column("version", Integer, nullable=False),
    Column("imported_ms", BigInteger, nullable=False),
    # SHA-256 over the sources' bytes and the import options: the same import twice is a no-op.
    Column("fingerprint", String(64), nullable=False),
    Column("sources", Text, nullable=False),  # JSON: [{"path", "sha256", "size", "format"}]
    Column("default_category", String(100)),
    Column("item_count", Integer, nullable=False),
    Column("hash_count", Integer, nullable=False),
    Column("skipped_count", Integer, nullable=False),
    Column("active", Boolean, nullable=False),
    UniqueConstraint("list_id", "version"),
)

# A record of a list: one line, one CSV row, one VICS media entry, one torrent or one file inside
# it.
watch_items = Table(
    "watch_items",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("version_id", _Id, ForeignKey("list_versions.id", ondelete="CASCADE"), nullable=False),
    Column("source", Text, nullable=False),  # the file the record came from
    Column("location", String(200), nullable=False),  # "line 12", "record 3", "info.files[2]"
    Column("category", String(100)),
    Column("name", Text),
    Column("size", BigInteger),
    Column("attributes", Text),  # JSON object of format-specific fields, or NULL
    Index("ix_watch_items_version_id", "version_id"),
)

watch_hashes = Table(
    "watch_hashes",
    metadata,
    Column("item_id", _Id, ForeignKey("watch_items.id", ondelete="CASCADE"), nullable=False),
    Column("kind", String(16), nullable=False),  # HashKind value; ambiguous kinds like "sha1|btih"
    Column("value", LargeBinary(32), nullable=False),
    Index("ix_watch_hashes_value", "value"),
    Index("ix_watch_hashes_item_id", "item_id"),
)

# Sensors that write evidence, with the public half of their Ed25519 key.
sensors = Table(
    "sensors",
    metadata,
    Column("id", String(100), primary_key=True),
    Column("public_key", LargeBinary(32), nullable=False),
    Column("created_ms", BigInteger, nullable=False),
)

# The evidence log: one row per observation, hash-chained and signed per sensor (docs/evidence.md).
# `record` holds the canonical bytes; the other columns are copies for querying only and are never
# trusted by verification.
evidence_records = Table(
    "evidence_records",
    metadata,
    Column("sensor_id", String(100), ForeignKey("sensors.id"), primary_key=True),
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("record", LargeBinary, nullable=False),
    Column("link", LargeBinary(32), nullable=False),
    Column("signature", LargeBinary(64), nullable=False),
    Column("observed_ms", BigInteger, nullable=False),
    Column("network", String(32), nullable=False),
    Column("method", String(64), nullable=False),
    Column("content_key", String(140), nullable=False),
    Column("ip", String(64), nullable=False),
    Column("port", Integer),
    Index("ix_evidence_records_observed_ms", "observed_ms"),
    Index("ix_evidence_records_content_key", "content_key"),
    Index("ix_evidence_records_ip", "ip"),
)

# --- enrichment (migration 0002) ---

# --- targets (migration 0003) ---

# --- lead workflow (migration 0004) ---
