"""``pgkit`` command line: train, resume, plot, eval, list.

    pgkit train ppo --env CartPole-v1 --seeds 8 --steps 500000 --set clip_eps=0.1 \\
        --sweep lr=1e-4,3e-4,1e-3 --out runs/x
    pgkit train ./my_algo.py --seeds 2 --out runs/mine    # any module following pgkit.recipe
    pgkit train mypkg.my_algo --seeds 2                   # ... by its dotted module path
    pgkit resume runs/x
    pgkit train ppo --out runs/y --log tensorboard --log wandb   # also stream the metrics
    pgkit plot runs/x runs/y --out overlay.png
    pgkit eval runs/x --episodes 10
    pgkit list [RECIPE]

Bad input gets one line naming the option and what is allowed, and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import warnings
from pathlib import Path

from pgkit import experiment
from pgkit.experiment import loggers, presets
from pgkit.experiment.registry import recipe_name
from pgkit.recipe import ConfigError, describe, options_of, parse_option

EXIT_USAGE = 2


def _warning_line(message, category, filename, lineno, file=None, line=None):
    """pgkit's own warnings (a damaged checkpoint set aside, ...) as one line, no source excerpt."""
    if not filename.startswith(str(Path(__file__).parent)):
        return _default_showwarning(message, category, filename, lineno, file, line)
    print(f"pgkit: warning: {message}", file=sys.stderr if file is None else file)


_default_showwarning = warnings.showwarning


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, no usage block
        raise ConfigError(message)


