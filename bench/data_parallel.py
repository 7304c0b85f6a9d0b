"""One large-batch PPO member on one CPU device against the same member split over two (data_shards=2).

Each case runs in its own process (XLA's device count is fixed when JAX starts), with the same
total batch: ``--envs`` environments x 128 steps, 4 epochs x 4 minibatches, CartPole-v1.
Prints env-steps/s of the training loop (compile excluded; the median of ``--repeats`` runs) and
the ratio. Usage: ``python bench/data_parallel.py [--envs 256] [--updates 8] [--repeats 3]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

CHILD = """
import json, sys, time
from pgkit import experiment
envs, updates, shards, repeats = (int(a) for a in sys.argv[1:5])
config = dict(num_envs=envs, num_steps=128, epochs=4, minibatches=4, total_steps=envs * 128 * updates,
              data_shards=shards)
experiment.train("ppo", env="CartPole-v1", seeds=1, config=config, chunk=updates, log=None, preset=False)  # compile
rates = []
for _ in range(repeats):
    t0 = time.perf_counter()
    result = experiment.train("ppo", env="CartPole-v1", seeds=1, config=config, chunk=updates, log=None, preset=False)
    rates.append(envs * 128 * updates / (time.perf_counter() - t0))
print(json.dumps({"rates": rates, "return": float(result.metrics["episode_return"][0, -1])}))
"""


def run(devices: int, shards: int, args) -> dict:
    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}", "PGKIT_CACHE_DIR": ""}
    out = subprocess.run([sys.executable, "-c", CHILD, str(args.envs), str(args.updates), str(shards), str(args.repeats)],
                         env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envs", type=int, default=256)
    parser.add_argument("--updates", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    one = run(1, 1, args)
    two = run(2, 2, args)
    m1, m2 = statistics.median(one["rates"]), statistics.median(two["rates"])
    print(f"PPO CartPole-v1, one member, {args.envs} envs x 128 steps, {args.updates} updates, median of {args.repeats}")
    print(f"  1 device, data_shards=1: {m1:>10,.0f} env-steps/s  ({', '.join(f'{r:,.0f}' for r in one['rates'])})")
    print(f"  2 devices, data_shards=2: {m2:>10,.0f} env-steps/s  ({', '.join(f'{r:,.0f}' for r in two['rates'])})")
    print(f"  speed-up {m2 / m1:.2f}x")


if __name__ == "__main__":
    main()
