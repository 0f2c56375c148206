"""`tunesmith serve`: the OpenAI-compatible API (and a worker beside it) on loopback by default."""

from __future__ import annotations

import argparse
import ipaddress

from tunesmith.commands import positive_int
from tunesmith.commands.worker import add_worker_options, worker_settings


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "serve", help="serve the OpenAI-compatible API: files, fine-tuning jobs, models, chat",
        description="Serve /v1/files, /v1/fine_tuning/jobs, /v1/models and /v1/chat/completions. "
                    "Every route but /health needs an API key once one exists (`tunesmith keys create`).")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--no-worker", action="store_true",
                        help="run no worker here (jobs are run by `tunesmith worker` processes)")
    parser.add_argument("--max-upload-mb", type=int, default=512)
    parser.add_argument("--max-tokens", type=int, default=1024, help="cap on max_tokens per completion")
    parser.add_argument("--max-n", type=int, default=8, help="cap on choices per completion")
    parser.add_argument("--max-concurrent-generations", type=int, default=8,
                        help="requests generating at once (those on one base are batched together)")
    parser.add_argument("--max-loaded-models", type=int, default=2, help="base models kept in memory")
    parser.add_argument("--engine-threads", type=positive_int, default=None, metavar="N",
                        help="torch threads generating replies (default: all CPU cores but one, "
                             "which is left to the server's own work)")
    security = parser.add_argument_group("security (docs/server.md, Security)")
    security.add_argument("--allowed-host", action="append", default=[], metavar="NAME",
                          help="a Host name to serve besides localhost, 127.0.0.1 and ::1 (repeatable; the "
                               "name clients and your TLS proxy use)")
    security.add_argument("--allow-python-graders", action="store_true",
                          help="run python graders sent by API callers (sandboxed, but it is their code "
                               "on this machine: only for callers you trust)")
    security.add_argument("--allow-keyless-network", action="store_true",
                          help="serve beyond loopback even with no API keys (anyone who can reach the "
                               "address can then use the server)")
    add_worker_options(parser)
    parser.set_defaults(handler=run)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from tunesmith.commands.console import console, err_console
    from tunesmith.errors import TunesmithError
    from tunesmith.serve.app import create_app
    from tunesmith.serve.auth import list_keys
    from tunesmith.serve.limits import MIB, Access, Limits
    from tunesmith.store import open_registry
    from tunesmith.store.home import tunesmith_home

    registry = open_registry()
    keys = [k for k in list_keys(registry) if k.revoked_at is None]
    if not keys and not is_loopback(args.host):
        if not args.allow_keyless_network:
            raise TunesmithError(
                f"refusing to serve on {args.host} with no API keys: anyone who can reach this address "
                "could upload data, start training and read your models",
                fix="create a key with `tunesmith keys create`, or pass --allow-keyless-network")
        err_console.print(
            f"[bold red]warning:[/] serving on {args.host} with no API keys (--allow-keyless-network): "
            "anyone who can reach this address can upload data, start training and read your models.",
            highlight=False)
    hosts = tuple(args.allowed_host) + (() if is_loopback(args.host) or args.host in ("0.0.0.0", "::")
                                        else (args.host,))
    access = Access(allow_python_graders=args.allow_python_graders, allowed_hosts=hosts)
    limits = Limits(max_upload_bytes=args.max_upload_mb * MIB, max_tokens=args.max_tokens, max_n=args.max_n,
                    max_concurrent_generations=args.max_concurrent_generations,
                    max_loaded_bases=args.max_loaded_models, engine_threads=args.engine_threads)
    worker = None if args.no_worker else worker_settings(args)
    app = create_app(registry, tunesmith_home(), limits, worker, access)
    auth = f"{len(keys)} API key(s) required" if keys else "no API keys (open)"
    if args.host in ("0.0.0.0", "::") and not args.allowed_host:
        err_console.print("[bold yellow]note:[/] only the loopback host names are served; add the name "
                          "clients use with --allowed-host NAME", highlight=False)
    console.print(f"tunesmith serving on http://{args.host}:{args.port}/v1 — {auth}; "
                  f"worker: {'off' if worker is None else 'on'}", highlight=False)
    if args.allow_python_graders:
        err_console.print("[bold yellow]note:[/] python graders from API callers are allowed "
                          "(--allow-python-graders): they run sandboxed, as this user.", highlight=False)
    # A short graceful shutdown: SIGTERM stops the server within seconds, mid-generation too
    # (the app cancels running generations when it shuts down).
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", timeout_graceful_shutdown=2)
    return 0
