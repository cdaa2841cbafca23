"""Fuzz the passel's API from its own OpenAPI description (schemathesis), bounded in time.

Whatever the input, the server must never answer with a 5xx or fall over: NodeODM's error shape
(HTTP 200 + {"error": ...}) or a 4xx from the admin API are the only acceptable refusals.
"""

from __future__ import annotations

import pytest
import requests

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402


@pytest.fixture(scope="module")
def live_passel(tmp_path_factory):
    from appliance.agent import create_app
    from appliance.config import load_config
    from appliance.simnode import SimnodeSettings, create_simnode_app
    from tests.support import ServerThread
    node = ServerThread(lambda: create_simnode_app(SimnodeSettings(seconds_per_image=0.01))).start()
    config = load_config(environ={}, flags={"host": "127.0.0.1", "state_dir": str(tmp_path_factory.mktemp("fuzz")),
                                            "node": [node.url], "discovery": False, "min_free_disk_mb": 0})
    passel = ServerThread(lambda: create_app(config)).start()
    yield passel
    passel.stop()
    node.stop()


def test_openapi_document_is_served(live_passel):
    doc = requests.get(live_passel.url + "/-/openapi.json", timeout=5).json()
    assert doc["openapi"].startswith("3.") and "/task/new/init" in doc["paths"] and "/-/nodes" in doc["paths"]


def test_fuzz_every_operation(live_passel):
    schema = schemathesis.openapi.from_url(live_passel.url + "/-/openapi.json")
    failures: list[str] = []
    sent: list[int] = []
    for operation in schema.get_all_operations():
        op = operation.ok()

        @settings(max_examples=15, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(case=op.as_strategy())
        def check(case) -> None:  # noqa: ANN001
            response = case.call(base_url=live_passel.url, timeout=10)
            sent.append(response.status_code)
            if response.status_code >= 500:
                failures.append(f"{case.method} {case.path}: {response.status_code} {response.text[:200]}")

        check()
    assert len(sent) > 100, "the fuzzer must really have exercised the API"
    assert requests.get(live_passel.url + "/info", timeout=5).ok, "the server is still up"
    assert not failures, "\n".join(failures)
