"""Placement counts the cost of moving a task's images: it needs their size, and which box each node
is on.

- tasks.data_bytes: the size of the staged files, known at commit (0 before);
- nodes.box: the id of the box that shares the node over mDNS ('' when added by hand or unknown).

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"


def upgrade() -> None:
    with op.batch_alter_table("tasks") as batch:
        batch.add_column(sa.Column("data_bytes", sa.Integer, nullable=False, server_default="0"))
    with op.batch_alter_table("nodes") as batch:
        batch.add_column(sa.Column("box", sa.String(16), nullable=False, server_default=""))
