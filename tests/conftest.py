import os

# Tests run on the CPU with float32, as CI does; keep XLA from grabbing every core twice over.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
# The pgkit command keeps compiled programs in ~/.cache/pgkit/xla; the in-process CLI tests must
# not (tests/test_experiment.py covers the cache in a subprocess with its own directory).
os.environ.setdefault("PGKIT_CACHE_DIR", "")
