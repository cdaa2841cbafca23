"""Upstream nodes: a NodeODM-compatible endpoint beyond the site (a cloud node, ClusterODM), reached
over a measured uplink.

- nodes.upstream: the node is beyond the site (placement counts its link, results are brought home);
- nodes.link: that link as last measured ({"up_mbps", "down_mbps", "rtt_ms"}, appliance/cluster/link.py).

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"


def upgrade() -> None:
    with op.batch_alter_table("nodes") as batch:
        batch.add_column(sa.Column("upstream", sa.Boolean, nullable=False, server_default=sa.false()))
        batch.add_column(sa.Column("link", sa.JSON, nullable=False, server_default="{}"))
