"""Calibrate the learning tests: each test's score over many seeds, and its threshold's margin.

A learning test trains K seeds in one vmapped run (master seed 0) and asserts that the mean of a
per-seed score is at least a threshold. This script trains the same configuration on N = 8K
seeds from another master seed, in one run, and prints per case: the per-seed mean, standard
deviation and minimum, the spread of the K-seed means of the N/K disjoint groups, and the
threshold's margin below the mean in standard errors of a K-seed mean (sd / sqrt(K)). A
threshold about 4 standard errors below the mean fails a real regression and passes luck:

    python bench/calibrate_learning_tests.py [CASE ...] | tee docs/benchmark_results/learning-tests.txt

Cases are named RECIPE/TEST (``--list`` prints them); the configurations are those of
tests/test_recipe_*.py, kept equal by hand (the tests cite this file).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from pgkit import experiment


def last_updates(n):
    return lambda result: result.metrics["episode_return"][:, -n:].mean(axis=1)


def completed_in_last(fraction):
    """The mean return of the episodes completed in the last ``fraction`` of the updates (per seed)."""

    def score(result):
        returns, episodes = result.metrics["episode_return"], result.metrics["episodes"]
        k = max(1, int(returns.shape[1] * fraction))
        return (returns[:, -k:] * episodes[:, -k:]).sum(axis=1) / np.maximum(episodes[:, -k:].sum(axis=1), 1)

    return score


def greedy(episodes):
    """The mean return of each seed's final greedy policy over ``episodes`` episodes (experiment.evaluate)."""
    return lambda result: experiment.evaluate(result.run_dir, episodes=episodes, log=None).mean(axis=1)


def pendulum_trpo():
    from pgkit.recipes import trpo

    return dict(trpo.PENDULUM_CONFIG), trpo.PENDULUM_HPARAMS


OFFPOLICY_PENDULUM = {"total_steps": 20_000, "learning_starts": 1_000, "batch_size": 64, "buffer_size": 20_000,
                      "hidden_sizes": (64, 64)}

# CartPole-v1 without its velocities (tests/test_recipe_recurrent.py): a GRU policy, and the MLP on the same budget
GRU_CARTPOLE = {"total_steps": 500_000, "num_envs": 16, "num_steps": 64, "minibatches": 4, "policy": "gru",
                "cell_size": 32, "hidden_sizes": (32,), "normalize_observations": True}
MLP_CARTPOLE = {k: v for k, v in GRU_CARTPOLE.items() if k not in ("policy", "cell_size", "hidden_sizes")}

# Breakout-MinAtar (tests/test_recipe_cnn.py): the convolutional torso against the MLP at equal steps
BREAKOUT = {"total_steps": 100_000, "num_envs": 16, "num_steps": 64}

