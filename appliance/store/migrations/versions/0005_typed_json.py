"""Structured columns are read as JSON by the models (lists and dicts in memory), so every stored
value must be JSON of the right shape.

Revision 0001 kept `forwarded_files` as a bare list of the files on `node_id`; it becomes
{"node_id": ..., "files": [...]}, as written since. Any value that is not valid JSON of the expected
shape (never written by Passel, but a damaged file must still open) becomes the empty default.
SQLite keeps the TEXT affinity, so no column changes.

Revision ID: 0005
Revises: 0004
"""

from alembic import op

revision = "0005"
down_revision = "0004"

# table, column, JSON type it must hold, value otherwise
SHAPES = [
    ("tasks", "options", "array", "'[]'"),
    ("tasks", "outputs", "array", "NULL"),
    ("tasks", "forwarded_files", "object", "'{}'"),
    ("tasks", "output_tail", "array", "'[]'"),
    ("tasks", "notes", "array", "'[]'"),
    ("nodes", "last_info", "object", "'{}'"),
    ("nodes", "last_options", "array", "'[]'"),
    ("nodes", "speeds", "object", "'{}'"),
]


def upgrade() -> None:
    op.execute("UPDATE tasks SET forwarded_files = json_object('node_id', node_id, 'files', json(forwarded_files)) "
               "WHERE json_valid(forwarded_files) AND json_type(forwarded_files) = 'array'")
    for table, column, shape, empty in SHAPES:
        op.execute(f"UPDATE {table} SET {column} = {empty} WHERE {column} IS NOT NULL "
                   f"AND (NOT json_valid({column}) OR json_type({column}) != '{shape}')")
