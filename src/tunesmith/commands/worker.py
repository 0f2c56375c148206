"""`tunesmith worker`: claim queued fine-tuning jobs from the registry and run them.

Several workers (on several machines sharing one PostgreSQL registry and artifact
folder) never run the same job twice; jobs of a worker that died are re-queued and
resume from their last checkpoint.
"""

from __future__ import annotations

import argparse
from typing import Any


def add_worker_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("worker")
    group.add_argument("--max-jobs", type=int, default=1, help="jobs this worker trains at once")
    group.add_argument("--poll-seconds", type=float, default=1.0, help="how often to look for work")
    group.add_argument("--stale-seconds", type=float, default=30.0,
                       help="a job whose worker has not beaten for this long is re-queued")
    group.add_argument("--grace-seconds", type=float, default=30.0,
                       help="time a job gets to stop at a step boundary before it is killed")


def worker_settings(args: argparse.Namespace) -> Any:
    from tunesmith.serve.limits import WorkerSettings

    return WorkerSettings(poll_seconds=args.poll_seconds, heartbeat_seconds=min(2.0, args.stale_seconds / 4),
                          stale_seconds=args.stale_seconds, grace_seconds=args.grace_seconds,
                          max_jobs=args.max_jobs)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("worker", help="run queued fine-tuning jobs (beside or without serve)",
                                   description=__doc__)
    add_worker_options(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import signal

    from tunesmith.commands.console import console
    from tunesmith.serve.worker import Worker
    from tunesmith.store import open_registry

    worker = Worker(open_registry(), worker_settings(args))
    signal.signal(signal.SIGTERM, lambda *_: worker.stop())
    console.print(f"worker {worker.worker_id} waiting for jobs (Ctrl-C to stop)", highlight=False)
    try:
        worker.run()
    except KeyboardInterrupt:
        worker.stop()
        worker.shutdown()
    return 0
