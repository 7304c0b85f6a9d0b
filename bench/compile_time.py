"""Compile time of one recipe's programs from a cold process, with a digest of the results.

Times what a run pays before its first update: compiling the init (``jit(vmap(init))``) and one
chunk of updates, the programs the driver builds, here one after the other on one device with one
XLA thread, the driver's layout for one seed (the driver shards more members and overlaps the two
compiles); counts the fused kernels of each program (the fewer, the shorter both the compile
and, at one seed, the run); then runs a few chunks and prints their median time and a digest
of their metrics and of the final state, so that an optimisation can be checked to leave every
number unchanged. Run it in a fresh process each time (JAX caches compiled programs in-process):

    python bench/compile_time.py [--recipe ppo] [--env CartPole-v1] [--seeds 1] [--chunks 4]
                                 [--rolled-threefry]

``--rolled-threefry`` restores JAX's default CPU lowering of the random-bit hash (a while loop),
which the driver replaces (``pgkit.experiment.use_unrolled_threefry``): A/B the two.
"""

from __future__ import annotations

import argparse
import hashlib
import time

import jax
import numpy as np

from pgkit import experiment
from pgkit.experiment import driver


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="ppo")
    parser.add_argument("--env", default="CartPole-v1")
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--chunks", type=int, default=4, help="chunks run after compiling (about 20 make a run)")
    parser.add_argument("--rolled-threefry", action="store_true")
    args = parser.parse_args()
    experiment.use_cpu_cores(1)

    module = experiment.load_recipe(args.recipe)
    config = module.Config()
    recipe = module.make(config, args.env)
    chunk = driver.chunk_length(recipe.num_updates, None)
    _, init, chunk_fn = driver.programs(module, config, args.env, chunk)  # turns the unrolled lowering on
    unrolled = not args.rolled_threefry and experiment.use_unrolled_threefry()  # declined from jaxlib 0.11
    if not unrolled:
        experiment.use_unrolled_threefry(False)
    keys = jax.random.split(jax.random.PRNGKey(0), args.seeds)
    hparams = jax.tree.map(lambda x: np.full((args.seeds,), x, np.float32), module.HParams())

    def timed(thunk):
        wall, cpu = time.perf_counter(), time.process_time()
        out = thunk()
        return out, time.perf_counter() - wall, time.process_time() - cpu

    init_program, init_wall, init_cpu = timed(lambda: init.lower(keys, hparams).compile())
    state = init_program(keys, hparams)
    chunk_program, chunk_wall, chunk_cpu = timed(lambda: chunk_fn.lower(state, hparams).compile())
    digest, seconds = hashlib.sha256(), []
    for _ in range(args.chunks):
        t0 = time.perf_counter()
        state, metrics = chunk_program(state, hparams)
        returns = np.asarray(metrics["episode_return"])
        seconds.append(time.perf_counter() - t0)
        digest.update(returns.tobytes())
    for leaf in jax.tree.leaves(state):
        digest.update(np.asarray(leaf).tobytes())
    print(
        f"{args.recipe} {args.env} seeds={args.seeds} threefry={'unrolled' if unrolled else 'rolled'}: "
        f"init compile {init_wall:.2f} s ({init_cpu:.2f} CPU-s, {_kernels(init_program)} kernels), chunk compile "
        f"{chunk_wall:.2f} s ({chunk_cpu:.2f} CPU-s, {_kernels(chunk_program)} kernels), chunk of {chunk} updates "
        f"runs in {np.median(seconds):.3f} s (median), "
        f"digest {digest.hexdigest()[:16]}"
    )


def _kernels(program) -> int:
    """Fused kernels in a compiled program (its optimised HLO's fusion instructions)."""
    return program.as_text().count(" fusion(")


if __name__ == "__main__":
    main()
