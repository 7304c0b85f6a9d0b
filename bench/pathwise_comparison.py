"""Pathwise against score-function policy gradients: SHAC, APG, SAC and PPO on differentiable envs.

Trains each (recipe, environment) of ``RUNS`` with ``--seeds`` seeds as one compiled program and
records, after every chunk, the environment steps per seed, the wall time since the ``train``
call began (compilation included) and the seeds' mean latest completed-episode return. Writes
``OUT/pathwise.json`` (the curves), ``OUT/pathwise.png`` (return against environment steps and
against wall time, one row per environment) and prints a table: final return (mean and sd over
seeds of the last 5 updates), environment steps, wall time, and the environment steps at which the
seeds' mean return, averaged over a trailing window of 1,000 steps, first reaches the threshold.

    python bench/pathwise_comparison.py --out docs/benchmark_results/pathwise     # about 10 minutes on 2 cores
    python bench/pathwise_comparison.py --only shac/Pendulum-v1 --seeds 8

Results and the configurations' history: docs/recipes/shac.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from pgkit import experiment

# (recipe, env, config, hparams); SAC and PPO run with their presets for the environment, if any
RUNS = [
    ("shac", "Pendulum-v1", {}, {}),  # its defaults: 8 environments x 16 steps, 1e5 steps
    ("apg", "Pendulum-v1", dict(total_steps=100_000, num_envs=8, horizon=16), {}),
    ("sac", "Pendulum-v1", {}, {}),
    ("ppo", "Pendulum-v1", {}, {}),
    ("shac", "Reacher-misc", {}, {}),
    ("apg", "Reacher-misc", dict(total_steps=100_000, num_envs=8, horizon=16), {}),
    # no SAC preset for Reacher-misc: its Pendulum-v1 preset's settings
    ("sac", "Reacher-misc", dict(total_steps=30_000, learning_starts=1_000, batch_size=64, buffer_size=30_000,
                                 hidden_sizes=(64, 64)), {}),
    ("ppo", "Reacher-misc", {}, {}),
]
THRESHOLDS = {"Pendulum-v1": -250.0, "Reacher-misc": 25.0}
WINDOW = 1_000  # environment steps of the trailing average for the threshold


def steps_to_threshold(steps: np.ndarray, returns: np.ndarray, threshold: float, window: int = WINDOW):
    """The first of ``steps`` (increasing) at which the mean of ``returns`` over the trailing ``window``
    steps reaches ``threshold``; None if it never does."""
    total = np.concatenate([[0.0], np.cumsum(returns)])
    first = np.searchsorted(steps, steps - window, side="right")  # the window (step - window, step]
    index = np.arange(len(steps))
    means = (total[index + 1] - total[first]) / (index + 1 - first)
    hit = np.flatnonzero(means >= threshold)
    return int(steps[hit[0]]) if hit.size else None


def run_one(recipe: str, env: str, config: dict, hparams: dict, seeds: int, seed: int) -> dict:
    """One (recipe, env) with ``seeds`` seeds: per-update steps, wall seconds and the seeds' mean return."""
    steps, seconds, returns = [], [], []

    def record(chunk):
        now = time.perf_counter() - start
        values = chunk.metrics["episode_return"]  # [M, L]
        # until a seed's first episode ends its latest return is the recipes' initial 0 (no return of
        # these environments is exactly 0): the curve starts once every seed has one
        ended = np.maximum.accumulate(np.all(values != 0, axis=0)) | bool(steps)
        values = values[:, ended]
        steps.extend(int(s) for s in np.asarray(chunk.env_steps)[ended])
        returns.extend(np.nanmean(values, axis=0).tolist())
        seconds.extend([now] * values.shape[1])  # the chunk's updates end together on the host

    start = time.perf_counter()
    result = experiment.train(recipe, env=env, seeds=seeds, seed=seed, config=config, hparams=hparams, log=None,
                              on_chunk=record)
    final = result.metrics["episode_return"][:, -5:].mean(axis=1)
    row = {
        "recipe": recipe, "env": env, "config": config, "hparams": hparams, "seeds": seeds, "seed": seed,
        "steps": steps, "seconds": seconds, "returns": returns, "final": final.tolist(),
        "wall_seconds": time.perf_counter() - start,
    }
    return thin(row)


