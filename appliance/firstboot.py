"""A box's first start as a system service: the settings file, commented, and the state directory.

`passel run --first-boot` (what passel.service runs) calls this on every start; anything that exists
is left alone, so a technician's edits survive restarts and upgrades. The box's id is made by the
agent itself in the state directory. Nothing here runs at install time, so a disk image prepared
once and cloned onto many boxes gives each box its own id.
"""

from __future__ import annotations

import logging
import os
import textwrap
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from appliance.config import DEFAULT_CONFIG_PATHS, SETTINGS, Config

log = logging.getLogger("passel.firstboot")

HEADER = """\
# Passel settings for this box.
#
# A fresh box needs none of these: it finds the other boxes on its network and joins their passel.
# Each setting is shown commented out, with its default. To change one, remove the '#' in front of
# it, set the value, and restart Passel:  sudo systemctl restart passel
# PASSEL_* environment variables and command-line flags win over this file.
"""


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def default_config_text(environ: Mapping[str, str], active: Mapping[str, Any] | None = None) -> str:
    """Every setting with its help: commented out with its default, except the `active` ones, which are
    set (the state directory, so that every `passel` command run from a shell finds the box's own);
    notes the ones the environment overrides."""
    active = active or {}
    parts = [HEADER]
    for setting in SETTINGS:
        lines = textwrap.wrap(setting.help[0].upper() + setting.help[1:] + ".", width=98, break_on_hyphens=False,
                              break_long_words=False)
        if setting.env in environ:
            lines.append(f"(Set to {environ[setting.env]!r} by {setting.env} for this service; "
                         "that wins over this file.)")
        hint = '  # a list, like ["first", "second"]' if setting.repeated else ""
        assignment = (f"{setting.name} = {_toml(active[setting.name])}" if setting.name in active
                      else f"# {setting.name} = {_toml(setting.default)}{hint}")
        parts.append("".join(f"# {line}\n" for line in lines) + assignment + "\n")
    return "\n".join(parts)


def write_default_config(path: Path, environ: Mapping[str, str], active: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(default_config_text(environ, active))
    temporary.chmod(0o640)  # it may come to hold the API token
    os.replace(temporary, path)


def first_boot(config: Config, config_file: str | None, environ: Mapping[str, str] | None = None) -> None:
    """Create the default settings file (when no other file was named) and the state directory."""
    environ = os.environ if environ is None else environ
    if not config_file and not environ.get("PASSEL_CONFIG"):
        path = DEFAULT_CONFIG_PATHS[0]
        if not path.exists():
            try:
                write_default_config(path, environ, {"state_dir": str(config.state_dir.resolve())})
                log.info("First start: wrote the settings to %s; all but the state directory (%s) are "
                         "commented out, so this box uses the defaults", path, config.state_dir)
            except OSError as exc:
                log.warning("Could not write the default settings to %s (%s); running on defaults", path, exc)
    if not config.state_dir.exists():
        config.state_dir.mkdir(mode=0o750, parents=True)
        log.info("First start: created the state directory %s", config.state_dir)
