"""A3C's actor threads (mode=threads) against A2C and A3C's schedule at equal settings, on CPU devices.

Each case runs in its own process with ``--devices`` XLA CPU devices (2 by default: the CI
machine's cores), CartPole-v1, ``--seeds`` members. Equal settings: every update learns from
8 environments x 8 steps (64 env steps), 64x64 tanh networks, RMSProp; A3C has 4 actors of 8
environments each.

- ``a2c 8 envs``: A2C with the same batch per update (8 envs x 8 steps).
- ``a2c 32 envs``: A2C with as many environments as A3C's 4 actors (32 envs x 8 steps; 256
  env steps per update).
- ``--envs``, ``--steps``, ``--actors`` change the 8, 8 and 4; ``--single-threaded`` runs every
  XLA CPU program on one thread (``--xla_cpu_multi_thread_eigen=false``), in every case.
- ``a3c schedule``: the staleness as a schedule in one compiled program (bit-reproducible).
- ``a3c threads``: 4 actor threads and the learner through a queue of 2 (pgkit.experiment.asynchronous).

Prints env-steps/s of the training loop (compile excluded: the first chunk is run once before
timing; the median of ``--repeats`` timed chunks), and for threads the fraction of the wall time
the learner spent in updates, each actor in rollouts, the learner's median queue wait, and the
staleness distribution. Usage: ``python bench/a3c_threads.py [--devices 2] [--seeds 1] [--updates 2000] [--envs 8] [--steps 8]``.
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
import jax, numpy as np
from pgkit.experiment import asynchronous, devices, driver
from recipes import a2c, a3c
case, seeds, updates, repeats, envs, steps, actors = sys.argv[1], *(int(a) for a in sys.argv[2:])
common = dict(num_steps=steps, hidden_sizes=(64, 64))
if case == "a2c":
    module, config = a2c, a2c.Config(num_envs=envs, **common)
elif case == "a2c all":
    module, config = a2c, a2c.Config(num_envs=envs * actors, **common)
else:
    module, config = a3c, a3c.Config(num_envs=envs, num_actors=actors, queue_size=2, mode=case.split()[1], **common)
config = type(config)(**{**config.__dict__, "total_steps": 10 ** 9})
recipe, init, chunk_fn = driver.programs(module, config, "CartPole-v1", updates, seeds)
keys = jax.random.split(jax.random.PRNGKey(0), seeds)
hparams = jax.tree.map(lambda x: np.full((seeds,), x, np.float32), module.HParams())
keys, hparams = devices.shard_members((keys, hparams), seeds)
state = devices.shard_members(init(keys, hparams), seeds)
steps = updates * recipe.env_steps_per_update * seeds
threads = recipe.actor_learner is not None
run = asynchronous.ThreadedChunks(recipe.actor_learner, updates) if threads else chunk_fn.lower(state, hparams).compile()
out = {"rates": [], "per_update": recipe.env_steps_per_update, "devices": devices.devices_used(seeds, 1)}
for r in range(repeats + 1):
    t0 = time.perf_counter()
    state, metrics = jax.block_until_ready(run(state, hparams))
    if r:
        out["rates"].append(steps / (time.perf_counter() - t0))
    if threads and r:
        t = run.timing
        out.setdefault("learner", []).append(t["learner_busy"])
        out.setdefault("actors", []).append(float(np.mean(t["actor_busy"])))
        out.setdefault("wait", []).append(float(np.median(np.asarray(metrics["queue_wait"]))))
        s = np.asarray(metrics["staleness"]).ravel().astype(int)
        out["staleness"] = {int(k): int(v) for k, v in zip(*np.unique(s, return_counts=True))}
out["return"] = float(np.mean(np.asarray(metrics["episode_return"])[:, -1]))
print(json.dumps(out))
"""

SINGLE = " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"  # one thread per XLA program
CASES = ("a2c", "a2c all", "a3c schedule", "a3c threads")


def run(case: str, args) -> dict:
    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={args.devices}" + SINGLE * args.single_threaded, "PGKIT_CACHE_DIR": ""}
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, "-c", CHILD, case, *(str(a) for a in (args.seeds, args.updates, args.repeats, args.envs, args.steps, args.actors))],
                         env={**env, "PYTHONPATH": root + os.pathsep + env.get("PYTHONPATH", "")},
                         capture_output=True, text=True, cwd=root)
    if out.returncode:
        sys.exit(f"{case}: {out.stderr.strip().splitlines()[-1]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=2)
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--updates", type=int, default=2000, help="updates per timed chunk")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--envs", type=int, default=8, help="environments per actor (A2C: per update)")
    parser.add_argument("--steps", type=int, default=8, help="rollout length")
    parser.add_argument("--actors", type=int, default=4)
    parser.add_argument("--single-threaded", action="store_true",
                        help="every XLA CPU program on one thread (for all cases): the threads then use the cores")
    args = parser.parse_args()
    print(f"CartPole-v1, {args.seeds} seed(s) on {args.devices} CPU device(s), {args.envs} envs x {args.steps} steps "
          f"per update ({args.actors} actors for a3c), chunks of {args.updates} updates, median of {args.repeats}"
          + (", single-threaded XLA programs" if args.single_threaded else ""))
    results = {case: run(case, args) for case in CASES}
    base = statistics.median(results["a2c"]["rates"])
    names = {"a2c": f"a2c {args.envs} envs", "a2c all": f"a2c {args.envs * args.actors} envs"}
    for case, r in results.items():
        rate = statistics.median(r["rates"])
        line = (f"  {names.get(case, case):<13} {r['per_update']:>5} steps/update  {rate:>10,.0f} env-steps/s  "
                f"x{rate / base:.2f} of {names['a2c']}  (members on {r['devices']} device(s))")
        print(line)
        if "learner" in r:
            print(f"      learner busy {statistics.median(r['learner']):.0%}, actors busy "
                  f"{statistics.median(r['actors']):.0%} each, learner's median queue wait "
                  f"{statistics.median(r['wait']) * 1e3:.2f} ms; staleness (updates: count) {r['staleness']}")


if __name__ == "__main__":
    main()