# name: (recipe, env, config and hparams (or a function giving them), seeds K, threshold, score)
CASES = {
    "a2c/learns_cartpole": ("a2c", "CartPole-v1", ({}, {}), 4, 450.0, last_updates(50)),
    "ppo/standard_cartpole": ("ppo", "CartPole-v1", ({}, {}), 8, 475.0, last_updates(1)),
    "ppo/adaptive_kl": ("ppo", "CartPole-v1", ({"objective": "adaptive_kl", "total_steps": 250_000}, {}), 4, 250.0,
                        last_updates(49)),
    "ppo/pendulum_preset": ("ppo", "Pendulum-v1", ({}, {}), 4, -250.0, last_updates(10)),  # the preset applies
    "td3/mcc_preset": ("td3", "MountainCarContinuous-v0", ({}, {}), 4, 80.0, greedy(10)),  # the preset
    "ppo/gru_cartpole_observe_0_2": ("ppo", "CartPole-v1[0,2]", (GRU_CARTPOLE, {"lr": 1e-3}), 4, 400.0,
                                     last_updates(5)),
    "ppo/mlp_cartpole_observe_0_2": ("ppo", "CartPole-v1[0,2]", (MLP_CARTPOLE, {"lr": 1e-3}), 4, 250.0,
                                     last_updates(5)),  # an upper bound: the MLP must stay below it
    "ppo/cnn_breakout": ("ppo", "Breakout-MinAtar", (dict(BREAKOUT, torso="cnn"), {}), 4, 3.0, last_updates(10)),
    "ppo/mlp_breakout": ("ppo", "Breakout-MinAtar", (dict(BREAKOUT, torso="mlp"), {}), 4, 3.0,
                         last_updates(10)),  # an upper bound: the MLP must stay below the CNN
    "trpo/pendulum": ("trpo", "Pendulum-v1", pendulum_trpo, 4, -400.0, last_updates(5)),
    "ddpg/pendulum": ("ddpg", "Pendulum-v1", (OFFPOLICY_PENDULUM, {}), 4, -300.0, last_updates(2_000)),
    "actor_critic/td_lambda": ("actor_critic", "CartPole-v1", ({"variant": "td_lambda"}, {"critic_lr": 1e-3}), 4,
                               200.0, completed_in_last(0.05)),
    "actor_critic/qac": ("actor_critic", "CartPole-v1",
                         ({"variant": "qac", "optimizer": "sgd", "total_steps": 80_000},
                          {"lr": 3e-3, "critic_lr": 0.03, "ent_coef": 0.01}), 4, 35.0, completed_in_last(0.05)),
    "actor_critic/qac_expected": ("actor_critic", "CartPole-v1",
                                  ({"variant": "qac", "qac_baseline": "expected", "optimizer": "sgd"},
                                   {"lr": 1e-2, "critic_lr": 0.1}), 4, 200.0, completed_in_last(0.05)),
    "a3c/vtrace_stale_cartpole": ("a3c", "CartPole-v1", ({"correction": "vtrace", "total_steps": 200_000}, {}), 4,
                                  450.0, last_updates(200)),
    "lagged_vtrace/lag16": ("examples/lagged_vtrace.py", "CartPole-v1", ({"lag": 16}, {}), 4, 350.0, last_updates(20)),
}


def calibrate(name, master_seed, groups):
    recipe, env, settings, k, threshold, score = CASES[name]
    config, hparams = settings() if callable(settings) else settings
    n = groups * k
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        result = experiment.train(recipe, env=env, seeds=n, seed=master_seed, config=config, hparams=hparams,
                                  log=None, out=Path(out) / "run")
        seconds = time.perf_counter() - start
        scores = np.asarray(score(result), np.float64)
    mean, sd = scores.mean(), scores.std(ddof=1)
    means = np.sort(scores.reshape(groups, k).mean(axis=1))
    se = sd / np.sqrt(k)
    margin = (mean - threshold) / se if se > 0 else float("inf")
    print(
        f"{name}: {n} seeds (master seed {master_seed}) in {seconds:.0f} s: per seed mean {mean:.1f}, "
        f"sd {sd:.1f}, min {scores.min():.1f}; {k}-seed means {np.round(means, 1).tolist()}; "
        f"threshold {threshold:g} is {margin:.1f} standard errors ({se:.1f}) below the mean; "
        f"mean - 4 se = {mean - 4 * se:.1f}",
        flush=True,
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cases", nargs="*", help="RECIPE/TEST names (default: all)")
    parser.add_argument("--master-seed", type=int, default=1, help="the tests use 0")
    parser.add_argument("--groups", type=int, default=8, help="seeds = groups x the test's seeds")
    parser.add_argument("--list", action="store_true")
    args = parser.parse_args()
    if args.list:
        print("\n".join(CASES))
        return
    for name in args.cases or CASES:
        if name not in CASES:
            parser.error(f"unknown case {name!r}; choose from {', '.join(CASES)}")
        calibrate(name, args.master_seed, args.groups)


if __name__ == "__main__":
    main()
