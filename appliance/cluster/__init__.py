"""The coordinator: API routes, staging, node registry, scheduler, dispatcher and task tracking."""
