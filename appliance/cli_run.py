"""`passel run`, `passel simnode` and `passel demo`: the commands that serve, until a signal stops them."""

from __future__ import annotations

import argparse
import asyncio
import errno
import gc
import logging
import signal
import socket
import sys
from typing import Any

from appliance.config import Config, ConfigError, add_setting_flags, load_config
from appliance.discovery.trust import KEY_FILE, normalize_code
from appliance.logs import setup_logging

RUN_SETTINGS = ("host", "port", "state_dir", "node", "upstream", "token", "public_url", "discovery", "name", "priority",
                "share", "key", "alias", "poll_seconds", "grace_seconds", "stall_seconds", "staging_keep_hours",
                "task_poll_seconds", "dispatch_attempts", "speed_aware", "min_free_disk_mb", "results_out",
                "results_out_products", "results_out_key_id", "results_out_secret", "log_level")
BAD_SETTINGS_EXIT = 78  # EX_CONFIG: passel.service does not restart on it (RestartPreventExitStatus=78)

log = logging.getLogger("passel")


def add_run_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """The serving commands, first in `passel --help` as they are what a box does."""
    run = sub.add_parser("run", help="run this box's agent and coordinator (the systemd service runs this)",
                         description="Serve the NodeODM-compatible API and the web UI for the passel.")
    run.add_argument("--config", metavar="FILE", help="TOML file of settings (keys as the flags, with underscores)")
    add_setting_flags(run, RUN_SETTINGS)
    run.add_argument("--first-boot", action="store_true",
                     help="create what a new box needs when missing: /etc/passel/passel.toml with every setting "
                          "commented out, and the state directory (passel.service passes this)")

    sim = sub.add_parser("simnode", help="run a simulated NodeODM, for demos, training and tests",
                         description="A NodeODM look-alike that 'processes' images in seconds_per_image each "
                                     "and returns plausible outputs. Faults can be injected.")
    sim.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    sim.add_argument("--port", type=int, default=3001, help="port to listen on (default 3001)")
    sim.add_argument("--max-images", type=int, default=None, help="largest task accepted (default: no limit)")
    sim.add_argument("--slots", type=int, default=1, help="tasks processed at once (maxParallelTasks)")
    sim.add_argument("--cores", type=int, default=4, help="CPU cores to report")
    sim.add_argument("--memory-mb", type=int, default=8192, help="memory to report, in MB")
    sim.add_argument("--seconds-per-image", type=float, default=0.5, help="simulated processing speed")
    sim.add_argument("--token", default=None, help="require ?token=T like NodeODM --token")
    sim.add_argument("--fail-rate", type=float, default=0.0, help="share of tasks that fail (0-1)")
    sim.add_argument("--drop-upload-rate", type=float, default=0.0, help="share of uploads dropped (0-1)")
    sim.add_argument("--stall-at", type=float, default=None, help="progress %% at which every task stalls")
    sim.add_argument("--data-dir", default=None, help="where task files go (default: a temporary directory)")
    sim.add_argument("--name", default="simnode", help="name shown in logs")
    sim.add_argument("--engine", default="odm", help="engine to report (odm, micmac, ...)")
    sim.add_argument("--engine-version", default="3.5.6-sim", help="engine version to report")
    sim.add_argument("--asset-kb", type=int, default=2, help="size of each binary result file, for download tests")
    sim.add_argument("--init-seconds", type=float, default=0.0,
                     help="time spent laying out files after commit, as a real NodeODM does (RUNNING, then QUEUED if busy)")
    sim.add_argument("--seed", type=int, default=None, help="seed the fault dice, for reproducible runs")
    sim.add_argument("--fragile", action="store_true",
                     help="crash on a NUL byte in an upload's file name, as NodeODM 2.2.x does (for testing)")

    demo = sub.add_parser("demo", help="start 3 simulated nodes and a coordinator, and process a sample job",
                          description="Everything on this machine: three simulated NodeODM nodes of different "
                                      "sizes, a coordinator on --port, and a split-merge-shaped job of several "
                                      "submodels sent through PyODM. Open the printed address to watch.")
    demo.add_argument("--port", type=int, default=3000, help="coordinator port (default 3000)")
    demo.add_argument("--submodels", type=int, default=6, help="how many submodels the sample job has")
    demo.add_argument("--images", type=int, default=12, help="images per submodel")
    demo.add_argument("--seconds-per-image", type=float, default=None,
                      help="simulated speed of the reference laptop: the default job takes about a minute and a "
                           "half; 0.1 finishes in seconds")
    demo.add_argument("--state-dir", default=None, help="keep the demo's database here (default: temporary)")
    demo.add_argument("--exit-when-done", action="store_true", help="stop once the sample job has finished")


