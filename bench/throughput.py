"""Throughput of any recipe: env-steps/s per seed count, compile time, final return.

Each seed count is one jit(vmap(scan(update))) program run in ``--chunks`` chunks; steps/s is
the median over chunks (compile excluded); ``wall`` is the whole run with compile included.
Like ``pgkit train``, it makes one JAX CPU device per core and shards the seeds over them
(``--devices 1`` for a single device).
Defaults: PPO on CartPole-v1 with the standard configuration (4 envs x 128 steps, 4 epochs x 4
minibatches, 5e5 steps per seed) at 1, 8 and 32 seeds.

    python bench/throughput.py [--recipe ppo] [--env CartPole-v1] [--seeds 1 8 32]
                               [--steps 500000] [--set name=value ...] [--json out.json]
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
from pgkit.recipe import parse_option
from pgkit.experiment import devices, driver


def measure(recipe: str, env: str, num_seeds: int, total_steps: int, *, chunks: int = 8, config=None) -> dict:
    """Compile and run ``num_seeds`` seeds of ``recipe`` for ``total_steps`` each; time both."""
    module = experiment.load_recipe(recipe)
    config = module.Config(**{**(config or {}), "total_steps": total_steps})
    t0 = time.perf_counter()
    made = module.make(config, env)
    chunk = max(1, made.num_updates // chunks)
    # as the driver starts: members placed over the devices, the chunk compiled during the init
    state, hp, compiled = driver.start_members(module, config, env, chunk, module.HParams(), num_seeds)
    compile_seconds = time.perf_counter() - t0
    rates, done, returns = [], 0, None
    while done + chunk <= made.num_updates:
        t1 = time.perf_counter()
        state, metrics = compiled(state, hp)
        returns = np.asarray(metrics["episode_return"])  # block and copy to host, as the driver does
        rates.append(num_seeds * chunk * made.env_steps_per_update / (time.perf_counter() - t1))
        done += chunk
    return {
        "recipe": recipe,
        "env": env,
        "seeds": num_seeds,
        "devices": devices.devices_used(num_seeds),
        "env_steps_per_second": float(np.median(rates)),
        "compile_seconds": compile_seconds,
        "wall_seconds_with_compile": time.perf_counter() - t0,
        "env_steps_per_seed": done * made.env_steps_per_update,
        "final_return_mean": float(returns[:, -1].mean()),
    }


HEADER = f"{'recipe':>8} {'env':>12} {'seeds':>6} {'devices':>7} {'env-steps/s':>14} {'compile s':>10} {'wall s':>8} {'final return':>13}"


def row(r: dict) -> str:
    return (
        f"{r['recipe']:>8} {r['env']:>12} {r['seeds']:>6} {r['devices']:>7} {r['env_steps_per_second']:>14,.0f} "
        f"{r['compile_seconds']:>10.1f} {r['wall_seconds_with_compile']:>8.1f} {r['final_return_mean']:>13.1f}"
    )


def machine() -> str:
    device = jax.devices()[0]
    return (
        f"jax {jax.__version__} | {jax.default_backend()} x{len(jax.devices())} ({device.device_kind}) | "
        f"{os.cpu_count()} cpus | {platform.processor() or platform.machine()}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="ppo")
    parser.add_argument("--env", default="CartPole-v1")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--steps", type=int, default=500_000)
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--json", help="write the results here as JSON")
    parser.add_argument("--devices", type=int, help="JAX CPU devices (default: one per core, as `pgkit train`)")
    args = parser.parse_args()
    # as `pgkit train` when one seed count is measured (devices and XLA threads fitted to it)
    experiment.use_cpu_cores(args.devices, members=args.seeds[0] if len(args.seeds) == 1 else None)
    module = experiment.load_recipe(args.recipe)
    config = {}
    for text in args.set:
        name, value = text.split("=", 1)
        config[name] = parse_option(module.Config, name, value)
    print(f"# {machine()}")
    print(HEADER)
    results = []
    for seeds in args.seeds:
        results.append(measure(args.recipe, args.env, seeds, args.steps, config=config))
        print(row(results[-1]), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": machine(), "results": results}, f, indent=2)


if __name__ == "__main__":
    main()
