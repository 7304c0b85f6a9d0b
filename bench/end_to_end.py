"""One cold `pgkit train` run timed by phase: imports, compile and init, the chunks, the rest.

What issue 4's single-seed target measures (PPO CartPole-v1, 5e5 steps, compile included):
``compile + run`` is from the start of compiling to the end of the last chunk, as the
``pgkit`` command runs it (devices and XLA threads fitted to the members, compilation cache
off). Run it in a fresh process each time; repeat it to see the machine's noise:

    python bench/end_to_end.py [--recipe ppo] [--env CartPole-v1] [--seeds 1] [--steps N]
"""

from __future__ import annotations

import argparse
import tempfile
import time

T0 = time.perf_counter()

from pgkit import experiment  # noqa: E402  (timed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="ppo")
    parser.add_argument("--env")
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--steps", type=int, help="total_steps (default: the recipe's)")
    args = parser.parse_args()
    experiment.use_cpu_cores(members=args.seeds)
    marks = {}

    def log(line: str) -> None:
        if line.startswith("compiled and initialised in"):
            marks["compiled"] = time.perf_counter()
            marks["compile"] = float(line.split()[-1].rstrip("s"))
        if line.startswith("final return"):
            marks.setdefault("trained", time.perf_counter())

    config = {} if args.steps is None else {"total_steps": args.steps}
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        result = experiment.train(args.recipe, env=args.env, seeds=args.seeds, config=config, out=f"{out}/run", log=log)
    t_end = time.perf_counter()
    run = marks["trained"] - marks["compiled"]
    print(
        f"{args.recipe} {args.env or 'default env'} seeds={args.seeds} xla_threads={experiment.xla_cpu_threads()}: "
        f"imports {t_start - T0:.2f} s, compile and init {marks['compile']:.1f} s, run {run:.2f} s, "
        f"compile + run {marks['compile'] + run:.2f} s, train() {t_end - t_start:.2f} s, process {t_end - T0:.2f} s; "
        f"final return {result.metrics['episode_return'][:, -1].mean():.1f}"
    )


if __name__ == "__main__":
    main()
