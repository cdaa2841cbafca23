"""A split job's submodels remember the task that made them, so the pages show them as one job.

- parent_uuid: the uuid of that task ('' for any other task), from the submodel's `?token=job-<uuid>`
  (appliance/cluster/job_parts.py).

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"


def upgrade() -> None:
    with op.batch_alter_table("tasks") as batch:
        batch.add_column(sa.Column("parent_uuid", sa.String(36), nullable=False, server_default=""))
        batch.create_index("ix_tasks_parent_uuid", ["parent_uuid"])
