"""Test-wide environment: one thread per process, no network, a quiet Ray on loopback (see docs/ARCHITECTURE.md);
the headless browser the report tests need (skipped without one, unless NR_REQUIRE_BROWSER=1) and Blender's Python
for the blender renderer tests (skipped without it, unless NR_REQUIRE_BLENDER=1)."""

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


REQUIRE_BROWSER = "NR_REQUIRE_BROWSER"  # "1": a missing browser fails the browser tests (set by .ci/run)


def require_browser() -> str:
    """Path of the headless Chromium the browser tests drive. Without one: a skip that says how to install it, so
    the README's test command passes on a machine with no browser; a failure when NR_REQUIRE_BROWSER=1, so CI
    cannot pass without having run them."""
    from newtonrewards.errors import UserError
    from newtonrewards.eval.browser import find_chromium

    try:
        return find_chromium()
    except UserError as exc:
        missing = str(exc)
    if os.environ.get(REQUIRE_BROWSER) == "1":
        pytest.fail(f"{missing} ({REQUIRE_BROWSER}=1: the browser tests must run)", pytrace=False)
    pytest.skip(f"no headless browser: {missing}; {REQUIRE_BROWSER}=1 makes this a failure")


@pytest.fixture(scope="session")
def chromium() -> str:
    """`require_browser()` once per run; session scope, so a skip comes before any costly module fixture."""
    return require_browser()


REQUIRE_BLENDER = "NR_REQUIRE_BLENDER"  # "1": a missing Blender Python fails the blender renderer tests (.ci/run)


def require_blender() -> str:
    """The Blender venv's python the `--renderer blender` tests drive (NR_BLENDER_PYTHON or the default venv of
    scripts/install_blender.sh). Without one: a skip saying how to install it; a failure when NR_REQUIRE_BLENDER=1."""
    from newtonrewards.bench_gen.renderers.blender import find_blender_python
    from newtonrewards.errors import UserError

    try:
        return find_blender_python()
    except UserError as exc:
        missing = str(exc)
    if os.environ.get(REQUIRE_BLENDER) == "1":
        pytest.fail(f"{missing} ({REQUIRE_BLENDER}=1: the Blender tests must run)", pytrace=False)
    pytest.skip(f"no Blender: {missing}; {REQUIRE_BLENDER}=1 makes this a failure")


@pytest.fixture(scope="session")
def blender_python() -> str:
    """`require_blender()` once per run; the Blender children started in this process stop at the end."""
    path = require_blender()
    yield path
    from newtonrewards.bench_gen.renderers.blender import close_workers

    close_workers()


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