def _split_assignment(text: str, flag: str) -> tuple[str, str]:
    if "=" not in text:
        raise ConfigError(f"{flag} expects NAME=VALUE, got {text!r}")
    name, value = text.split("=", 1)
    return name.strip(), value.strip()


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``pgkit`` command (its errors raise ConfigError: one line)."""
    parser = _Parser(prog="pgkit", description="Policy-gradient RL in JAX: train, resume, plot, eval, list.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    train = sub.add_parser("train", help="train a recipe over seeds x a hyperparameter grid")
    train.add_argument("recipe", help="recipe: a built-in name (see 'pgkit list'), a .py file or a dotted module path")
    train.add_argument("--env", help="gymnax environment (default: the recipe's)")
    train.add_argument(
        "--observe", metavar="I,J,...",
        help="keep only these components of the flattened observation (a partially observed task: "
        "CartPole-v1 with 0,2 has no velocities); the run's environment becomes NAME[I,J,...]",
    )
    train.add_argument("--seeds", type=int, default=8, help="seeds per setting (default 8)")
    train.add_argument("--seed", type=int, default=0, help="master seed (default 0)")
    train.add_argument("--steps", type=int, help="environment steps per seed (the recipe's total_steps)")
    train.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="set an option")
    train.add_argument(
        "--no-preset", action="store_true",
        help="train with the recipe's defaults, not its preset for the environment (see 'pgkit list RECIPE')",
    )
    train.add_argument(
        "--sweep", action="append", default=[], metavar="NAME=V1,V2", help="sweep a float hyperparameter"
    )
    train.add_argument("--out", help="run directory (default runs/RECIPE-ENV-TIME)")
    train.add_argument("--chunk", type=int, help="updates per compiled chunk (default: ~20 chunks)")
    train.add_argument(
        "--halt-on-nonfinite", action="store_true",
        help="stop the whole run when any metric becomes NaN or infinite (default: freeze the diverging "
        "member at its last finite state, mark it diverged and go on)",
    )
    train.add_argument(
        "--threads", type=int,
        help="threads of XLA's CPU pool (default: one per device; a single seed of wide networks runs faster "
        "with one per core)",
    )

    resume = sub.add_parser("resume", help="continue an interrupted run")
    resume.add_argument("run_dir")
    resume.add_argument("--recipe", help="where the recipe is now, if it has moved since training (file or module)")
    for command in (train, resume):
        group = command.add_argument_group(
            "multi-process runs", "run as one of N processes (docs/distributed.md); under SLURM or Open MPI JAX "
            "reads these itself"
        )
        group.add_argument("--coordinator", metavar="HOST:PORT", help="where process 0 listens (the same in all)")
        group.add_argument("--num-processes", type=int, metavar="N", help="how many processes run together")
        group.add_argument("--process-id", type=int, metavar="I", help="this process: 0 to N-1")
        group.add_argument(
            "--peer-timeout", type=float, default=60.0, metavar="SECONDS",
            help="how long to wait for the others to connect, and for a silent one (default 60)",
        )
        command.add_argument(
            "--log", action="append", default=[], choices=sorted(loggers.EXTRAS),
            help="also stream the metrics to TensorBoard (RUN/tensorboard/LABEL/seedK) or W&B (one run per member, "
            "grouped by setting; offline with WANDB_MODE=offline); repeatable; needs pgkit[tensorboard] or pgkit[wandb]",
        )

    plot = sub.add_parser("plot", help="overlay learning curves of runs")
    plot.add_argument("run_dirs", nargs="+")
    plot.add_argument("--out", help="PNG path (default: RUN/learning_curve.png, or overlay.png)")
    plot.add_argument("--metric", default="episode_return")

    evaluate = sub.add_parser("eval", help="evaluate the final policies of a run")
    evaluate.add_argument("run_dir")
    evaluate.add_argument("--episodes", type=int, default=10)
    evaluate.add_argument("--seed", type=int, default=0)
    evaluate.add_argument("--recipe", help="where the recipe is now, if it has moved since training (file or module)")

    zoo = sub.add_parser("zoo", help="train every preset and write zoo.md with learning curves (pgkit.experiment.zoo)")
    zoo.add_argument("--out", default="zoo", help="folder for zoo.md and zoo/*.png (default ./zoo; the docs: --out docs)")
    zoo.add_argument("--runs", default="runs/zoo", help="folder for the run directories (default runs/zoo)")
    zoo.add_argument("--quick", action="store_true", help="2 seeds x 2 updates per preset: a check that each runs")
    zoo.add_argument("--seeds", type=int, help="seeds per preset (default 8; 2 with --quick)")
    zoo.add_argument("--only", action="append", metavar="RECIPE/ENV", help="train only this preset; repeatable")

    listing = sub.add_parser("list", help="recipes, environments and each recipe's options")
    listing.add_argument("recipe", nargs="?", help="a built-in name, a .py file or a dotted module path")
    return parser


def _train(args) -> None:
    from pgkit import brax_envs, envs

    module = experiment.load_recipe(args.recipe)
    env = args.env or module.DEFAULT_ENV
    try:
        base, named = envs.split_observed_name(env)
    except ValueError as error:
        raise ConfigError(f"option '--env': {error}") from None
    if base not in envs.available_envs():
        raise ConfigError(f"unknown environment {base!r}; available: {', '.join(envs.available_envs())}")
    if base in brax_envs.registered_envs:  # an optional dependency
        try:
            brax_envs.require(base)
        except ImportError as error:
            raise ConfigError(f"option '--env': {error}") from None
    if args.observe is not None:
        try:
            observe = [int(part) for part in args.observe.split(",")]
        except ValueError:
            raise ConfigError(f"option '--observe' expects comma-separated integers, got {args.observe!r}") from None
        if named is not None and tuple(observe) != named:
            raise ConfigError(f"option '--observe' {args.observe} contradicts --env {env}")
        env = envs.observed_name(base, observe)
    if env != base:  # the indices, checked against the environment's observation before anything runs
        try:
            envs.make(env, num_envs=1)
        except ValueError as error:
            raise ConfigError(f"option '--observe': {error}") from None
    config, hparams, sweep = {}, {}, {}
    if args.steps is not None:
        config["total_steps"] = parse_option(module.Config, "total_steps", str(args.steps))
    config_fields = options_of(module.Config)
    hparam_fields = options_of(module.HParams)
    name = recipe_name(module)
    for text in args.set:
        option_name, value = _split_assignment(text, "--set")
        if option_name in config_fields:
            config[option_name] = parse_option(module.Config, option_name, value)
        elif option_name in hparam_fields:
            hparams[option_name] = parse_option(module.HParams, option_name, value)
        else:
            raise ConfigError(
                f"unknown option {option_name!r} for recipe {name!r}; available: "
                f"{', '.join([*config_fields, *hparam_fields])}"
            )
    for text in args.sweep:
        option_name, values = _split_assignment(text, "--sweep")
        if option_name not in hparam_fields:
            raise ConfigError(
                f"cannot sweep {option_name!r}: only float hyperparameters can be swept "
                f"({', '.join(hparam_fields)})"
            )
        sweep[option_name] = [parse_option(module.HParams, option_name, v) for v in values.split(",") if v]
    for key, value in (("seeds", args.seeds), ("chunk", args.chunk)):
        if value is not None and value < 1:
            raise ConfigError(f"option '--{key}' must be >= 1, got {value}")
    out = args.out or f"runs/{name}-{env}-{time.strftime('%Y%m%d-%H%M%S')}"
    experiment.train(
        module,
        env=env,
        seeds=args.seeds,
        seed=args.seed,
        config=config,
        hparams=hparams,
        sweep=sweep,
        out=out,
        chunk=args.chunk,
        halt_on_nonfinite=args.halt_on_nonfinite,
        on_chunk=_loggers(args),
        preset=not args.no_preset,
    )


def _loggers(args) -> list:
    """The ``on_chunk`` callbacks ``--log`` names (a ConfigError naming the extra if one is not installed)."""
    factories = {"tensorboard": loggers.tensorboard, "wandb": loggers.wandb}
    return [factories[name]() for name in dict.fromkeys(args.log)]


def _plot(args) -> None:
    from pgkit import plot

    for run_dir in args.run_dirs:
        if not (Path(run_dir) / "metrics.csv").exists():
            raise ConfigError(f"run directory {run_dir!r} not found or holds no metrics.csv")
    out = args.out or (
        str(Path(args.run_dirs[0]) / "learning_curve.png") if len(args.run_dirs) == 1 else "overlay.png"
    )
    columns = plot.read_metrics(args.run_dirs[0])
    if args.metric not in columns:
        raise ConfigError(f"unknown metric {args.metric!r}; available: {', '.join(sorted(columns))}")
    print(plot.plot_runs(args.run_dirs, out, metric=args.metric))


def _list(args) -> None:
    from pgkit import envs

    names = [args.recipe] if args.recipe else experiment.available_recipes()
    if not args.recipe:
        print("recipes: " + ", ".join(names) + " (or your own: a .py file or a dotted module path)")
        print("environments: " + ", ".join(envs.available_envs()))
        for env, reason in presets.environments_without_preset().items():
            print(f"  no preset for {env}: {reason}")
    for recipe in names:
        module = experiment.load_recipe(recipe)
        description = getattr(module, "DESCRIPTION", None) or (module.__doc__ or "").strip().partition("\n")[0]
        name = recipe_name(module)
        print(f"\n{name}: {description} (default env {module.DEFAULT_ENV})")
        tuned = presets.presets_of(module)
        print("  presets (applied with --env ENV; --no-preset for the defaults): " + (", ".join(tuned) or "none"))
        if args.recipe:
            for env, preset in tuned.items():
                print(f"    {env}: " + ", ".join(f"{k}={v}" for k, v in preset.options.items()))
        for title, cls in (("static options (--set)", module.Config), ("hyperparameters (--set, --sweep)", module.HParams)):
            print(f"  {title}:")
            for field_name, field in options_of(cls).items():
                allowed = describe(field)
                print(f"    {field_name} = {field.default!r}  ({allowed})  {field.metadata['help']}")


def cpu_layout(args) -> tuple[int | None, int | None]:
    """(members, XLA CPU threads) of the command, read before JAX starts (None: unknown or default).

    A resumed run or an evaluation gets the thread count its run was trained with (config.json).
    """
    if args.command == "train":
        if args.threads is not None and args.threads < 1:
            raise ConfigError(f"option '--threads' must be >= 1, got {args.threads}")
        settings = math.prod(max(1, len([v for v in text.partition("=")[2].split(",") if v])) for text in args.sweep)
        return max(1, args.seeds) * settings, args.threads
    if args.command in ("resume", "eval"):
        try:
            spec = json.loads((Path(args.run_dir) / "config.json").read_text())
            settings = math.prod(max(1, len(values)) for values in spec["sweep"].values())
            threads = spec.get("xla_cpu_threads")
            return max(1, int(spec["seeds"])) * settings, threads if isinstance(threads, int) and threads > 0 else None
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None, None  # the command reports the bad run directory itself
    if args.command == "zoo":
        return max(1, args.seeds or (2 if args.quick else 8)), None
    return None, None


def main(argv=None) -> int:
    with warnings.catch_warnings():  # restored on return: a test or a notebook keeps its own
        warnings.showwarning = _warning_line
        status = _main(argv)
    if status and experiment.distributed.joined():
        # a peer may be gone: JAX's shutdown would wait for it, then abort with a stack dump
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
    return status


def _main(argv) -> int:
    experiment.use_compilation_cache()  # a repeated configuration skips compiling
    try:
        args = build_parser().parse_args(argv)
        # one JAX CPU device per core that the members can fill, members sharded over them
        members, threads = cpu_layout(args)
        if args.command in ("train", "resume"):
            processes = experiment.distributed.initialize(
                args.coordinator, args.num_processes, args.process_id, timeout=args.peer_timeout
            )
            if members is not None:  # each process holds its share of the members
                members = max(1, members // processes)
        experiment.use_cpu_cores(members=members, threads=threads)
        if args.command == "train":
            _train(args)
        elif args.command == "resume":
            experiment.resume(args.run_dir, recipe=args.recipe, on_chunk=_loggers(args))
        elif args.command == "plot":
            _plot(args)
        elif args.command == "eval":
            experiment.evaluate(args.run_dir, episodes=args.episodes, seed=args.seed, recipe=args.recipe)
        elif args.command == "list":
            _list(args)
        elif args.command == "zoo":
            from pgkit.experiment import zoo

            zoo.zoo(args.out, runs=args.runs, quick=args.quick, seeds=args.seeds, only=args.only)
    except ConfigError as error:
        print(f"pgkit: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except experiment.NonFiniteError as error:
        print(f"pgkit: training stopped: {error}", file=sys.stderr)
        return 1
    except experiment.WriteError as error:
        print(f"pgkit: error: {error}", file=sys.stderr)
        return 1
    except experiment.Interrupted as interrupted:  # the run said what it kept and how to go on
        return 128 + interrupted.signum
    except experiment.PeerLostError as error:
        print(f"pgkit: error: {error}", file=sys.stderr)
        return experiment.distributed.EXIT_LOST_PEER
    except RuntimeError as error:
        from pgkit import envs  # imported lazily, as above: gymnax takes a second to import

        if not isinstance(error, envs.EnvUnavailableError):
            raise
        print(f"pgkit: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("pgkit: interrupted; the last checkpoint is kept (pgkit resume RUN_DIR)", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
