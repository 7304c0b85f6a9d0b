"""A3C under growing staleness, with and without V-trace: final return and learning curves.

Trains the a3c recipe on CartPole-v1 at its defaults (4 actors x 8 envs x 8 steps, round-robin
``staleness=fixed``) for every ``correction`` in (none, vtrace) and ``max_staleness`` in
STALENESS, SEEDS seeds each (master seed 0), prints one table row per setting and writes the
plot docs/recipes/a3c/staleness.png (final return against staleness, and the learning curves):

    python bench/a3c_staleness.py [--steps 300000] [--seeds 8] [--plot docs/recipes/a3c/staleness.png]

Score per seed: the mean episode_return over the last 10% of the updates; the table gives the mean
over seeds with a 95% interval (t distribution) and each seed's score.
"""

from __future__ import annotations

import argparse
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from scipy import stats  # noqa: E402

from pgkit import experiment  # noqa: E402

STALENESS = (0, 4, 16, 64)
CORRECTIONS = ("none", "vtrace")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300_000)
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--plot", default="docs/recipes/a3c/staleness.png")
    args = parser.parse_args()
    finals, curves = {}, {}
    print("| correction | max_staleness | final return, mean [95% interval] | per seed | time |")
    print("|---|---|---|---|---|")
    for correction in CORRECTIONS:
        for s in STALENESS:
            start = time.perf_counter()
            config = {"correction": correction, "max_staleness": s, "total_steps": args.steps}
            result = experiment.train("a3c", env="CartPole-v1", seeds=args.seeds, seed=0, config=config, log=None,
                                      preset=False)
            seconds = time.perf_counter() - start
            returns = result.metrics["episode_return"]
            last = returns[:, -max(1, returns.shape[1] // 10):].mean(axis=1)
            half = stats.t.ppf(0.975, len(last) - 1) * last.std(ddof=1) / np.sqrt(len(last))
            finals[correction, s], curves[correction, s] = last, returns
            print(f"| {correction} | {s} | {last.mean():.1f} [{last.mean() - half:.1f}, {last.mean() + half:.1f}] | "
                  f"{', '.join(f'{x:.0f}' for x in last)} | {seconds:.0f} s |", flush=True)
    plot(finals, curves, args.steps, args.plot)
    print(f"plot: {args.plot}")


def plot(finals, curves, steps, path):
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for correction, colour in zip(CORRECTIONS, ("tab:red", "tab:blue")):
        means = [finals[correction, s].mean() for s in STALENESS]
        for i, s in enumerate(STALENESS):
            left.scatter([i] * len(finals[correction, s]), finals[correction, s], color=colour, alpha=0.3, s=12)
        left.plot(range(len(STALENESS)), means, "o-", color=colour, label=f"correction={correction}")
    left.set_xticks(range(len(STALENESS)), [str(s) for s in STALENESS])
    left.set_xlabel("max_staleness (updates between acting and learning parameters)")
    left.set_ylabel("final return (last 10% of updates)")
    left.set_title("CartPole-v1, a3c: final return per seed and mean")
    left.legend()
    for (correction, s), returns in curves.items():
        x = np.linspace(0, steps, returns.shape[1])
        style = "-" if correction == "vtrace" else "--"
        shade = 0.35 + 0.65 * STALENESS.index(s) / (len(STALENESS) - 1)
        colour = plt.cm.Blues(shade) if correction == "vtrace" else plt.cm.Reds(shade)
        window = max(1, returns.shape[1] // 100)  # a moving average over 1% of the run
        smooth = np.convolve(returns.mean(axis=0), np.ones(window) / window, mode="valid")
        right.plot(x[window - 1:], smooth, style, color=colour, label=f"{correction}, {s}")
    right.set_xlabel("environment steps per seed")
    right.set_ylabel("return, seed mean, moving average")
    right.set_title("learning curves (dashed: none, solid: vtrace)")
    right.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
