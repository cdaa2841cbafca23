"""The coordinator's SQLite state: models, migrations and one thread that owns the connection."""
