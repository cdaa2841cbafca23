"""`passel key`: show, make or set the passel key of this box, the secret every box of a passel shares.

To pair a new box: run `passel key show` on any box of the passel, then `passel key set CODE` on the
new one. The running agent picks the new key up at once (it is told over loopback).
"""

from __future__ import annotations

import argparse

from appliance.admin_client import AdminClient, AdminError
from appliance.config import Config, ConfigError, load_config
from appliance.discovery.trust import KEY_FILE, Trust, load_or_create_key, new_key_code, save_key

RELOAD_PATH = "/-/agent/v1/key"
RELOAD_TIMEOUT_SECONDS = 5.0


def add_key_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    key = sub.add_parser("key", help="show, make or set the passel key (pair a new box with `passel key set CODE`)",
                         description=__doc__)
    key.add_argument("action", choices=["show", "new", "set"])
    key.add_argument("code", nargs="?", help="for set: the key shown by `passel key show` on a box of the passel")
    key.add_argument("--config", metavar="FILE", help="TOML file of settings (for the state directory and port)")


def _tell_agent(config: Config, code: str) -> bool:
    """Hand the running agent its new key; False when none runs (or it will not take it), as it reads
    the key file when it starts."""
    try:
        AdminClient.this_box(config, RELOAD_TIMEOUT_SECONDS).call("POST", RELOAD_PATH, {"key": code})
    except AdminError:
        return False
    return True


def key_command(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        raise SystemExit(f"passel: {exc}") from None
    if config.key:
        raise SystemExit("The key is set by PASSEL_KEY or the config file here; change it there.")
    path = config.state_dir / KEY_FILE
    if args.action == "show":
        code = load_or_create_key("", config.state_dir)
        shown = path.read_text().strip()
        print(f"Passel key: {shown}\nFingerprint: {Trust(code, 'cli').fingerprint()} (the same on every box of the passel)")
        return 0
    if args.action == "set" and not args.code:
        raise SystemExit("passel key set needs the code: passel key set ABCD-EFGH-...")
    try:
        code = save_key(config.state_dir, args.code if args.action == "set" else new_key_code())
    except ValueError as exc:
        raise SystemExit(str(exc)) from None
    told = _tell_agent(config, code)
    print(f"Key saved in {path}. Fingerprint: {Trust(code, 'cli').fingerprint()}. "
          + ("The running agent uses it now." if told else "It is used when Passel starts."))
    return 0
