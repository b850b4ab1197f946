"""A target link remembers the peer's stable identity on its network (the eD2k user hash), so the
`user-hash` identity rule can link a peer across addresses and ports (issue 7).

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("target_links") as batch:
        batch.add_column(sa.Column("peer_key", sa.String(64)))
        batch.create_index("ix_target_links_peer_key", ["peer_key"])


def downgrade() -> None:
    with op.batch_alter_table("target_links") as batch:
        batch.drop_index("ix_target_links_peer_key")
        batch.drop_column("peer_key")
