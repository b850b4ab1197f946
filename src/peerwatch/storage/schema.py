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

# GeoIP databases set with `peerwatch geoip set`: one active row per role ("city", "asn"); older
# rows stay so that a placement made last year can be traced to the file used then.
geoip_databases = Table(
    "geoip_databases",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("role", String(8), nullable=False),  # "city" or "asn"
    Column("path", Text, nullable=False),  # absolute path of the .mmdb file
    Column("database_type", String(100), nullable=False),  # metadata, e.g. "GeoLite2-City"
    Column("build_epoch", BigInteger, nullable=False),  # metadata: when the data was true
    Column("ip_version", Integer, nullable=False),
    Column("sha256", String(64), nullable=False),  # of the file when it was set
    Column("size", BigInteger, nullable=False),
    Column("configured_ms", BigInteger, nullable=False),
    Column("active", Boolean, nullable=False),
)

# Network flag lists (`peerwatch netflags import`): versioned per kind like the watchlist; exactly
# one version of a kind is active.
flag_lists = Table(
    "flag_lists",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("kind", String(16), nullable=False),  # "tor", "vpn", "hosting", "cgnat", "mobile"
    Column("version", Integer, nullable=False),
    Column("imported_ms", BigInteger, nullable=False),
    Column("source", Text, nullable=False),  # the imported file
    Column("sha256", String(64), nullable=False),  # of the file: the same import twice is a no-op
    Column("entry_count", Integer, nullable=False),
    Column("active", Boolean, nullable=False),
    UniqueConstraint("kind", "version"),
)

# One address/network or one ASN of a flag list.
flag_entries = Table(
    "flag_entries",
    metadata,
    Column("list_id", _Id, ForeignKey("flag_lists.id", ondelete="CASCADE"), nullable=False),
    Column("line", Integer, nullable=False),  # where it came from in the file
    Column("network", String(64)),  # "185.220.101.4/32" (address entries), else NULL
    Column("asn", BigInteger),  # 13335 (ASN entries), else NULL
    Column("name", Text),  # optional name given in the list
    Index("ix_flag_entries_list_id", "list_id"),
)

