"""Test-wide environment: one thread per process, no network, a quiet Ray on loopback (see docs/ARCHITECTURE.md)."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # forces 127.0.0.1
os.environ["RAY_AUTH_MODE"] = "disabled"
os.environ["RAY_USAGE_STATS_ENABLED"] = "0"

import tempfile  # noqa: E402

import cv2  # noqa: E402
import pytest  # noqa: E402

cv2.setNumThreads(1)


@pytest.fixture(scope="session")
def local_ray():
    """One local Ray with two workers for the whole run, on loopback, with a short socket folder."""
    import ray

    temp_dir = tempfile.mkdtemp(prefix="ray", dir="/tmp")
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        object_store_memory=80 * 1024 * 1024,
        _temp_dir=temp_dir,
        runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}},
    )
    yield ray
    ray.shutdown()


try:  # tiny models run 5-60x slower with two threads on this machine (docs/PERFORMANCE.md)
    import torch

    torch.set_num_threads(1)
except ImportError:
    pass
