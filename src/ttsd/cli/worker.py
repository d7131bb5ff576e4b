"""``ttsd worker``: a Celery engine worker for distributed mode, one node per engine pool."""

from __future__ import annotations

import argparse
import sys
import time

from ..config import Settings
from .base import EXIT_ERROR, EXIT_OK, settings_from


def worker_command(args: argparse.Namespace) -> int:
    from ..engines import REGISTRY, select
    from ..links import Links
    from ..pools import check_devices

    settings = settings_from(args, "engines", "engine_slots", "pools", "log_format")
    # Engines yield to an API on their machine (TTSD_ENGINE_NICE); a worker's machine has none, and
    # its engines yielding to its own plumbing cost a one-slot eSpeak worker 6 % of its throughput:
    # they get the CPU as its event loop does, unless told otherwise.
    unset = "engine_nice" not in settings.model_fields_set
    settings = settings.model_copy(update={"queue": "celery", **({"engine_nice": 0} if unset else {})})
    select(settings.engines, settings)
    check_devices(settings.pool_layout, {name: spec.device_kinds for name, spec in REGISTRY.items()})
    Links.of(settings)  # refuse to start without the secret every API and worker shares
    if len(settings.pool_layout) > 1:
        return _worker_per_pool(args, settings)
    from ..jobs.distributed.protocol import queue_name
    from ..jobs.distributed.worker import make_worker_app

    pool = settings.pool_layout[0]
    app = make_worker_app(settings, pool)
    # Celery's banner is printed, not logged: a JSON log has none.
    quiet = ["--quiet"] if settings.log_format == "json" else []
    app.worker_main(
        [
            *quiet,
            "worker",
            "--pool=solo",
            f"--queues={','.join(queue_name(e) for e in pool.engines)}",
            f"--hostname={args.name}",
            f"--loglevel={settings.log_level}",
            "--without-gossip",
            "--without-mingle",
        ]
    )
    return EXIT_OK


def _worker_per_pool(args: argparse.Namespace, settings: Settings) -> int:
    """Several pools: one Celery worker node per pool, since a node's processes are alike and take
    whatever its queues hold. They run as children of this process, which passes SIGTERM and
    SIGINT on and, if one of them ends, stops the rest and exits with its code (for the process
    manager to restart the whole worker)."""
    import signal
    import subprocess

    children = []
    for pool in settings.pool_layout:
        command = [
            sys.executable,
            "-m",
            "ttsd.cli",
            "worker",
            "--pools",
            str(pool),
            "--name",
            f"{pool.name}.{args.name}",
        ]
        if args.log_format:
            command += ["--log-format", args.log_format]
        children.append(subprocess.Popen(command))

    def forward(signum: int, _frame: object) -> None:
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    code = None
    while code is None:
        for child in children:
            if child.poll() is not None:
                code = child.returncode
                break
        else:
            time.sleep(0.5)
    forward(signal.SIGTERM, None)
    for child in children:
        child.wait()
    return EXIT_OK if code == 0 else EXIT_ERROR
