import os

# Tests run on the CPU with float32, as CI does; keep XLA from grabbing every core twice over.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
# The pgkit command keeps compiled programs in ~/.cache/pgkit/xla; the in-process CLI tests must
# not (tests/test_experiment.py covers the cache in a subprocess with its own directory).
os.environ["PGKIT_CACHE_DIR"] = ""

# One JAX CPU device per test process, whatever runs first: the pgkit command (tests call
# cli.main in-process) would otherwise split a fresh process into one device per core, and the
# measured numbers in the learning tests are single-device runs. Tests of sharding set their own.
_flags = [f for f in os.environ.get("XLA_FLAGS", "").split() if "xla_force_host_platform_device_count" not in f]
os.environ["XLA_FLAGS"] = " ".join([*_flags, "--xla_force_host_platform_device_count=1"])

# What the driver does (bit-identical random numbers, faster compiles): the whole suite gets it.
from pgkit import experiment  # noqa: E402  (after the environment above is set)

experiment.use_unrolled_threefry()
