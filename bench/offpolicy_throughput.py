"""SAC and TD3 Pendulum-v1 throughput: env-steps/s at 1, 8 and 32 seeds, and compile time.

Default configurations of ``recipes/sac.py`` and ``recipes/td3.py`` (one gradient step per
environment step, batch 256, 256x256 networks), shortened to ``--steps`` environment steps per
seed (default 3,000: the first 1,000 are the uniformly random warm-up, whose updates cost as
much as the others under vmap) and a buffer of that many transitions. ``--small`` uses the
learning tests' networks and minibatch (64x64, batch 64), the sensible choice on a CPU. Each
seed count is one jit(vmap(scan(update))) program run in 8 chunks; steps/s counts the steps of
all seeds together and is the median over chunks (compile excluded); wall is the whole run with
compile included.

    python bench/offpolicy_throughput.py [--recipes sac td3] [--seeds 1 8 32] [--steps 3000]
                                         [--small] [--json out.json]
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

ENV = "Pendulum-v1"
SMALL = {"hidden_sizes": (64, 64), "batch_size": 64}


def measure(recipe_name: str, num_seeds: int, total_steps: int, small: bool = False, chunks: int = 8) -> dict:
    module = experiment.load_recipe(recipe_name)
    overrides = SMALL if small else {}
    config = module.Config(total_steps=total_steps, buffer_size=total_steps, **overrides)
    t0 = time.perf_counter()
    recipe = module.make(config, ENV)
    chunk = max(1, recipe.num_updates // chunks)
    _, init, chunk_fn = experiment._compiled(module, config, ENV, chunk)
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
        "recipe": recipe_name,
        "seeds": num_seeds,
        "hidden_sizes": list(config.hidden_sizes),
        "batch_size": config.batch_size,
        "env_steps_per_second": float(np.median(rates)),
        "compile_seconds": compile_seconds,
        "wall_seconds_with_compile": wall,
        "env_steps_per_seed": done * recipe.env_steps_per_update,
        "final_return_mean": float(returns[:, -1].mean()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipes", nargs="+", default=["sac", "td3"], choices=["sac", "td3", "ddpg"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--steps", type=int, default=3_000, help="environment steps per seed")
    parser.add_argument("--small", action="store_true", help="64x64 networks and batch 64")
    parser.add_argument("--json", help="write the results here as JSON")
    args = parser.parse_args()
    print(
        f"# off-policy {ENV} | jax {jax.__version__} | {jax.default_backend()} x{len(jax.devices())} | "
        f"{os.cpu_count()} cpus | {platform.processor() or platform.machine()} | "
        f"{'64x64 batch 64' if args.small else 'default networks and batch'}"
    )
    print(f"{'recipe':>6} {'seeds':>6} {'env-steps/s':>12} {'compile s':>10} {'wall s':>8} {'final return':>13}")
    results = []
    for name in args.recipes:
        for seeds in args.seeds:
            r = measure(name, seeds, args.steps, args.small)
            results.append(r)
            print(
                f"{r['recipe']:>6} {r['seeds']:>6} {r['env_steps_per_second']:>12,.0f} {r['compile_seconds']:>10.1f} "
                f"{r['wall_seconds_with_compile']:>8.1f} {r['final_return_mean']:>13.1f}",
                flush=True,
            )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
