"""One thread owns the SQLite connection; the event loop hands it work and awaits the result.

This is datasette's pattern reduced to its core: SQLite is fast, but every call blocks, so it never
runs on the event loop, and one owner thread means no lock fights inside the process.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, event, select
from sqlalchemy.dialects.sqlite import insert
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from appliance.store.models import Base, Event, Node, Task, row_values

T = TypeVar("T")
log = logging.getLogger("passel.events")
schema_log = logging.getLogger("passel.store")
MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def is_disk_full(exc: BaseException) -> bool:
    """SQLite's "database or disk is full", or a file write that found no room: a state the box
    outlives (the disk frees up), unlike any other database error."""
    if isinstance(exc, OperationalError):
        return getattr(exc.orig, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


def _tune_sqlite(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")  # field boxes lose power; a committed task must survive
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


def make_engine(path: Path) -> Engine:
    engine = create_engine(f"sqlite:///{path}", future=True)
    event.listen(engine, "connect", _tune_sqlite)
    return engine


def upgrade_schema(engine: Engine) -> None:
    """Bring the database to the newest schema; boxes are upgraded in place."""
    config = AlembicConfig()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    with engine.begin() as connection:
        before = MigrationContext.configure(connection).get_current_revision()
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
    head = ScriptDirectory.from_config(config).get_current_head()
    if before != head:
        schema_log.info("Task database %s: %s schema %s", engine.url.database,
                        f"upgraded from schema {before} to" if before else "created with", head)


class Store:
    """Asynchronous access to the database through its single owner thread."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="passel-db")
        self._engine: Engine | None = None
        self._events_refused = False  # a full disk: said once, not at every event

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._engine = make_engine(self.path)
        await self._run(upgrade_schema, self._engine)

    async def close(self) -> None:
        if self._engine is not None:
            await self._run(self._engine.dispose)
        self._executor.shutdown(wait=True)

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def session(self, fn: Callable[[Session], T]) -> T:
        """Run `fn(session)` in one transaction on the owner thread."""
        def work() -> T:
            assert self._engine is not None
            with Session(self._engine, expire_on_commit=False) as session, session.begin():
                result = fn(session)
                session.flush()
                session.expunge_all()
                return result
        return await self._run(work)

    async def load(self, model: type[Base]) -> list[Any]:
        return await self.session(lambda s: list(s.scalars(select(model))))

    async def save(self, *rows: Base) -> None:
        """Insert or replace rows by primary key, from detached in-memory records."""
        snapshots = [(type(r), row_values(r)) for r in rows]

        def work(session: Session) -> None:
            for model, values in snapshots:
                stmt = insert(model).values(**values)
                keys = [c.name for c in model.__table__.primary_key]
                session.execute(stmt.on_conflict_do_update(index_elements=keys, set_=values))
        await self.session(work)

    async def delete(self, model: type[Base], key: Any) -> None:
        await self.session(lambda s: s.execute(model.__table__.delete().where(
            list(model.__table__.primary_key)[0] == key)))

    async def add_node(self, node: Node) -> Node:
        def work(session: Session) -> Node:
            session.add(node)
            session.flush()
            return node
        return await self.session(work)

    async def record(self, kind: str, message: str, task_uuid: str | None = None, node_id: int | None = None) -> None:
        """Append to the audit log, and say the same thing in the journal."""
        log.info("%s", message)
        try:
            await self.session(lambda s: s.add(Event(kind=kind, message=message, task_uuid=task_uuid, node_id=node_id)))
        except (OperationalError, OSError) as exc:
            if not is_disk_full(exc):
                raise
            if not self._events_refused:
                schema_log.warning("The disk is full: events are written to the journal only, not to the UI's "
                                   "log, until there is room")
            self._events_refused = True
            return
        self._events_refused = False

    async def events(self, task_uuid: str | None = None, limit: int = 200) -> list[Event]:
        def work(session: Session) -> list[Event]:
            query = select(Event).order_by(Event.id.desc()).limit(limit)
            if task_uuid:
                query = query.where(Event.task_uuid == task_uuid)
            return list(session.scalars(query))
        return await self.session(work)


__all__ = ["Store", "Task", "Node", "Event"]
