"""PPO CartPole-v1 throughput: env-steps/s at 1, 8 and 32 seeds, and compile time.

Standard configuration (4 envs x 128 steps, 4 epochs x 4 minibatches, 5e5 steps per seed).
Each seed count is one jit(vmap(scan(update))) program run in 8 chunks; steps/s is the median
over chunks after the first (compile excluded), wall is the whole run with compile included.

    python bench/ppo_throughput.py [--seeds 1 8 32] [--steps 500000] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import jax
import numpy as np

from pgkit import experiment


def measure(num_seeds: int, total_steps: int, chunks: int = 8) -> dict:
    module = experiment.load_recipe("ppo")
    config = module.Config(total_steps=total_steps)
    t0 = time.perf_counter()
    recipe = module.make(config, "CartPole-v1")
    chunk = max(1, recipe.num_updates // chunks)
    _, init, chunk_fn = experiment._compiled(module, config, "CartPole-v1", chunk)
    keys = jax.random.split(jax.random.PRNGKey(0), num_seeds)
    hp = jax.tree.map(lambda x: np.full((num_seeds,), x, np.float32), module.HParams())
    state = init(keys, hp)
    compiled = chunk_fn.lower(state, hp).compile()
    compile_seconds = time.perf_counter() - t0
    rates, done = [], 0
    while done + chunk <= recipe.num_updates:
        t1 = time.perf_counter()
        state, metrics = compiled(state, hp)
        returns = np.asarray(metrics["episode_return"])  # block and move to host, as the driver does
        rates.append(num_seeds * chunk * recipe.env_steps_per_update / (time.perf_counter() - t1))
        done += chunk
    wall = time.perf_counter() - t0
    return {
        "seeds": num_seeds,
        "env_steps_per_second": float(np.median(rates)),
        "compile_seconds": compile_seconds,
        "wall_seconds_with_compile": wall,
        "env_steps_per_seed": done * recipe.env_steps_per_update,
        "final_return_mean": float(returns[:, -1].mean()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--steps", type=int, default=500_000)
    parser.add_argument("--json", help="write the results here as JSON")
    args = parser.parse_args()
    print(
        f"# PPO CartPole-v1 | jax {jax.__version__} | {jax.default_backend()} x{len(jax.devices())} | "
        f"{os.cpu_count()} cpus | {platform.processor() or platform.machine()}"
    )
    print(f"{'seeds':>6} {'env-steps/s':>12} {'compile s':>10} {'wall s':>8} {'final return':>13}")
    results = []
    for seeds in args.seeds:
        r = measure(seeds, args.steps)
        results.append(r)
        print(
            f"{r['seeds']:>6} {r['env_steps_per_second']:>12,.0f} {r['compile_seconds']:>10.1f} "
            f"{r['wall_seconds_with_compile']:>8.1f} {r['final_return_mean']:>13.1f}",
            flush=True,
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
