"""Start or join Ray for a batch job, and shut it down afterwards only if this job started it."""

from __future__ import annotations

import os
from contextlib import contextmanager


@contextmanager
def ray_session(address: str = "", workers: int = 0):
    """Join `address` ("auto", host:port) or start a local Ray on loopback with `workers` CPUs (0: all).

    A Ray that is already running in this process (a test's, a notebook's) is used as it is and left running.
    """
    import ray

    started_here = not ray.is_initialized()
    if started_here:
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # a local Ray listens on loopback only
            ray.init(num_cpus=workers or os.cpu_count(), include_dashboard=False, log_to_driver=False)
    try:
        yield ray
    finally:
        if started_here:
            ray.shutdown()
