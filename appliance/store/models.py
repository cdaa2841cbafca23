"""The tables. Rows double as the in-memory records (SQLAlchemy dataclass mapping), never attached
to a long-lived session, so the event loop reads them without touching SQLite.

Structured columns are JSON, parsed by SQLAlchemy in one place: in memory they are lists and dicts.
They are never changed in place (a row is saved by value, and replicas may share them): assign a
new value."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import JSON, Boolean, Float, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, MappedAsDataclass, mapped_column


class Base(MappedAsDataclass, DeclarativeBase):
    """Declarative base whose classes are also dataclasses."""


class Phase:
    """Where a task is in Passel's own pipeline (the client sees `status`)."""

    UPLOADING = "uploading"    # init done, files may still arrive; invisible to info and list
    WAITING = "waiting"        # committed, no node has a free slot yet: the client sees QUEUED
    FORWARDING = "forwarding"  # being sent to its node: the client sees RUNNING
    ON_NODE = "on_node"        # committed on its node, which holds the truth
    FINISHED = "finished"      # COMPLETED, FAILED or CANCELED, as last seen
    REMOVED = "removed"        # a tombstone: removed by a client, kept briefly so replicas learn of it
    LOST = "lost"              # its data is gone for good: answered not-found, so ODM resubmits it


class Task(Base):
    __tablename__ = "tasks"

    uuid: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(Text, default="")
    phase: Mapped[str] = mapped_column(String(16), default=Phase.UPLOADING, index=True)
    status: Mapped[int] = mapped_column(Integer, default=10)
    node_id: Mapped[int | None] = mapped_column(Integer, default=None, index=True)
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    images_count: Mapped[int] = mapped_column(Integer, default=0)
    options: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default_factory=list)  # validated, as sent to the node
    outputs: Mapped[list[str] | None] = mapped_column(JSON(none_as_null=True), default=None)  # None: the node's default, all of them
    skip_post_processing: Mapped[bool] = mapped_column(Boolean, default=False)
    webhook: Mapped[str] = mapped_column(Text, default="")
    date_created_ms: Mapped[int] = mapped_column(Integer, default_factory=lambda: int(time.time() * 1000))
    committed_at: Mapped[float | None] = mapped_column(Float, default=None)
    finished_at: Mapped[float | None] = mapped_column(Float, default=None)
    processing_time_ms: Mapped[int] = mapped_column(Integer, default=-1)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error_message: Mapped[str] = mapped_column(Text, default="")
    last_error: Mapped[str] = mapped_column(Text, default="")
    staging_path: Mapped[str] = mapped_column(Text, default="")
    # {"node_id": N, "files": [...]}: the node that holds a pending upload, and the files it surely has
    forwarded_files: Mapped[dict[str, Any]] = mapped_column(JSON, default_factory=dict)
    output_tail: Mapped[list[str]] = mapped_column(JSON, default_factory=list)  # last lines seen, for a lost node
    job_key: Mapped[str] = mapped_column(String(64), default="")
    rev: Mapped[int] = mapped_column(Integer, default=0, index=True)
    owner: Mapped[str] = mapped_column(String(16), default="")
    staged_on: Mapped[str] = mapped_column(String(16), default="")
    notes: Mapped[list[str]] = mapped_column(JSON, default_factory=list)  # Passel's own lines in the task's log
    downloaded_at: Mapped[float | None] = mapped_column(Float, default=None)
    data_bytes: Mapped[int] = mapped_column(Integer, default=0)  # the staged files, counted at commit
    results_on: Mapped[str] = mapped_column(String(16), default="")  # the box that keeps a copy of all.zip
    results_copied_at: Mapped[float | None] = mapped_column(Float, default=None)  # when that copy was whole
    parent_uuid: Mapped[str] = mapped_column(String(36), default="", index=True)  # a split job's submodel: that job


class Node(Base):
    __tablename__ = "nodes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True, init=False)
    url: Mapped[str] = mapped_column(Text, unique=True)
    token: Mapped[str] = mapped_column(Text, default="")
    source: Mapped[str] = mapped_column(String(16), default="manual")  # manual, config, mdns or handover
    locked: Mapped[bool] = mapped_column(Boolean, default=False)
    label: Mapped[str] = mapped_column(Text, default="")
    last_info: Mapped[dict[str, Any]] = mapped_column(JSON, default_factory=dict)  # the node's /info, as last seen
    last_options: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default_factory=list)  # its /options
    last_seen: Mapped[float | None] = mapped_column(Float, default=None)
    ms_per_image: Mapped[float | None] = mapped_column(Float, default=None)  # before 0004: one figure, all kinds
    speeds: Mapped[dict[str, Any]] = mapped_column(JSON, default_factory=dict)  # {"engine/kind": {"ms": .., "n": ..}}
    agent_url: Mapped[str] = mapped_column(Text, default="")  # the Passel agent on the node's own box
    box: Mapped[str] = mapped_column(String(16), default="")  # that box's id, when it shares the node over mDNS
    upstream: Mapped[bool] = mapped_column(Boolean, default=False)  # beyond the site, over an uplink (cluster/link.py)
    link: Mapped[dict[str, Any]] = mapped_column(JSON, default_factory=dict)  # that link as measured


class Event(Base):
    __tablename__ = "events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True, init=False)
    kind: Mapped[str] = mapped_column(String(32), index=True)
    message: Mapped[str] = mapped_column(Text)
    task_uuid: Mapped[str | None] = mapped_column(String(36), default=None, index=True)
    node_id: Mapped[int | None] = mapped_column(Integer, default=None)
    at: Mapped[float] = mapped_column(Float, default_factory=time.time)


def row_values(row: Base) -> dict[str, Any]:
    """The column values of a row, for an upsert or for another box."""
    return {c.key: getattr(row, c.key) for c in row.__table__.columns}


def task_from_row(values: dict[str, Any]) -> Task:
    """A task row as another box sent it: its columns only (the sender may add fields of its own)."""
    return Task(**{k: v for k, v in values.items() if k in Task.__table__.columns.keys()})
