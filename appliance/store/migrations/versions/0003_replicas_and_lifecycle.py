"""Task rows carry what replicas and the staging lifecycle need.

- rev: a version number the coordinator bumps on every write, so followers pull only what changed;
- owner: the box that last wrote the row as coordinator (rows a stepping-down box owns are handed over);
- staged_on: the box whose disk holds the task's staged upload;
- notes: lines Passel adds to the task's output (moves, re-dispatches);
- downloaded_at: when all.zip was fully sent to a client, after which the staged copy can go.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"


def upgrade() -> None:
    with op.batch_alter_table("tasks") as batch:
        batch.add_column(sa.Column("rev", sa.Integer, nullable=False, server_default="0"))
        batch.add_column(sa.Column("owner", sa.String(16), nullable=False, server_default=""))
        batch.add_column(sa.Column("staged_on", sa.String(16), nullable=False, server_default=""))
        batch.add_column(sa.Column("notes", sa.Text, nullable=False, server_default="[]"))
        batch.add_column(sa.Column("downloaded_at", sa.Float, nullable=True))
        batch.create_index("ix_tasks_rev", ["rev"])