# Jurisdiction maps (`peerwatch jurisdictions import`): one active version; the geometry is kept as
# GeoJSON so that the web app can draw the map.
jurisdiction_maps = Table(
    "jurisdiction_maps",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("version", Integer, nullable=False, unique=True),
    Column("imported_ms", BigInteger, nullable=False),
    Column("source", Text, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("code_property", String(100), nullable=False),
    Column("name_property", String(100), nullable=False),
    Column("country", String(2)),  # ISO country the subdivision fallback is limited to, or NULL
    Column("feature_count", Integer, nullable=False),
    Column("active", Boolean, nullable=False),
)

jurisdictions = Table(
    "jurisdictions",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("map_id", _Id, ForeignKey("jurisdiction_maps.id", ondelete="CASCADE"), nullable=False),
    Column("code", String(64), nullable=False),  # e.g. "75", "971"
    Column("name", Text, nullable=False),
    Column("feature_index", Integer, nullable=False),  # position in the imported file
    # GeoJSON Polygon or MultiPolygon (WGS 84); NULL for a code-only jurisdiction
    Column("geometry", Text),
    UniqueConstraint("map_id", "code"),
)

# Units (`peerwatch units import`): one active version; each jurisdiction belongs to one unit.
unit_lists = Table(
    "unit_lists",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("version", Integer, nullable=False, unique=True),
    Column("imported_ms", BigInteger, nullable=False),
    Column("source", Text, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("map_version", Integer, nullable=False),  # the jurisdiction map it was checked against
    Column("unit_count", Integer, nullable=False),
    Column("active", Boolean, nullable=False),
)

units = Table(
    "units",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("list_id", _Id, ForeignKey("unit_lists.id", ondelete="CASCADE"), nullable=False),
    Column("code", String(100), nullable=False),  # e.g. "OFMIN-PARIS"
    Column("name", Text, nullable=False),
    Column("line", Integer, nullable=False),
    UniqueConstraint("list_id", "code"),
)

unit_jurisdictions = Table(
    "unit_jurisdictions",
    metadata,
    Column("list_id", _Id, ForeignKey("unit_lists.id", ondelete="CASCADE"), nullable=False),
    Column("unit_code", String(100), nullable=False),
    Column("jurisdiction", String(64), nullable=False),
    # The database itself refuses a jurisdiction claimed by two units.
    UniqueConstraint("list_id", "jurisdiction"),
)

# --- targets (migration 0003) ---

# Targets (docs/leads.md): observations grouped into stable identities. Everything here is derived
# from the evidence log and can be rebuilt from it; ids are assigned by the target store (max + 1
# under its lock), never by a sequence, so that they stay stable across refreshes and splits.
targets = Table(
    "targets",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=False),
    Column("created_ms", BigInteger, nullable=False),  # wall clock of the refresh that made it
    Column("split_from", _Id),  # the target an investigator split this one from
    Column("first_ms", BigInteger, nullable=False),  # first and last observation of any outcome
    Column("last_ms", BigInteger, nullable=False),
    Column("observations", BigInteger, nullable=False),
    # Score facts (score.py), kept up to date at every refresh that touches the target.
    Column("positive_first_ms", BigInteger),  # first and last "possession" or "claim"
    Column("positive_last_ms", BigInteger),
    Column("possessed_items", Integer, nullable=False),
    Column("max_severity", Integer, nullable=False),
    Column("possessed_bytes", BigInteger, nullable=False),
    Column("possessed_mib_bits", Integer, nullable=False),  # bit length of (bytes // 1 MiB)
    Column("seeded_items", Integer, nullable=False),
    Column("claimed_items", Integer, nullable=False),
    Column("positive_networks", Integer, nullable=False),
    Column("networks", Text, nullable=False),  # space-separated, sorted
    Column("ips", Text, nullable=False),  # space-separated, in order of first sighting
    Column("content_keys", Text, nullable=False),  # space-separated, sorted
    Column("flags", Text, nullable=False),  # space-separated, sorted: flags of every address
    # The placement that routes the target: of the address of its latest positive observation.
    Column("place_ip", String(64)),
    Column("place_observed_ms", BigInteger),  # when that address was seen
    Column("placed_ms", BigInteger),  # when it was placed (wall clock of the refresh)
    Column("country", String(8)),
    Column("jurisdiction", String(100)),
    Column("jurisdiction_name", String(200)),
    Column("jurisdiction_method", String(32)),
    Column("jurisdiction_confidence", String(32)),
    Column("unit", String(100)),
    Column("location_confidence", String(16), nullable=False),  # high, medium, low, none
    Column("place_sources", Text, nullable=False),  # JSON list: databases and builds that placed it
    Index("ix_targets_jurisdiction", "jurisdiction"),
    Index("ix_targets_unit", "unit"),
)

# One row per endpoint (network, IP, port) of a target, with the link that brought it in.
target_links = Table(
    "target_links",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=False),
    Column("target_id", _Id, ForeignKey("targets.id"), nullable=False),
    Column("kind", String(32), nullable=False),  # origin, endpoint rules of identity.py, split
    Column("reason", Text, nullable=False),  # "linked because ..."
    Column("network", String(32), nullable=False),
    Column("ip", String(64), nullable=False),
    Column("port", Integer),
    Column("client", String(200)),  # the first client name seen on this endpoint
    Column("asn", BigInteger),  # of the IP when linked, if a GeoIP ASN database knew it
    Column("first_ms", BigInteger, nullable=False),
    Column("last_ms", BigInteger, nullable=False),
    Column("positive_last_ms", BigInteger),  # last "possession" or "claim" on this endpoint
    Column("sensor_id", String(100), nullable=False),  # the observation that made the link
    Column("seq", BigInteger, nullable=False),
    Column("observations", BigInteger, nullable=False),
    # The peer's own stable identity on its network when it has one (the eD2k user hash, hex;
    # identity.peer_key), first seen on this endpoint (migration 0006).
    Column("peer_key", String(64)),
    Index("ix_target_links_target_id", "target_id"),
    Index("ix_target_links_last_ms", "last_ms"),
    Index("ix_target_links_peer_key", "peer_key"),
)

# Every assigned evidence record, with copies of the fields leads need (never re-parsed JSON).
target_observations = Table(
    "target_observations",
    metadata,
    Column("sensor_id", String(100), primary_key=True),
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("target_id", _Id, nullable=False),
    Column("link_id", _Id, nullable=False),
    Column("observed_ms", BigInteger, nullable=False),
    Column("network", String(32), nullable=False),
    Column("method", String(64), nullable=False),
    Column("outcome", String(64)),
    Column("content_key", String(140), nullable=False),
    Column("ip", String(64), nullable=False),
    Column("port", Integer),
    Column("client", String(200)),
    Column("completion_ppm", Integer),
    Index("ix_target_observations_target_id", "target_id"),
    Index("ix_target_observations_link_id", "link_id"),
)