def thin(row: dict, points: int = 400) -> dict:
    """``row`` with its threshold step (``"reached"``) taken from the whole curve, then the curve
    kept at about ``points`` evenly spaced updates (SAC's has one per environment step)."""
    steps, returns = np.asarray(row["steps"]), np.asarray(row["returns"])
    reached = steps_to_threshold(steps, returns, THRESHOLDS[row["env"]])
    seconds = None if reached is None else row["seconds"][int(np.searchsorted(steps, reached))]
    row = dict(row, reached=reached, reached_seconds=seconds)
    keep = np.unique(np.linspace(0, len(steps) - 1, min(points, len(steps))).astype(int))
    return dict(row, **{name: np.asarray(row[name])[keep].tolist() for name in ("steps", "seconds", "returns")})


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    envs = list(dict.fromkeys(row["env"] for row in rows))
    fig, axes = plt.subplots(len(envs), 2, figsize=(11, 3.6 * len(envs)), squeeze=False)
    for r, env in enumerate(envs):
        for row in (row for row in rows if row["env"] == env):
            label = f"{row['recipe']} ({row['seeds']} seeds)"
            axes[r, 0].plot(row["steps"], row["returns"], label=label)
            # a chunk's updates all reach the host together: one point per chunk, its last update
            seconds = np.asarray(row["seconds"])
            ends = np.flatnonzero(np.append(seconds[1:] != seconds[:-1], True))
            axes[r, 1].plot(seconds[ends], np.asarray(row["returns"])[ends], marker=".", label=label)
        axes[r, 0].set_xscale("log")
        for c, xlabel in enumerate(("environment steps per seed", "wall seconds (compilation included)")):
            axes[r, c].axhline(THRESHOLDS[env], color="grey", lw=0.8, ls="--")
            axes[r, c].set_xlabel(xlabel)
            axes[r, c].set_ylabel(f"{env}: mean episode return")
            axes[r, c].grid(alpha=0.3)
        axes[r, 0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def table(rows: list[dict]) -> str:
    lines = ["| recipe | env | env steps per seed | final return, mean (sd) | wall time | threshold | "
             "reached after (steps, wall time) |", "|---|---|---|---|---|---|---|"]
    for row in rows:
        final, reached = np.asarray(row["final"]), row["reached"]
        when = f"{reached:,}, {row['reached_seconds']:.0f} s" if reached is not None else "not reached"
        lines.append(
            f"| {row['recipe']} | {row['env']} | {max(row['steps']):,} | {final.mean():.1f} ({final.std(ddof=1):.1f}) "
            f"| {row['wall_seconds']:.0f} s | {THRESHOLDS[row['env']]:g} | {when} |"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--seed", type=int, default=1, help="master seed")
    parser.add_argument("--only", action="append", help="RECIPE/ENV (repeatable); default: every run")
    parser.add_argument("--out", type=Path, default=Path("bench/results/pathwise"))
    parser.add_argument("--from-json", type=Path, help="re-print the table and re-plot a saved pathwise.json; run nothing")
    args = parser.parse_args(argv)
    if args.from_json:
        return write(json.loads(args.from_json.read_text()), args.out)
    names = [f"{recipe}/{env}" for recipe, env, _, _ in RUNS]
    unknown = [name for name in args.only or [] if name not in names]
    if unknown:
        parser.error(f"option '--only': unknown run {unknown[0]!r}; available: {', '.join(names)}")
    if args.seeds < 2:
        parser.error(f"option '--seeds' must be >= 2 (a standard deviation is reported), got {args.seeds}")
    chosen = [run for run, name in zip(RUNS, names) if not args.only or name in args.only]
    experiment.use_cpu_cores()
    rows = []
    for recipe, env, config, hparams in chosen:
        print(f"{recipe} on {env} ...", flush=True)
        rows.append(run_one(recipe, env, config, hparams, args.seeds, args.seed))
        print(f"  final {np.mean(rows[-1]['final']):.1f} in {rows[-1]['wall_seconds']:.0f} s", flush=True)
    return write(rows, args.out)


def write(rows: list[dict], out: Path) -> int:
    out.mkdir(parents=True, exist_ok=True)
    (out / "pathwise.json").write_text(json.dumps(rows))
    plot(rows, out / "pathwise.png")
    print(table(rows))
    print(f"wrote {out / 'pathwise.json'} and {out / 'pathwise.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
