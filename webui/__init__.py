"""The web UI: server-rendered pages with no external assets, for a field without internet."""
