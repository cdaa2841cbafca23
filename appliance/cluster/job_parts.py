"""Which job a submodel belongs to.

ODM's split-merge sends each submodel back to `sm-cluster` as a plain NodeODM task: an empty name, no
parent id. The one thing it repeats unchanged on every request is PyODM's `?token=` from that URL, so
a passel without an API token (the usual field set-up) puts the parent's uuid there, and a task whose
init carries `?token=job-<uuid>` is recorded as a part of that job (`Task.parent_uuid`).

With an API token set, `?token=` must carry that token or every submodel is refused: there is no room
for the link, so parts are grouped by their options (`job_key`) only. The token then sits in the
task's options on the node that runs it, a box of the passel; Passel's own replies show the options
its client sent, never the rewritten ones.
"""

from __future__ import annotations

import re
from urllib.parse import urlencode

TOKEN_PREFIX = "job-"
_PART_TOKEN = re.compile(r"job-([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})", re.IGNORECASE)


def sm_cluster_url(agent_url: str, parent_uuid: str, api_token: str) -> str:
    """Where a split task sends its submodels: the agent, with the passel's API token as PyODM's
    token, or, when the passel has none, the parent's uuid."""
    token = api_token or f"{TOKEN_PREFIX}{parent_uuid}"
    return f"{agent_url.rstrip('/')}/?{urlencode({'token': token})}"


def parent_of(token: str | None) -> str:
    """The parent's uuid a submodel's `?token=` carries, or '' for any other token (or none)."""
    match = _PART_TOKEN.fullmatch(token or "")
    return match.group(1).lower() if match else ""
