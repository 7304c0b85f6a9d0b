"""GPU scaling curves: PPO CartPole-v1 from 1 to 4096 seeds, SAC Pendulum-v1 from 1 to 1024.

Run on a machine with an accelerator (``python bench/gpu.py``) and record the device and the
figures in docs/benchmarks.md. The issue's target: 2048 seeds x 5e5 steps of PPO CartPole in
<= 30 s wall-clock in total, compile included (``--ppo-seeds 2048``).

    python bench/gpu.py [--ppo-seeds 1 64 512 2048 4096] [--sac-seeds 1 32 256 1024]
                        [--ppo-steps 500000] [--sac-steps 20000] [--json out.json]

Every row is one jit(vmap(scan(update))) program; ``wall`` includes compile.
"""

from __future__ import annotations

import argparse
import json

from throughput import HEADER, machine, measure, row

from pgkit import experiment


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ppo-seeds", type=int, nargs="*", default=[1, 16, 128, 512, 1024, 2048, 4096])
    parser.add_argument("--sac-seeds", type=int, nargs="*", default=[1, 16, 128, 512, 1024])
    parser.add_argument("--ppo-steps", type=int, default=500_000)
    parser.add_argument("--sac-steps", type=int, default=20_000)
    parser.add_argument("--json", help="write the results here as JSON")
    args = parser.parse_args()
    print(f"# {machine()}")
    print(HEADER)
    results = []
    runs = [("ppo", "CartPole-v1", s, args.ppo_steps) for s in args.ppo_seeds]
    runs += [("sac", "Pendulum-v1", s, args.sac_steps) for s in args.sac_seeds]
    for recipe, env, seeds, steps in runs:
        try:
            r = measure(recipe, env, seeds, steps, chunks=4)
        except experiment.ConfigError as error:  # e.g. a recipe not available in this checkout
            print(f"{recipe:>8} {env:>12} {seeds:>6} skipped: {error}")
            continue
        results.append(r)
        print(row(r), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": machine(), "results": results}, f, indent=2)


if __name__ == "__main__":
    main()
