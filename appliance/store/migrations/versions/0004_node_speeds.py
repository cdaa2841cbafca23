"""Nodes keep what they learned per engine and task kind: reconstruction, toolchain and whole-run
submodels take very different times per image on the same box.

`speeds` is JSON, {"odm/reconstruction": {"ms": 812.5, "n": 3}, ...}. The old single `ms_per_image`
stays, and is read as one whole run until the node learns per kind.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"


def upgrade() -> None:
    with op.batch_alter_table("nodes") as batch:
        batch.add_column(sa.Column("speeds", sa.Text, nullable=False, server_default="{}"))
