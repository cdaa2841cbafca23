"""Configuration for one box: defaults < TOML file < `PASSEL_*` environment < command-line flags.

One SETTINGS table drives all four layers and the `--help` text, so a setting cannot exist in one
place and be missing from another (tests/test_config.py checks the README documents each one).
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

DEFAULT_CONFIG_PATHS = (Path("/etc/passel/passel.toml"),)


@dataclass(frozen=True)
class Setting:
    """One configurable value: its name, default and what it is for."""

    name: str
    default: Any
    help: str
    kind: type = str
    repeated: bool = False

    @property
    def env(self) -> str:
        return "PASSEL_" + self.name.upper()

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


SETTINGS: tuple[Setting, ...] = (
    Setting("host", "0.0.0.0", "address the API and web UI listen on"),
    Setting("port", 3000, "port of the NodeODM-compatible API and the web UI", int),
    Setting("state_dir", "./passel-state", "where the task database and staged uploads live"),
    Setting("node", (), "a NodeODM node as http://host:port[?token=T][#name] (or host:port); repeat for more nodes",
            str, True),
    Setting("upstream", (), "a NodeODM-compatible node beyond the site (a cloud NodeODM, ClusterODM), reached over "
                            "an uplink: used only while it answers, and only for tasks it finishes sooner, counting "
                            "the link both ways; as http://host:port[?token=T][#name]; repeat for more", str, True),
    Setting("token", "", "token clients must pass as ?token= (empty: no token, like a default NodeODM)"),
    Setting("public_url", "", "URL that nodes use to reach this Passel for split-merge submodels "
                              "(default: http://<this box's address>:<port>)"),
    Setting("discovery", True, "find other boxes and nodes over mDNS and elect a coordinator", bool),
    Setting("name", "", "this box's friendly name in the passel (default: the host name)"),
    Setting("priority", 0, "election priority: when no coordinator is alive, the highest claims the role", int),
    Setting("share", (), "a NodeODM on this box to advertise; repeat for more "
                         "(default: http://127.0.0.1:3001 when it answers)", str, True),
    Setting("key", "", "the passel key shared by every box (default: made on first start and kept in "
                       "<state-dir>/passel.key; see `passel key`)"),
    Setting("alias", "passel.local", "the friendly host name the coordinator answers for over mDNS"),
    Setting("poll_seconds", 3.0, "how often each node's health is checked", float),
    Setting("task_poll_seconds", 2.0, "how often running tasks are refreshed from their nodes", float),
    Setting("grace_seconds", 90.0, "how long a node or box may be silent before its tasks are sent elsewhere "
                                   "(long enough for a laptop lid closed for a minute)", float),
    Setting("stall_seconds", 3600.0, "a RUNNING task with no progress and no new output for this long is sent "
                                     "again, or failed", float),
    Setting("staging_keep_hours", 72.0, "how long the uploaded images of a finished task are kept for a restart",
            float),
    Setting("dispatch_attempts", 5, "how many times a task is sent to a node before it is failed", int),
    Setting("speed_aware", True, "place tasks by each node's learned speed, wait for a faster node when that "
                                 "finishes sooner, and copy stragglers to idle fast nodes (off: any free slot)", bool),
    Setting("min_free_disk_mb", 512, "refuse new uploads when staging has less free space than this", int),
    Setting("results_out", "", "push finished products, whenever the link is up, to an S3-compatible bucket "
                               "(s3://BUCKET/PREFIX?endpoint=http://HOST:PORT&region=R) or an HTTP endpoint taking PUT "
                               "(https://HOST/PATH); resumed across drops and restarts, never pushed twice (empty: off)"),
    Setting("results_out_products", "products", "what results_out pushes: products (the orthophoto and the DEMs) "
                                                "or all (all.zip)"),
    Setting("results_out_key_id", "", "the access key id for results_out (S3; HTTP Basic user for HTTP); "
                                      "empty: the AWS environment or ~/.aws"),
    Setting("results_out_secret", "", "the secret key for results_out"),
    Setting("log_level", "info", "debug, info, warning or error"),
)

_BY_NAME = {s.name: s for s in SETTINGS}


class ConfigError(ValueError):
    """A setting has a value that cannot be used; the message says which and why."""


@dataclass(frozen=True)
class Config:
    """The settings of one box, after all layers are applied."""

    host: str
    port: int
    state_dir: Path
    node: tuple[str, ...]
    upstream: tuple[str, ...]
    token: str
    public_url: str
    discovery: bool
    name: str
    priority: int
    share: tuple[str, ...]
    key: str
    alias: str
    poll_seconds: float
    task_poll_seconds: float
    grace_seconds: float
    stall_seconds: float
    staging_keep_hours: float
    dispatch_attempts: int
    speed_aware: bool
    min_free_disk_mb: int
    results_out: str
    results_out_products: str
    results_out_key_id: str
    results_out_secret: str
    log_level: str
    sources: Mapping[str, str] = field(default_factory=dict, compare=False)

    @property
    def staging_dir(self) -> Path:
        return self.state_dir / "staging"

    @property
    def database_path(self) -> Path:
        return self.state_dir / "passel.sqlite3"


def _convert(setting: Setting, raw: Any, origin: str) -> Any:
    """Turn a raw value from TOML, the environment or a flag into the setting's type."""
    try:
        if setting.repeated:
            items = raw if isinstance(raw, (list, tuple)) else [p for p in str(raw).split(",") if p.strip()]
            return tuple(str(i).strip() for i in items)
        if setting.kind is bool:
            if isinstance(raw, bool):
                return raw
            lowered = str(raw).strip().lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if setting.kind is int and isinstance(raw, float):
            raise ValueError(raw)
        return setting.kind(raw)
    except (TypeError, ValueError):
        raise ConfigError(f"{setting.name} from {origin}: {raw!r} is not a valid {setting.kind.__name__}") from None


