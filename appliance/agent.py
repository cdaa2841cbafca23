"""Wires the parts of one box into an aiohttp application.

`create_app` does no I/O; every resource enters through `cleanup_ctx`, in order, and leaves in
reverse order, so a failed start-up never leaves a half-open database or a stray background task.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

from appliance import __version__
from appliance.background import background
from appliance.admin_auth import setup_admin_auth
from appliance.agent_api import agent_auth_middleware, setup_agent_routes
from appliance.box_api import setup_box_routes
from appliance.cluster.admin import setup_admin_routes
from appliance.cluster.coordinator import COORDINATOR_KEY, Coordinator
from appliance.cluster.lifecycle import StagingLifecycle
from appliance.cluster.outbox import OUTBOX_KEY, Destination, Outbox
from appliance.cluster.reconciler import RECONCILER_KEY, Reconciler
from appliance.cluster.registry import NodeRegistry
from appliance.cluster.results import RESULTS_KEEPER_KEY, ResultsKeeper, completed
from appliance.cluster.routes import setup_routes
from appliance.cluster.staging import Staging
from appliance.cluster.tracker import TaskTracker
from appliance.config import CONFIG_KEY, Config
from appliance.discovery.identity import IDENTITY_KEY, load_identity
from appliance.http_rules import Middleware, gate_middleware, require_rules
from appliance.netaddr import default_public_url
from appliance.nodeodm.auth import setup_auth_routes
from appliance.openapi import setup_openapi_route
from appliance.passel_admin import setup_passel_admin_routes
from appliance.passel_service import discovery_ctx
from appliance.role import Role
from appliance.sdnotify import systemd_ctx
from appliance.store.database import Store
from webui.render import failure_middleware
from webui.routes import setup_ui_routes

log = logging.getLogger("passel.agent")
MAX_REQUEST_BYTES = 1024 ** 4  # uploads stream to disk; the disk-space guard is the real limit


def _coordinator_ctx(config: Config):
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        store = Store(config.database_path)
        await store.open()
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0, limit_per_host=64))
        identity = load_identity(config.state_dir, config.name or None)
        app[IDENTITY_KEY] = identity
        role = Role(identity.id)  # discovery attaches the passel's election to it; without, this box coordinates
        registry = NodeRegistry(store, session, config.poll_seconds, role)
        await registry.load()
        public_url = config.public_url or default_public_url(config.host, config.port)
        coordinator = Coordinator(store, registry, Staging(config.staging_dir, config.min_free_disk_mb * 1024 * 1024),
                                  public_url, config.dispatch_attempts, role, config.speed_aware,
                                  results_dir=config.state_dir / "results",
                                  api_token=config.token or "")  # split tasks send their parts back with it
        await coordinator.recover()
        app[COORDINATOR_KEY] = coordinator
        for url, upstream in [*((u, False) for u in config.node), *((u, True) for u in config.upstream)]:
            address, _, label = url.partition("#")  # checked by config.node_url; #name names the node in the UI
            await registry.add(address, source="config", label=label, upstream=upstream)
        tracker = TaskTracker(coordinator, config.task_poll_seconds, config.stall_seconds)
        reconciler = app[RECONCILER_KEY] = Reconciler(coordinator, config.grace_seconds)
        lifecycle = StagingLifecycle(coordinator, config.staging_keep_hours)
        keeper = app[RESULTS_KEEPER_KEY] = ResultsKeeper(coordinator)
        jobs = [background("node-health", registry.poll_forever), background("table-writer", coordinator.book.keep_written),
                background("dispatch", coordinator.dispatcher.run_dispatch_loop),
                background("task-tracker", tracker.run_forever),
                background("reconcile", reconciler.run_forever),
                background("staging-lifecycle", lifecycle.run_forever),
                background("results-copies", keeper.run_forever)]
        outbox = app[OUTBOX_KEY] = results_outbox(config, coordinator)
        if outbox is not None:
            jobs.append(background("results-out", outbox.run_forever))
        log.info("Passel %s ready: %d node(s) and %d task(s) on record, public URL %s",
                 __version__, len(registry.nodes), len(coordinator.book.tasks), public_url)
        yield
        for job in jobs:
            job.cancel()
        for job in jobs:
            with contextlib.suppress(asyncio.CancelledError):
                await job
        await coordinator.dispatcher.shutdown()
        await coordinator.stragglers.shutdown()
        if outbox is not None:
            await outbox.aclose()
        await session.close()
        await store.close()
    return ctx


def results_outbox(config: Config, coordinator: Coordinator) -> Outbox | None:
    """Finished products pushed out whenever the link is up (`results_out`), from the copies of
    completed tasks this box holds; None when no destination is set."""
    if not config.results_out:
        return None
    from appliance.cluster.outbox_s3 import open_transport  # botocore only on a box that pushes

    def held_here() -> list[str]:
        return [t.uuid for t in coordinator.book.tasks.values() if completed(t)
                and t.results_on == coordinator.self_id and t.results_copied_at is not None]
    transport = open_transport(Destination.parse(config.results_out), config.results_out_key_id,
                               config.results_out_secret)
    return Outbox(coordinator.results, transport, held_here, config.results_out_products, idle_seconds=5.0)


async def _release_long_polls(app: web.Application) -> None:
    """Followers' held replica requests answer at once, so stopping does not wait out their poll."""
    if COORDINATOR_KEY in app:
        app[COORDINATOR_KEY].book.release()


def _middlewares(config: Config) -> list[Middleware]:
    """The route table's rules, applied in the order appliance/http_rules.py explains."""
    return [failure_middleware, gate_middleware(config.token or None),
            *([agent_auth_middleware] if config.discovery else [])]


def create_app(config: Config) -> web.Application:
    """The whole box: NodeODM API, admin API and web UI on one port."""
    app = web.Application(client_max_size=MAX_REQUEST_BYTES, middlewares=_middlewares(config))
    app[CONFIG_KEY] = config
    app.cleanup_ctx.append(_coordinator_ctx(config))
    app.on_shutdown.append(_release_long_polls)
    if config.discovery:
        app.cleanup_ctx.append(discovery_ctx(config))
        setup_agent_routes(app)
        setup_passel_admin_routes(app)
    app.cleanup_ctx.append(systemd_ctx(config))  # last in, first out: STOPPING=1 before anything closes
    setup_auth_routes(app)
    setup_routes(app)
    setup_admin_routes(app)
    setup_openapi_route(app)
    setup_admin_auth(app)
    setup_box_routes(app)
    setup_ui_routes(app)  # after setup_admin_auth: UI sessions are keyed from the admin password
    require_rules(app.router)  # every route has its row in appliance/http_rules.py
    return app
