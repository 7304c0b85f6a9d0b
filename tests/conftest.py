import atexit
import os
import shutil
import tempfile

import pytest

# Tests run on the CPU with float32, as CI does; keep XLA from grabbing every core twice over.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
# One cache of compiled programs for the whole run, never ~/.cache/pgkit/xla (the pgkit command's):
# the first pytest process makes it and removes it at exit; xdist's workers and the subprocesses
# the tests start inherit it, so a program compiled anywhere in the run is not compiled again
# (the kill-and-resume subprocesses of tests/test_reliability.py and tests/test_distributed.py
# compile the run they resume). A cache hit is the same executable: the bit-identity tests hold.
# tests/test_experiment.py covers the cache itself in a subprocess with its own directory.
if "PGKIT_TESTS_XLA_CACHE" not in os.environ:
    os.environ["PGKIT_TESTS_XLA_CACHE"] = tempfile.mkdtemp(prefix="pgkit-tests-xla-")
    atexit.register(shutil.rmtree, os.environ["PGKIT_TESTS_XLA_CACHE"], ignore_errors=True)
os.environ["PGKIT_CACHE_DIR"] = os.environ["PGKIT_TESTS_XLA_CACHE"]

_flags = [f for f in os.environ.get("XLA_FLAGS", "").split() if "xla_force_host_platform_device_count" not in f]
os.environ["XLA_FLAGS"] = " ".join(_flags)  # the device count is set below

# What the driver does (bit-identical random numbers, faster compiles): the whole suite gets it.
from pgkit import experiment  # noqa: E402  (after the environment above is set)

experiment.use_unrolled_threefry()
experiment.use_compilation_cache()  # the directory above
# One JAX CPU device per test process, whatever runs first: the pgkit command (tests call
# cli.main in-process) would otherwise split a fresh process into one device per core, and the
# measured numbers in the learning tests are single-device runs. Tests of sharding set their own.
# XLA's CPU pool gets two threads, whatever the machine: XLA splits some large sums (TRPO's and
# NPG's Fisher products) over its threads, so the learning tests' measured numbers hold for this
# pool size (CI has 2 cores; on one core the pool has one thread).
assert experiment.use_cpu_cores(1, threads=2), "JAX started before tests/conftest.py"


# `make test-quick` (pytest -m "not slow") leaves out what trains agents end to end: the recipe
# files, the examples' learning runs, the variance study, and the driver's multi-run equality
# checks. `make test` runs all.
_SLOW_FILES = ("test_recipe_", "test_example_", "test_variance_study")
_SLOW_TESTS = {
    "test_sharded_run_equals_single_device_run",
    "test_member_of_vmapped_run_equals_single_run",
    "test_sweep_is_one_program_and_new_values_do_not_recompile",
    "test_train_resume_plot_eval_list",
}


@pytest.fixture
def offline_gymnax(monkeypatch):
    """gymnax.make fails as it does offline for an environment it makes from a download (MNISTBandit-bsuite)."""
    import urllib.error

    import gymnax

    def offline_make(name, **kwargs):
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(gymnax, "make", offline_make)


def pytest_collection_modifyitems(config, items):
    # The slow files first (`make test` keeps this order: --no-loadscope-reorder): xdist would
    # otherwise hand out files by their number of tests, and a file of a few long learning runs
    # would start last and run alone at the end.
    items.sort(key=lambda item: not item.path.name.startswith(_SLOW_FILES))
    for item in items:
        if item.path.name.startswith(_SLOW_FILES) or item.originalname in _SLOW_TESTS:
            item.add_marker(pytest.mark.slow)
