"""A completed task's all.zip is copied to a second box, so its results outlive the node that made them.

- results_on: the box chosen to hold the copy ('' before one is chosen);
- results_copied_at: when that box confirmed it holds the whole file (None until then).

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"


def upgrade() -> None:
    with op.batch_alter_table("tasks") as batch:
        batch.add_column(sa.Column("results_on", sa.String(16), nullable=False, server_default=""))
        batch.add_column(sa.Column("results_copied_at", sa.Float, nullable=True))
