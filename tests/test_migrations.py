"""In-place upgrades: a box's database made by an older Passel opens in the new one with nothing lost.

The old database is built by Alembic at the first revision and filled with raw SQL, exactly as that
version wrote it; then the current Store opens it, which upgrades it to the newest revision.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.script import ScriptDirectory
from sqlalchemy import text

from appliance.store.database import MIGRATIONS_DIR, Store, make_engine
from appliance.store.models import Event, Node, Task

PREVIOUS = "0001"

TASK_COLUMNS_0001 = ("uuid", "name", "phase", "status", "node_id", "progress", "images_count", "options", "outputs",
                     "skip_post_processing", "webhook", "date_created_ms", "committed_at", "finished_at",
                     "processing_time_ms", "attempts", "error_message", "last_error", "staging_path",
                     "forwarded_files", "output_tail", "job_key")
NODE_COLUMNS_0001 = ("url", "token", "source", "locked", "label", "last_info", "last_options", "last_seen",
                     "ms_per_image")


def _task(n: int, phase: str, status: int, node_id: int | None) -> dict[str, Any]:
    return {"uuid": f"00000000-0000-4000-8000-{n:012d}", "name": f"Task {n}", "phase": phase, "status": status,
            "node_id": node_id, "progress": 12.5 * n, "images_count": 10 + n,
            "options": json.dumps([{"name": "fast-orthophoto", "value": True}]),
            "outputs": json.dumps(["odm_orthophoto/odm_orthophoto.tif"]) if n % 2 else None,
            "skip_post_processing": n % 2, "webhook": "", "date_created_ms": 1_700_000_000_000 + n,
            "committed_at": 1_700_000_100.0 + n if phase != "uploading" else None,
            "finished_at": 1_700_000_900.0 if phase == "finished" else None, "processing_time_ms": -1,
            "attempts": 1, "error_message": "", "last_error": "", "staging_path": f"/var/lib/passel/staging/{n}",
            "forwarded_files": json.dumps([f"img{i}.jpg" for i in range(n)]), "output_tail": "[]",
            "job_key": "job-a"}


OLD_TASKS = [_task(1, "uploading", 10, 1), _task(2, "waiting", 10, None), _task(3, "on_node", 20, 1),
             _task(4, "on_node", 20, 2), _task(5, "finished", 40, 2), _task(6, "finished", 30, 1)]
OLD_NODES = [{"url": "http://10.0.0.5:3001", "token": "secret", "source": "config", "locked": 0, "label": "",
              "last_info": "{}", "last_options": "[]", "last_seen": 1_700_000_000.0, "ms_per_image": 850.0},
             {"url": "http://10.0.0.6:3001", "token": "", "source": "manual", "locked": 1, "label": "tent",
              "last_info": "{}", "last_options": "[]", "last_seen": None, "ms_per_image": None}]


def _alembic(connection: Any) -> AlembicConfig:
    config = AlembicConfig()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = connection
    return config


def _make_old_database(path: Path) -> None:
    engine = make_engine(path)
    with engine.begin() as connection:
        command.upgrade(_alembic(connection), PREVIOUS)
        connection.execute(text(f"INSERT INTO tasks ({', '.join(TASK_COLUMNS_0001)}) "
                                f"VALUES ({', '.join(':' + c for c in TASK_COLUMNS_0001)})"), OLD_TASKS)
        connection.execute(text(f"INSERT INTO nodes ({', '.join(NODE_COLUMNS_0001)}) "
                                f"VALUES ({', '.join(':' + c for c in NODE_COLUMNS_0001)})"), OLD_NODES)
        connection.execute(text("INSERT INTO events (kind, message, task_uuid, node_id, at) "
                                "VALUES ('accepted', 'Task 1 accepted', :uuid, NULL, 1700000000.0)"),
                           {"uuid": OLD_TASKS[0]["uuid"]})
    engine.dispose()


def _revision(path: Path) -> str:
    engine = make_engine(path)
    with engine.connect() as connection:
        revision = connection.execute(text("SELECT version_num FROM alembic_version")).scalar_one()
    engine.dispose()
    return revision


def _added_since_previous(model: type, old_columns: tuple[str, ...], key: str) -> dict[str, Any]:
    """Columns a later revision added, with the default the model gives them: a plain value, or an
    empty list or dict (a default computed at the time, such as a date, is left out)."""
    factories = {name: f.default_factory for name, f in model.__dataclass_fields__.items()}  # type: ignore[attr-defined]
    defaults: dict[str, Any] = {}
    for column in model.__table__.columns:
        if column.name in old_columns or column.name == key:
            continue
        if column.default is not None and not callable(column.default.arg):
            defaults[column.name] = column.default.arg
        elif factories.get(column.name) in (list, dict):
            defaults[column.name] = factories[column.name]()
        elif column.default is None:
            defaults[column.name] = None
    return defaults


async def test_an_old_database_upgrades_in_place_without_losing_a_task(tmp_path: Path) -> None:
    path = tmp_path / "passel.sqlite3"
    _make_old_database(path)
    assert _revision(path) == PREVIOUS

    store = Store(path)
    await store.open()
    try:
        tasks = {t.uuid: t for t in await store.load(Task)}
        nodes = {n.url: n for n in await store.load(Node)}
        events = await store.load(Event)
    finally:
        await store.close()

    head = ScriptDirectory.from_config(_alembic(None)).get_current_head()
    assert _revision(path) == head != PREVIOUS
    assert sorted(tasks) == sorted(t["uuid"] for t in OLD_TASKS), "a task was lost in the upgrade"
    for old in OLD_TASKS:
        new = tasks[old["uuid"]]
        as_read = old | {"skip_post_processing": bool(old["skip_post_processing"]),  # SQLite stores 0/1
                         "options": json.loads(old["options"]), "output_tail": json.loads(old["output_tail"]),
                         "outputs": json.loads(old["outputs"]) if old["outputs"] else None,
                         # 0001 kept a bare list of the files on node_id
                         "forwarded_files": {"node_id": old["node_id"], "files": json.loads(old["forwarded_files"])}}
        assert {c: getattr(new, c) for c in TASK_COLUMNS_0001} == as_read
    assert sorted(nodes) == sorted(n["url"] for n in OLD_NODES)
    assert nodes["http://10.0.0.6:3001"].locked is True and nodes["http://10.0.0.5:3001"].token == "secret"
    assert [e.message for e in events] == ["Task 1 accepted"]

    task_defaults = _added_since_previous(Task, TASK_COLUMNS_0001, "uuid")
    node_defaults = _added_since_previous(Node, NODE_COLUMNS_0001, "id")
    assert "agent_url" in node_defaults, "the column 0002 added is checked"
    for task in tasks.values():
        assert {c: getattr(task, c) for c in task_defaults} == task_defaults
    for node in nodes.values():
        assert {c: getattr(node, c) for c in node_defaults} == node_defaults
        assert (node.last_info, node.last_options) == ({}, [])


async def test_damaged_json_opens_as_the_empty_default(tmp_path: Path) -> None:
    """A value that is not JSON of the column's shape cannot stop a box from starting."""
    path = tmp_path / "passel.sqlite3"
    _make_old_database(path)
    engine = make_engine(path)
    with engine.begin() as connection:
        connection.execute(text("UPDATE tasks SET options = 'not json', outputs = '{}', output_tail = '{\"a\": 1}' "
                                "WHERE uuid = :uuid"), {"uuid": OLD_TASKS[0]["uuid"]})
        connection.execute(text("UPDATE nodes SET last_info = '[1]', last_options = 'x'"))
    engine.dispose()
    store = Store(path)
    await store.open()
    try:
        task = next(t for t in await store.load(Task) if t.uuid == OLD_TASKS[0]["uuid"])
        nodes = await store.load(Node)
    finally:
        await store.close()
    assert (task.options, task.outputs, task.output_tail) == ([], None, [])
    assert all((n.last_info, n.last_options, n.speeds) == ({}, [], {}) for n in nodes)


async def test_the_upgraded_database_takes_new_tasks(tmp_path: Path) -> None:
    """After the upgrade the current code writes rows with every new column, next to the old ones."""
    path = tmp_path / "passel.sqlite3"
    _make_old_database(path)
    store = Store(path)
    await store.open()
    try:
        await store.save(Task(uuid="11111111-0000-4000-8000-000000000001", name="after the upgrade"))
        uuids = {t.uuid for t in await store.load(Task)}
    finally:
        await store.close()
    assert uuids == {t["uuid"] for t in OLD_TASKS} | {"11111111-0000-4000-8000-000000000001"}