# Per target and content: the facts the score is made of.
target_items = Table(
    "target_items",
    metadata,
    Column("target_id", _Id, primary_key=True, autoincrement=False),
    Column("content_key", String(140), primary_key=True),
    Column("network", String(32), nullable=False),
    Column("first_ms", BigInteger, nullable=False),
    Column("last_ms", BigInteger, nullable=False),
    Column("possessions", BigInteger, nullable=False),  # observations with outcome "possession"
    Column("claims", BigInteger, nullable=False),  # observations with outcome "claim"
    Column("negatives", BigInteger, nullable=False),  # every other outcome
    Column("best_ppm", Integer),  # highest completion among the possession observations
    Column("positive_first_ms", BigInteger),
    Column("positive_last_ms", BigInteger),
)

# What the watchlist says about each content key seen, as of the last refresh.
target_contents = Table(
    "target_contents",
    metadata,
    Column("content_key", String(140), primary_key=True),
    Column("watched", Boolean, nullable=False),
    Column("category", String(100)),  # of the entry with the highest severity
    Column("severity", Integer, nullable=False),
    Column("size", BigInteger),  # largest listed size
    Column("lists", Text, nullable=False),  # space-separated list names
)

# How far each sensor's chain has been assigned, and the watchlist state the contents reflect.
target_cursors = Table(
    "target_cursors",
    metadata,
    Column("sensor_id", String(100), primary_key=True),
    Column("last_seq", BigInteger, nullable=False),
)

target_meta = Table(
    "target_meta",
    metadata,
    Column("name", String(100), primary_key=True),
    Column("value", Text, nullable=False),
)

# --- lead workflow (migration 0004) ---

# The current state of each lead (docs/operations.md). A target without a row is a new lead nobody
# has touched. The primary key on target_id is the deconfliction: one row per target, so one holder,
# and every change is a compare-and-set on (state, unit, version) that exactly one writer wins.
lead_states = Table(
    "lead_states",
    metadata,
    Column("target_id", _Id, ForeignKey("targets.id"), primary_key=True, autoincrement=False),
    Column("state", String(32), nullable=False),  # new, claimed, in-investigation, ...
    Column("unit", String(100)),  # code of the holding unit; NULL when nobody holds it
    Column("holder", String(200)),  # the user who claimed it or took it over
    Column("since_ms", BigInteger),  # when the holding unit took it (claim or transfer)
    Column("outcome", String(64)),  # set when closed
    Column("updated_ms", BigInteger, nullable=False),
    Column("version", Integer, nullable=False),  # +1 at every change
    Index("ix_lead_states_unit", "unit"),
)

# Every change of a lead, append-only (database triggers refuse UPDATE and DELETE).
lead_history = Table(
    "lead_history",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("target_id", _Id, ForeignKey("targets.id"), nullable=False),
    Column("at_ms", BigInteger, nullable=False),
    Column("actor", String(200), nullable=False),  # the user, a free string for now
    Column("unit", String(100)),  # the unit the user acted for
    Column("action", String(32), nullable=False),  # claim, release, transfer, state
    Column("from_state", String(32), nullable=False),
    Column("to_state", String(32), nullable=False),
    Column("from_unit", String(100)),
    Column("to_unit", String(100)),
    Column("outcome", String(64)),
    Column("note", Text),
    Index("ix_lead_history_target_id", "target_id"),
)

# Alerts per unit. (unit, kind, target_id, dedup) is unique, so a scan run twice raises nothing new.
lead_alerts = Table(
    "lead_alerts",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("unit", String(100), nullable=False),
    Column("kind", String(32), nullable=False),  # new-lead, claimed-seen-again
    Column("target_id", _Id, ForeignKey("targets.id"), nullable=False),
    Column("dedup", String(100), nullable=False),  # what makes this alert distinct for its target
    Column("created_ms", BigInteger, nullable=False),
    Column("first_ms", BigInteger),  # first and last observation the alert is about
    Column("last_ms", BigInteger),
    Column("observations", Integer, nullable=False),
    Column("detail", Text, nullable=False),  # JSON object
    Column("acknowledged_ms", BigInteger),
    Column("acknowledged_by", String(200)),
    UniqueConstraint("unit", "kind", "target_id", "dedup"),
    Index("ix_lead_alerts_unit", "unit"),
)

# National operations: a frozen selection of leads. The snapshot of each target is written once;
# both tables are append-only in the database (triggers refuse UPDATE and DELETE).
operations = Table(
    "operations",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("name", String(200), nullable=False, unique=True),
    Column("created_ms", BigInteger, nullable=False),
    Column("created_by", String(200), nullable=False),
    Column("filters", Text, nullable=False),  # JSON object of the filters used
    Column("target_count", Integer, nullable=False),
)

