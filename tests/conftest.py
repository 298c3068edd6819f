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


def require_tool(find, env: str, what: str, skip_reason: str) -> str:
    """`find()`'s path, or, when it raises UserError: a skip (`skip_reason`, with the error), so the README's test
    command passes on a machine without the tool; a failure when the environment variable `env` is "1", so CI
    cannot pass without having run the tests that need it."""
    from newtonrewards.errors import UserError

    try:
        return find()
    except UserError as exc:
        missing = str(exc)
    if os.environ.get(env) == "1":
        pytest.fail(f"{missing} ({env}=1: the {what} tests must run)", pytrace=False)
    pytest.skip(f"{skip_reason}: {missing}; {env}=1 makes this a failure")


def require_browser() -> str:
    """Path of the headless Chromium the browser tests drive (`require_tool`, NR_REQUIRE_BROWSER)."""
    from newtonrewards.eval.browser import find_chromium

    return require_tool(find_chromium, REQUIRE_BROWSER, "browser", "no headless browser")


@pytest.fixture(scope="session")
def chromium() -> str:
    """`require_browser()` once per run; session scope, so a skip comes before any costly module fixture."""
    return require_browser()


REQUIRE_BLENDER = "NR_REQUIRE_BLENDER"  # "1": a missing Blender Python fails the blender renderer tests (.ci/run)


def require_blender() -> str:
    """The Blender venv's python the `--renderer blender` tests drive (NR_BLENDER_PYTHON or the default venv of
    scripts/install_blender.sh), by `require_tool` with NR_REQUIRE_BLENDER."""
    from newtonrewards.bench_gen.renderers.blender import find_blender_python

    return require_tool(find_blender_python, REQUIRE_BLENDER, "Blender", "no Blender")


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
