"""`passel key`: show, make or set the passel key of this box, the secret every box of a passel shares.

To pair a new box: run `passel key show` on any box of the passel, then `passel key set CODE` on the
new one (or type the code on the new box's web page). The key lives in the state directory that the
box's settings name (/etc/passel/passel.toml on an installed box), so these commands act on the
running box's own key file, and the running agent is told the new key at once over loopback.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from appliance.admin_client import AdminClient, AdminError
from appliance.config import Config, ConfigError, load_config
from appliance.discovery.trust import KEY_FILE, Trust, new_key_code, normalize_code, save_key

RELOAD_PATH = "/-/agent/v1/key"
RELOAD_TIMEOUT_SECONDS = 5.0


def add_key_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    key = sub.add_parser("key", help="show, make or set the passel key (pair a new box with `passel key set CODE`)",
                         description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    key.add_argument("action", choices=["show", "new", "set"])
    key.add_argument("code", nargs="?", help="for set: the key shown by `passel key show` on a box of the passel")
    key.add_argument("--config", metavar="FILE", help="TOML file of settings (default: /etc/passel/passel.toml)")
    key.add_argument("--state-dir", metavar="DIR", help="the box's state directory (default: from the settings)")


def _where(config: Config) -> str:
    """Where the state directory setting came from, for messages that say where a command looked."""
    source = config.sources.get("state_dir")
    return (f"the state directory set by {source}" if source
            else "the default state directory, as no settings file on this box names one")


def _tell_agent(config: Config, code: str) -> bool:
    """Hand the running agent its new key; False when none runs (or it will not take it), as it reads
    the key file when it starts."""
    try:
        AdminClient.this_box(config, RELOAD_TIMEOUT_SECONDS).call("POST", RELOAD_PATH, {"key": code})
    except AdminError:
        return False
    return True


def _show(config: Config, path: Path) -> int:
    try:
        shown = path.read_text().strip()
    except FileNotFoundError:
        raise SystemExit(f"No passel key at {path} ({_where(config)}). Passel makes one on its first start: "
                         "start it (sudo systemctl start passel), or point at the box's settings with --config.") from None
    except PermissionError:
        raise SystemExit(f"Only root may read {path}: run `sudo passel key show`.") from None
    try:
        code = normalize_code(shown)
    except ValueError as exc:
        raise SystemExit(f"The key in {path} is damaged ({exc}); set the passel's key again with "
                         "`passel key set CODE`.") from None
    print(f"Passel key: {shown}\nFingerprint: {Trust(code, 'cli').fingerprint()} (the same on every box of the passel)")
    return 0


def _save(config: Config, path: Path, code: str) -> int:
    if not config.state_dir.is_dir():
        raise SystemExit(f"No state directory at {config.state_dir} ({_where(config)}); nothing was saved. "
                         "Start Passel once to make it, or point at the box's settings with --config.")
    try:
        normalized = save_key(config.state_dir, code)
    except ValueError as exc:
        raise SystemExit(f"{exc}. Nothing was saved.") from None
    except PermissionError:
        raise SystemExit(f"Only root may change {path}: run the command again with sudo.") from None
    told = _tell_agent(config, normalized)
    print(f"Key saved in {path}. Fingerprint: {Trust(normalized, 'cli').fingerprint()}. "
          + ("The running agent uses it now." if told else "It is used when Passel starts."))
    return 0


def key_command(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config, flags={"state_dir": args.state_dir})
    except ConfigError as exc:
        raise SystemExit(f"passel: {exc}") from None
    if config.key:
        raise SystemExit(f"The key is set by {config.sources.get('key', 'the settings')} on this box; change it there.")
    path = config.state_dir / KEY_FILE
    if args.action == "show":
        return _show(config, path)
    if args.action == "set" and not args.code:
        raise SystemExit("passel key set needs the code: passel key set ABCD-EFGH-...")
    return _save(config, path, args.code if args.action == "set" else new_key_code())
