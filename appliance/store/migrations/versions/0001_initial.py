"""The first schema: tasks, nodes and the events audit log.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None


def upgrade() -> None:
    op.create_table(
        "tasks",
        sa.Column("uuid", sa.String(36), primary_key=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("phase", sa.String(16), nullable=False, index=True),
        sa.Column("status", sa.Integer, nullable=False),
        sa.Column("node_id", sa.Integer, nullable=True, index=True),
        sa.Column("progress", sa.Float, nullable=False),
        sa.Column("images_count", sa.Integer, nullable=False),
        sa.Column("options", sa.Text, nullable=False),
        sa.Column("outputs", sa.Text, nullable=True),
        sa.Column("skip_post_processing", sa.Boolean, nullable=False),
        sa.Column("webhook", sa.Text, nullable=False),
        sa.Column("date_created_ms", sa.Integer, nullable=False),
        sa.Column("committed_at", sa.Float, nullable=True),
        sa.Column("finished_at", sa.Float, nullable=True),
        sa.Column("processing_time_ms", sa.Integer, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("error_message", sa.Text, nullable=False),
        sa.Column("last_error", sa.Text, nullable=False),
        sa.Column("staging_path", sa.Text, nullable=False),
        sa.Column("forwarded_files", sa.Text, nullable=False),
        sa.Column("output_tail", sa.Text, nullable=False),
        sa.Column("job_key", sa.String(64), nullable=False),
    )
    op.create_table(
        "nodes",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("url", sa.Text, nullable=False, unique=True),
        sa.Column("token", sa.Text, nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("locked", sa.Boolean, nullable=False),
        sa.Column("label", sa.Text, nullable=False),
        sa.Column("last_info", sa.Text, nullable=False),
        sa.Column("last_options", sa.Text, nullable=False),
        sa.Column("last_seen", sa.Float, nullable=True),
        sa.Column("ms_per_image", sa.Float, nullable=True),
    )
    op.create_table(
        "events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(32), nullable=False, index=True),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("task_uuid", sa.String(36), nullable=True, index=True),
        sa.Column("node_id", sa.Integer, nullable=True),
        sa.Column("at", sa.Float, nullable=False),
    )
