"""`passel sleep` and `passel wake`: what systemd runs around a suspend (systemd/passel-sleep.service).

Before the box sleeps, its agent says goodbye, so the other boxes stop waiting for it and another
box takes over coordinating; after resume it rejoins. The agent does both in its API
(`POST /-/agent/v1/sleep` and `/-/agent/v1/wake`) and answers when done, so the suspend waits for
the goodbye to be sent instead of racing it, as a signal would.
"""

from __future__ import annotations

import argparse
from typing import Any

from appliance.admin_client import AdminClient, Refused, Unreachable
from appliance.config import ConfigError, load_config

PATHS = {"sleep": "/-/agent/v1/sleep", "wake": "/-/agent/v1/wake"}
DONE = {"sleep": "Passel said goodbye to the passel; this box can sleep",
        "wake": "Passel is rejoining the passel"}
TIMEOUT_SECONDS = 15  # below TimeoutSec= in passel-sleep.service, so a stuck agent cannot hold the suspend


def add_power_parsers(sub: Any) -> None:
    for name, text in (("sleep", "tell this box's agent to leave the passel; systemd runs it before a suspend"),
                       ("wake", "tell this box's agent to rejoin the passel; systemd runs it after resume")):
        power = sub.add_parser(name, help=text, description=text)
        power.add_argument("--config", metavar="FILE", help="TOML file of settings, for the port and token")


def power_command(args: argparse.Namespace) -> int:
    """Ask this box's agent to leave (`sleep`) or rejoin (`wake`); an agent that is not running is fine."""
    action = args.command
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        raise SystemExit(f"passel: {exc}") from None
    agent = AdminClient.this_box(config, TIMEOUT_SECONDS)
    try:
        agent.call("POST", PATHS[action], {})
    except Refused as exc:
        print(f"Passel at {agent.api} refused to {action}: {exc.detail}")
        return 1
    except Unreachable as exc:
        print(f"Passel is not answering at {agent.api} ({exc.detail}); nothing to do")
        return 0
    print(DONE[action])
    return 0
