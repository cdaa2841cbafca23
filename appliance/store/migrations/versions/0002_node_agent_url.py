"""Nodes remember the Passel agent of the box they run on, for split-merge's sm-cluster.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"


def upgrade() -> None:
    with op.batch_alter_table("nodes") as batch:
        batch.add_column(sa.Column("agent_url", sa.Text, nullable=False, server_default=""))