def run_command(args: argparse.Namespace) -> int:
    from aiohttp import web

    from appliance.agent import create_app
    flags = {name: getattr(args, name) for name in RUN_SETTINGS}
    try:
        config = load_config(args.config, flags=flags)
        check_key(config)
        check_results_out(config)
    except ConfigError as exc:
        print(f"passel: {exc}. Passel did not start; fix the setting and start it again.", file=sys.stderr)
        return BAD_SETTINGS_EXIT
    setup_logging(config.log_level)
    if args.first_boot:
        from appliance.firstboot import first_boot
        first_boot(config, args.config)
    try:
        listener = listen(config.host, config.port)
    except OSError as exc:
        print(f"passel: cannot listen on {config.host}:{config.port}: {exc.strerror or exc}. "
              + ("Another program holds the port (find it with `ss -ltnp 'sport = :%d'`), or choose another "
                 "with --port." % config.port if exc.errno == errno.EADDRINUSE else "Check --host."), file=sys.stderr)
        return 1

    async def freeze_start_up_objects(app: web.Application) -> None:
        # ~100k long-lived objects (SQLAlchemy, Alembic, aiohttp) made every full collection cost
        # ~50 ms, the whole p99 of bench/proxy_overhead.py at 50 clients; frozen, the GC skips them.
        gc.freeze()

    app = create_app(config)
    app.on_startup.append(freeze_start_up_objects)
    web.run_app(app, sock=listener, print=None, handle_signals=True, shutdown_timeout=5)
    log.info("Passel stopped cleanly; every accepted task is kept in %s and carries on at the next start",
             config.database_path)
    return 0


def check_key(config: Config) -> None:
    """A key that cannot be used stops the start, before anything touches the state directory: under
    systemd a crash would restart for ever, and a box on a wrong key silently forms a passel of one."""
    try:
        if config.key:
            normalize_code(config.key)
        elif (config.state_dir / KEY_FILE).exists():
            normalize_code((config.state_dir / KEY_FILE).read_text())
    except ValueError as exc:
        where = config.sources.get("key") or str(config.state_dir / KEY_FILE)
        raise ConfigError(f"the passel key from {where} cannot be used: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read the passel key in {config.state_dir / KEY_FILE}: {exc.strerror}") from None


def check_results_out(config: Config) -> None:
    """A destination for finished products that cannot be used stops the start, in one sentence."""
    if not config.results_out:
        return
    from appliance.cluster.outbox import CHOICES, Destination  # the rules live with the pushing
    try:
        Destination.parse(config.results_out)
    except ValueError as exc:
        raise ConfigError(f"results_out from {config.sources.get('results_out')}: {exc}") from None
    if config.results_out_products not in CHOICES:
        raise ConfigError(f"results_out_products: {config.results_out_products!r} is not one of {', '.join(CHOICES)}")


def listen(host: str, port: int) -> socket.socket:
    """The listening socket, taken before start-up so a port in use is one sentence and not a traceback
    after migrations have run."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((host or "0.0.0.0", port))
        listener.listen(1024)
    except OSError:
        listener.close()
        raise
    listener.set_inheritable(False)
    return listener


def simnode_command(args: argparse.Namespace) -> int:
    from pathlib import Path

    from appliance.simnode import SimnodeSettings, serve_simnode
    setup_logging("info")
    settings = SimnodeSettings(host=args.host, port=args.port, max_images=args.max_images, slots=args.slots,
                               cores=args.cores, memory_mb=args.memory_mb, seconds_per_image=args.seconds_per_image,
                               token=args.token, fail_rate=args.fail_rate, drop_upload_rate=args.drop_upload_rate,
                               stall_at=args.stall_at, data_dir=Path(args.data_dir) if args.data_dir else None,
                               name=args.name, engine=args.engine, engine_version=args.engine_version,
                               asset_kb=args.asset_kb, init_seconds=args.init_seconds, seed=args.seed,
                               fragile=args.fragile)
    _run_until_signal(serve_simnode(settings))
    return 0


def _run_until_signal(coro: Any) -> None:
    """Run a coroutine until it ends or SIGTERM/SIGINT arrives, then let it clean up."""
    async def main() -> None:
        task = asyncio.ensure_future(coro)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, task.cancel)
        try:
            await task
        except asyncio.CancelledError:
            pass
    asyncio.run(main())


def demo_command(args: argparse.Namespace) -> int:
    from appliance.demo import DemoOptions, run_demo
    setup_logging("info")
    speed = {} if args.seconds_per_image is None else {"seconds_per_image": args.seconds_per_image}
    options = DemoOptions(port=args.port, submodels=args.submodels, images=args.images, state_dir=args.state_dir,
                          exit_when_done=args.exit_when_done, **speed)
    result: dict[str, Any] = {}
    _run_until_signal(run_demo(options, result))
    return 0 if result.get("ok", not args.exit_when_done) else 1
