"""``streamfeat serve``: run the FastAPI feature server under uvicorn.

Requires ``streamfeat apply`` first: the applied plan gives the shard count and the
view fingerprints the server reads. Startup problems (no plan, a view changed since
apply, a transform that cannot be imported) are reported before uvicorn starts.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import os
import socket
from typing import Any

from cli.common import Subparsers, add_settings_args
from cli.setting_options import add_setting_option

GC_GEN0_THRESHOLD = 50_000


def register(subparsers: Subparsers) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "serve",
        help="serve features over HTTP (FastAPI + uvicorn)",
        description="Serve the repo's feature services over HTTP. Run `streamfeat apply` first.",
    )
    add_settings_args(parser, kafka=False)
    add_setting_option(parser, "--host", setting="serve_host", what="listen address")
    add_setting_option(parser, "--port", setting="serve_port", what="port", type=int)
    parser.add_argument("--workers", type=int, default=1, help="uvicorn worker processes (default 1)")
    add_setting_option(
        parser,
        "--online",
        setting="online",
        what="online table: RocksDB secondaries over the state directory, or Redis",
        choices=("rocksdb", "redis"),
    )
    add_setting_option(parser, "--redis-url", setting="redis_url", what="redis://host:port/db when --online redis")
    add_setting_option(
        parser,
        "--header-timeout-ms",
        setting="header_timeout_ms",
        what="408 when a request's line and headers take longer",
        type=int,
    )
    add_setting_option(
        parser,
        "--body-timeout-ms",
        setting="body_timeout_ms",
        what="408 when a request's body takes longer after its headers",
        type=int,
    )
    add_setting_option(
        parser,
        "--max-connections-per-client",
        setting="max_connections_per_client",
        what="open connections allowed per client address, 0 for no cap",
        type=int,
    )
    add_setting_option(
        parser,
        "--max-in-flight",
        setting="max_in_flight",
        what="complete requests served at once before 503 overloaded",
        type=int,
    )
    parser.set_defaults(handler=_serve)


def _overrides(args: argparse.Namespace) -> dict[str, object]:
    return {
        "repo": args.repo,
        "data_dir": args.data_dir,
        "serve_host": args.host,
        "serve_port": args.port,
        "online": args.online,
        "redis_url": args.redis_url,
        "header_timeout_ms": args.header_timeout_ms,
        "body_timeout_ms": args.body_timeout_ms,
        "max_connections_per_client": args.max_connections_per_client,
        "max_in_flight": args.max_in_flight,
    }


def _tune_gc() -> None:
    """Keep collector pauses out of the latency tail.

    Start-up leaves hundreds of thousands of long-lived objects (FastAPI, pydantic,
    polars, numpy); freezing them keeps every full collection from walking them again.
    A request allocates a few hundred short-lived objects, so a larger first-generation
    threshold means fewer, equally cheap young collections.
    """
    gc.collect()
    gc.freeze()
    _, second, third = gc.get_threshold()
    gc.set_threshold(GC_GEN0_THRESHOLD, second, third)


def _check_port_free(host: str, port: int) -> None:
    """One clear line instead of uvicorn's start-up and shutdown log around a bind error."""
    from engine.exceptions import ConfigError

    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise ConfigError(
                f"cannot serve on {host}:{port}: {exc.strerror or exc}",
                hint="pass --port, or set serve_port in streamfeat.yaml; is `streamfeat serve` already running?",
            ) from None


def _serve(args: argparse.Namespace) -> int:
    # Before polars is first imported: a batch transform's frame has one row per entity
    # of a request (at most a few hundred), where polars' thread pool costs more than it
    # saves, and requests already keep the cores busy. An explicit setting wins.
    os.environ.setdefault("POLARS_MAX_THREADS", "1")
    import uvicorn

    from engine.config import load_settings
    from engine.exceptions import ConfigError
    from serving.app import create_app
    from serving.http_guard import GuardedHttpToolsProtocol, HttpLimits

    if args.workers < 1:
        raise ConfigError(f"--workers: expected at least 1, got {args.workers}")
    settings = load_settings(overrides=_overrides(args))
    _check_port_free(settings.serve_host, settings.serve_port)
    loop = "uvloop" if importlib.util.find_spec("uvloop") else "auto"
    # Uvicorn's httptools protocol with read timeouts and per-client caps (serving/http_guard.py);
    # workers build their limits from the same settings.
    GuardedHttpToolsProtocol.configure(HttpLimits.from_settings(settings))
    common: dict[str, Any] = {  # Any: uvicorn.run's keyword arguments, each of its own type
        "host": settings.serve_host,
        "port": settings.serve_port,
        "loop": loop,
        "http": GuardedHttpToolsProtocol,
        "access_log": False,
        "log_level": "info",
    }
    if args.workers == 1:
        app = create_app(settings)  # raises ServingSetupError (exit 2) with a hint
        print(f"serving {sorted(app.state.serving.registry.services)} on {settings.serve_url} (docs at /docs)")
        _tune_gc()
        uvicorn.run(app, **common)
        return 0
    # Several workers import the factory themselves; they read the same settings from
    # the environment. Check everything once here so a bad repo fails before forking.
    from engine.definitions import load_repo
    from serving.app import load_plan_or_fail
    from serving.registry import build_registry

    build_registry(load_repo(settings.repo_path), load_plan_or_fail(settings))
    if settings.online == "redis":
        from engine.state.redis_client import refuse_evicting_url

        refuse_evicting_url(settings.redis_url)  # in one line, before any worker opens the table
    for key, value in _overrides(args).items():
        if value is not None:
            os.environ[f"STREAMFEAT_{key.upper()}"] = str(value)
    uvicorn.run("serving.app:create_app", factory=True, workers=args.workers, **common)
    return 0