operation_targets = Table(
    "operation_targets",
    metadata,
    Column("operation_id", _Id, ForeignKey("operations.id"), primary_key=True, autoincrement=False),
    Column("target_id", _Id, ForeignKey("targets.id"), primary_key=True, autoincrement=False),
    Column("unit", String(100)),
    Column("jurisdiction", String(100)),
    Column("snapshot", Text, nullable=False),  # JSON: the target and its requisition lines, frozen
)

# Every retention purge, append-only (triggers): what rule, when, how many.
retention_purges = Table(
    "retention_purges",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("at_ms", BigInteger, nullable=False),
    Column("actor", String(200), nullable=False),
    Column("rule", Text, nullable=False),
    Column("days", Integer, nullable=False),
    Column("cutoff_ms", BigInteger, nullable=False),
    Column("records", Integer, nullable=False),
    Column("targets", Integer, nullable=False),
    Column("detail", Text, nullable=False),  # JSON: per sensor, the purged sequence numbers
)

# What stays of a purged evidence record: its place, its record hash, its link and its signature,
# which is all the chain needs to keep verifying (docs/evidence.md, "Retention").
evidence_purged = Table(
    "evidence_purged",
    metadata,
    Column("sensor_id", String(100), ForeignKey("sensors.id"), primary_key=True),
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("record_sha256", LargeBinary(32), nullable=False),
    Column("link", LargeBinary(32), nullable=False),
    Column("signature", LargeBinary(64), nullable=False),
    Column("observed_ms", BigInteger, nullable=False),
    Column("purge_id", _Id, ForeignKey("retention_purges.id"), nullable=False),
)

# --- accounts and audit (migration 0005) ---

# Web app accounts (docs/webapp.md). Roles: coordinator, investigator, auditor, admin; `unit` is the
# unit code of an investigator (NULL for the other roles).
users = Table(
    "users",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("name", String(200), nullable=False, unique=True),
    Column("role", String(16), nullable=False),
    Column("unit", String(100)),
    Column("password_hash", Text, nullable=False),  # argon2id, PHC string
    # sealed (accounts/secret_box.py; plain base32 before migration 0008), NULL when TOTP is off
    Column("totp_secret", String(200)),
    Column("totp_last_step", BigInteger),  # last accepted time step: a code is never used twice
    Column("disabled", Boolean, nullable=False),
    Column("created_ms", BigInteger, nullable=False),
)

# Browser sessions. Only the SHA-256 of the cookie's token is stored, so a copy of the database
# opens no session. `stage` is "totp" between password and second factor, then "active".
web_sessions = Table(
    "web_sessions",
    metadata,
    Column("token_sha256", LargeBinary(32), primary_key=True),
    Column("user_id", _Id, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("stage", String(16), nullable=False),
    Column("created_ms", BigInteger, nullable=False),
    Column("expires_ms", BigInteger, nullable=False),
    # Last use, to end idle sessions (AccountsConfig.idle_ms); written at most once a minute.
    Column("last_seen_ms", BigInteger),
    Column("address", String(64)),  # client address at login
    Index("ix_web_sessions_user_id", "user_id"),
)

# Bearer tokens for scripts and sensors: a role (and unit) like a user; stored hashed.
api_tokens = Table(
    "api_tokens",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("name", String(200), nullable=False, unique=True),
    Column("token_sha256", LargeBinary(32), nullable=False, unique=True),
    Column("role", String(16), nullable=False),
    Column("unit", String(100)),
    Column("created_ms", BigInteger, nullable=False),
    Column("revoked_ms", BigInteger),
)

# Login attempts, kept for the rate limiter (persisted: limits hold across restarts and workers).
login_attempts = Table(
    "login_attempts",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("at_ms", BigInteger, nullable=False),
    Column("account", String(200), nullable=False),  # the name typed, existing or not
    Column("address", String(64), nullable=False),
    Column("ok", Boolean, nullable=False),
    Index("ix_login_attempts_account", "account"),
    Index("ix_login_attempts_address", "address"),
)

# The audit log: who did what, when, from where; hash-chained (docs/webapp.md, "Audit log") and
# append-only (database triggers refuse UPDATE and DELETE).
audit_log = Table(
    "audit_log",
    metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("at_ms", BigInteger, nullable=False),
    Column("actor", String(200), nullable=False),
    Column("role", String(16)),
    Column("unit", String(100)),
    Column("address", String(64)),
    Column("action", String(64), nullable=False),
    Column("object", String(200)),
    Column("detail", Text, nullable=False),  # canonical JSON object
    Column("link", LargeBinary(32), nullable=False),
)
