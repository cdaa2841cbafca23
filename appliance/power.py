"""`passel sleep` and `passel wake`: what systemd runs around a suspend (systemd/passel-sleep.service).

Before the box sleeps, its agent says goodbye, so the other boxes stop waiting for it and another
box takes over coordinating; after resume it rejoins. The agent does both in its API
(`POST /-/agent/v1/sleep` and `/-/agent/v1/wake`) and answers when done, so the suspend waits for
the goodbye to be sent instead of racing it, as a signal would.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request

from appliance.config import ConfigError, load_config

PATHS = {"sleep": "/-/agent/v1/sleep", "wake": "/-/agent/v1/wake"}
DONE = {"sleep": "Passel said goodbye to the passel; this box can sleep",
        "wake": "Passel is rejoining the passel"}
TIMEOUT_SECONDS = 15  # below TimeoutSec= in passel-sleep.service, so a stuck agent cannot hold the suspend


def _local_api(host: str, port: int) -> str:
    host = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def tell_agent(action: str, config_file: str | None) -> int:
    """Ask this box's agent to leave (`sleep`) or rejoin (`wake`); an agent that is not running is fine."""
    try:
        config = load_config(config_file)
    except ConfigError as exc:
        raise SystemExit(f"passel: {exc}") from None
    api = _local_api(config.host, config.port)
    query = "?" + urllib.parse.urlencode({"token": config.token}) if config.token else ""
    request = urllib.request.Request(api + PATHS[action] + query, data=b"{}", method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS):
            pass
    except urllib.error.HTTPError as exc:
        try:
            detail = json.loads(exc.read()).get("error") or exc.reason
        except (ValueError, AttributeError):
            detail = exc.reason
        print(f"Passel at {api} refused to {action}: {detail}")
        return 1
    except (urllib.error.URLError, OSError) as exc:
        print(f"Passel is not answering at {api} ({getattr(exc, 'reason', exc)}); nothing to do")
        return 0
    print(DONE[action])
    return 0
