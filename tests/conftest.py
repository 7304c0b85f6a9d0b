import os

# Tests run on the CPU with float32, as CI does; keep XLA from grabbing every core twice over.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
