"""gunicorn reads this file from the working directory by default."""

from __future__ import annotations

import os


def child_exit(server, worker) -> None:
    # A worker that died (or was replaced) would otherwise leave its share of the live
    # gauges (connection pool slots in use) in PROMETHEUS_MULTIPROC_DIR: see patchworks_site/metrics.py.
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if path and os.path.isdir(path):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid, path)