def _from_toml(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path}: {exc}") from None
    except PermissionError:
        raise ConfigError(f"cannot read the settings in {path}: only root may; run the command with sudo") from None
    except OSError as exc:
        raise ConfigError(f"cannot read the settings in {path}: {exc.strerror}") from None
    unknown = sorted(k for k in data if k.replace("-", "_") not in _BY_NAME)
    if unknown:
        raise ConfigError(f"config file {path}: unknown setting(s) {', '.join(unknown)}")
    return {k.replace("-", "_"): v for k, v in data.items()}


def load_config(config_file: str | Path | None = None, environ: Mapping[str, str] | None = None,
                flags: Mapping[str, Any] | None = None) -> Config:
    """Apply the four layers in order; later layers win, and `sources` records who set what."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {s.name: s.default for s in SETTINGS}
    sources: dict[str, str] = {}

    path = Path(config_file) if config_file else (Path(environ["PASSEL_CONFIG"]) if environ.get("PASSEL_CONFIG") else None)
    if path is None:
        path = next((p for p in DEFAULT_CONFIG_PATHS if p.exists()), None)
    elif not path.exists():
        raise ConfigError(f"config file {path} does not exist")
    if path is not None:
        for name, raw in _from_toml(path).items():
            values[name] = _convert(_BY_NAME[name], raw, str(path))
            sources[name] = str(path)

    for setting in SETTINGS:
        if setting.env in environ:
            values[setting.name] = _convert(setting, environ[setting.env], setting.env)
            sources[setting.name] = setting.env

    for name, raw in (flags or {}).items():
        if raw is None or name not in _BY_NAME or (_BY_NAME[name].repeated and not raw):
            continue
        values[name] = _convert(_BY_NAME[name], raw, _BY_NAME[name].flag)
        sources[name] = _BY_NAME[name].flag

    if "state_dir" not in sources and environ.get("STATE_DIRECTORY"):  # systemd's StateDirectory=, if nothing else
        values["state_dir"] = environ["STATE_DIRECTORY"].split(":")[0]
        sources["state_dir"] = "STATE_DIRECTORY (systemd's StateDirectory=)"
    values["state_dir"] = Path(values["state_dir"])
    for name in ("node", "upstream", "share"):
        values[name] = tuple(node_url(url, f"{name} from {sources.get(name, 'the defaults')}") for url in values[name])
    if values["public_url"]:
        values["public_url"] = node_url(values["public_url"], f"public_url from {sources['public_url']}")
    config = Config(**values, sources=sources)
    if not 0 < config.port < 65536:
        raise ConfigError(f"port {config.port} is outside 1-65535")
    return config


def node_url(raw: str, what: str) -> str:
    """`host:port` as a technician types it becomes http://host:port; anything else that is not an
    http(s) URL with a host and a valid port is refused with the reason."""
    url = raw.strip()
    if "://" not in url:
        url = "http://" + url
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{what}: {raw!r} is not a node address; write it as http://HOST:PORT (or HOST:PORT)")
    try:
        parts.port
    except ValueError:
        raise ConfigError(f"{what}: {raw!r} has no valid port; write it as http://HOST:PORT (or HOST:PORT)") from None
    return url


def add_setting_flags(parser: Any, names: Sequence[str]) -> None:
    """Add argparse flags for `names`, with help text and defaults taken from SETTINGS."""
    for name in names:
        s = _BY_NAME[name]
        shown = ", ".join(s.default) if s.repeated else s.default
        help_text = f"{s.help} [env {s.env}; default: {shown!r}]"
        if s.kind is bool:
            parser.add_argument(s.flag, dest=name, action="store_true", default=None, help=help_text)
            parser.add_argument("--no-" + s.flag[2:], dest=name, action="store_false",
                                help=f"turn off {s.flag[2:]}")
        elif s.repeated:
            parser.add_argument(s.flag, dest=name, action="append", default=None, metavar="URL", help=help_text)
        else:
            parser.add_argument(s.flag, dest=name, default=None, metavar=name.upper(), help=help_text)


CONFIG_KEY: web.AppKey[Config] = web.AppKey("config")  # where the app holds it
