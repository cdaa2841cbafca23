"""Zip files of a task: safe extraction of uploaded archives and the building of all.zip."""

from __future__ import annotations

import json
import re
import shutil
import stat
import zipfile
from pathlib import Path, PurePosixPath
from typing import Any

from appliance.simnode.assets import ResultContext, expand, write_result_file

LEADING_UP = re.compile(r"^(\.\.(/|\\|$))+")


def _node_normalize(path: str) -> str:
    """Node's `path.normalize` on POSIX: '.' and '..' resolved, a leading and a trailing '/' kept."""
    absolute = path.startswith("/")
    parts: list[str] = []
    for segment in path.split("/"):
        if segment == ".." and parts and parts[-1] != "..":
            parts.pop()
        elif (segment == ".." and not absolute) or segment not in ("", ".", ".."):
            parts.append(segment)
    text = "/".join(parts)
    trailing = "/" if path.endswith("/") and (text or not absolute) else ""
    if absolute:
        return "/" + text + trailing
    return text + trailing if text else "." + trailing


def safe_relpath(raw: str) -> str | None:
    """One `outputs` path as NodeODM reads it: normalized, leading '..' stripped, made relative.

    So '/a' is 'a', 'odm_dem/' keeps its slash, and '', '.' and '..' name the whole project ('.' or
    './'), which all.zip then holds.
    None for a NUL byte, which no file path can hold.
    """
    if "\x00" in raw:
        return None
    suffix = LEADING_UP.sub("", _node_normalize(raw))
    return _node_normalize("./" + ("/" + suffix if suffix else ""))


def parse_outputs(raw: Any) -> list[str]:
    """The `outputs` field: a JSON list of paths; anything unreadable means "no outputs given"."""
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            return []
    if not isinstance(raw, list):
        return []
    paths = (safe_relpath(item) for item in raw if isinstance(item, str))
    return [p for p in paths if p]


def _member_path(info: zipfile.ZipInfo, flatten: bool) -> str | None:
    """Where a zip member may go, or None when it must be skipped (zip-slip, links, directories)."""
    if info.is_dir() or stat.S_ISLNK(info.external_attr >> 16):
        return None
    name = info.filename.replace("\\", "/")
    parts = PurePosixPath(name).parts
    if not parts or name.startswith("/") or ".." in parts or ":" in parts[0]:
        return None
    if flatten:
        return parts[-1]
    return "/".join(p for p in parts if p != ".") or None


def extract_zip(archive: Path, dest: Path, flatten: bool = False) -> int:
    """Extract `archive` into `dest`, skipping absolute and `..` members; return the files written."""
    root = dest.resolve()
    written = 0
    try:
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                relpath = _member_path(info, flatten)
                if relpath is None:
                    continue
                target = (root / relpath).resolve()
                if root not in target.parents:
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, open(target, "wb") as out:
                    shutil.copyfileobj(src, out, 1024 * 1024)
                written += 1
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as exc:
        raise ValueError(f"{archive.name} is not a valid zip file ({exc})") from None
    return written


def _files_under(project_dir: Path, relpath: str) -> list[Path]:
    target = project_dir / relpath
    if target.is_symlink():
        return []
    if target.is_dir():
        return sorted(p for p in target.rglob("*") if p.is_file() and not p.is_symlink())
    return [target] if target.is_file() else []


def build_all_zip(project_dir: Path, paths: list[str], ctx: ResultContext, dest: Path) -> int:
    """Fill in fake results for `paths`, then zip the ones that exist into `dest`; return the entries."""
    write_result_file(project_dir, "task_output.txt", ctx)  # NodeODM always saves the console output
    for relpath in paths:
        if not (project_dir / relpath).exists():
            for file in expand(relpath, ctx):
                write_result_file(project_dir, file, ctx)
    seen: set[str] = set()
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_STORED) as zf:
        for relpath in paths:
            for file in _files_under(project_dir, relpath):
                arcname = file.relative_to(project_dir).as_posix()
                if arcname not in seen:
                    seen.add(arcname)
                    zf.write(file, arcname)
    return len(seen)
