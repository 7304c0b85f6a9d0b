"""The run loop: seeds x hyperparameter grid as one compiled program, run in chunks.

The driver builds ``jit(vmap(scan(update, K)))`` once per (recipe, config, environment, K),
vmapped over members = settings x seeds (member ``g * seeds + s`` runs setting ``g`` with the
key of seed ``s``), and calls it chunk after chunk. Between chunks it prints a progress line,
appends metrics to ``metrics.csv`` (so device memory stays bounded), and writes a checkpoint;
the PRNG key lives in the state, so a resumed run continues the same key stream and is
bit-identical to an uninterrupted one. Members are sharded over ``jax.devices()``.

A recipe is any module that follows :mod:`pgkit.recipe`; the driver knows it only through that
protocol (a built-in name, a file path or a dotted path is resolved by :mod:`.registry`).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import itertools
import math
import os
import time
import types
import warnings
from pathlib import Path
from typing import Any, Callable, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

import pgkit
from pgkit import plot, stats
from pgkit.experiment import devices, registry, store
from pgkit.recipe import ConfigError, options_of, validate

__all__ = [
    "NonFiniteError",
    "RunResult",
    "Run",
    "programs",
    "chunk_length",
    "start_members",
    "check_finite",
    "train",
    "resume",
]


class NonFiniteError(FloatingPointError):
    """A metric became NaN or infinite during training."""


class RunResult(NamedTuple):
    """What :func:`train` returns: final state ``[M, ...]``, metrics ``{name: [M, U]}``."""

    state: Any
    metrics: dict
    run_dir: Path | None
    summary: list


def _settings(base, sweep: dict[str, list[float]]) -> list:
    """The cartesian product of ``sweep`` over ``base`` hyperparameters, in sweep order."""
    fields = options_of(type(base))
    for name, values in sweep.items():
        if name not in fields:
            raise ConfigError(f"cannot sweep {name!r}: not a hyperparameter; available: {', '.join(fields)}")
        if not values:
            raise ConfigError(f"sweep of {name!r} needs at least one value")
    names = list(sweep)
    settings = []
    for combo in itertools.product(*(sweep[n] for n in names)):
        setting = dataclasses.replace(base, **dict(zip(names, combo)))
        validate(setting)
        settings.append(setting)
    return settings


def _label(setting, sweep) -> str:
    return ", ".join(f"{n}={getattr(setting, n):g}" for n in sweep) or "default"


@functools.lru_cache(maxsize=32)
def programs(recipe_module: types.ModuleType, config, env_name: str, chunk: int):
    """``(recipe, init, chunk_fn)``: the jitted programs the driver runs, once per (recipe, config, env, chunk).

    ``init = jit(vmap(recipe.init))`` over members; ``chunk_fn = jit(vmap(scan(recipe.update,
    chunk)))``, which donates its state. Turns on :func:`devices.use_unrolled_threefry` first.
    """
    devices.use_unrolled_threefry()  # same random numbers, faster compiles
    recipe = recipe_module.make(config, env_name)

    def run_chunk(state, hparams):
        return jax.lax.scan(lambda s, _: recipe.update(s, hparams), state, None, length=chunk)

    def strongly_typed_init(key, hparams):  # a restored checkpoint has no weak types: same program
        state = recipe.init(key, hparams)
        return jax.tree.map(lambda x: jax.lax.convert_element_type(x, x.dtype) if eqx.is_array(x) else x, state)

    init = jax.jit(jax.vmap(strongly_typed_init))
    chunk_fn = jax.jit(jax.vmap(run_chunk), donate_argnums=0)
    return recipe, init, chunk_fn


def chunk_length(num_updates: int, requested: int | None) -> int:
    if requested is not None:
        if requested < 1:
            raise ConfigError(f"option 'chunk' must be >= 1, got {requested}")
        return min(requested, num_updates)
    # about 20 progress lines, with a chunk that divides the run (no second compilation)
    target = max(1, num_updates // 20)
    divisors = [k for k in range(max(1, (target + 1) // 2), 2 * target + 1) if num_updates % k == 0]
    return min(divisors, key=lambda k: abs(math.log(k / target))) if divisors else target


class Run:
    """Everything one run needs, rebuilt identically from ``config.json`` on resume."""

    def __init__(self, spec: dict, run_dir: Path | None, log: Callable[[str], None], recipe=None):
        """``recipe`` (a module, name or path) overrides where ``spec`` says the recipe came from."""
        self.spec, self.run_dir, self.log = spec, run_dir, log
        if recipe is not None:
            module = registry.load_recipe(recipe)
        else:
            # a run written before sources were recorded names a built-in recipe
            source = spec.get("recipe_source") or {"builtin": spec["recipe"]}
            try:
                module = registry.recipe_from_source(source)
            except ConfigError as error:
                raise ConfigError(
                    f"{error}; the run was trained with it: name its new place with --recipe PATH_OR_MODULE "
                    "(recipe= from Python)"
                ) from None
        self.module = module
        config_fields = options_of(self.module.Config)
        self.config = self.module.Config(**{k: _from_json(v) for k, v in spec["config"].items() if k in config_fields})
        validate(self.config)
        self.base = self.module.HParams(**spec["hparams"])
        validate(self.base)
        self.sweep = spec["sweep"]
        self.settings = _settings(self.base, self.sweep)
        self.seeds = spec["seeds"]
        if self.seeds < 1:
            raise ConfigError(f"option 'seeds' must be >= 1, got {self.seeds}")
        probe = self.module.make(self.config, spec["env"])  # validates env and config
        self.num_updates = probe.num_updates
        if self.num_updates < 1:
            raise ConfigError(
                f"the run is shorter than one update ({probe.env_steps_per_update} env steps); raise 'total_steps'"
            )
        self.chunk = chunk_length(self.num_updates, spec.get("chunk"))
        spec["chunk"] = self.chunk
        self.num_members = len(self.settings) * self.seeds

    def member_inputs(self):
        """``(keys, hparams)`` of every member, sharded: member ``g * seeds + s`` = setting g, seed s."""
        seed_keys = jax.random.split(jax.random.PRNGKey(self.spec["seed"]), self.seeds)
        keys = jnp.tile(seed_keys, (len(self.settings), 1))
        hparams = jax.tree.map(
            lambda *xs: jnp.repeat(jnp.asarray(xs, dtype=jnp.float32), self.seeds), *self.settings
        )
        return devices.shard_members((keys, hparams), self.num_members)

    def labels(self) -> list[str]:
        return [_label(setting, self.sweep) for setting in self.settings]

    def functions(self, length: int):
        """``(recipe, init, chunk_fn)`` for chunks of ``length`` updates (see :func:`programs`)."""
        return programs(self.module, self.config, self.spec["env"], length)

    def read_checkpoint(self, template):
        """The checkpointed state of this run, shaped as ``template``."""
        return store.read_checkpoint(
            self.run_dir, template, recipe=self.spec["recipe"],
            written_by=self.spec.get("pgkit_version", "0.1.0"), version=pgkit.__version__,
        )

    def compile_first_chunk(self, keys, member_hparams, start: int) -> tuple[int, concurrent.futures.Future] | None:
        """Start compiling the first chunk's program (see :func:`_compile_in_background`).

        Returns the chunk's length and the future program, or None when no chunk is left to run.
        """
        if start >= self.num_updates:
            return None
        _, init, _ = self.functions(self.chunk)
        length = min(self.chunk, self.num_updates - start)
        return length, _compile_in_background(self.functions(length)[2], init, keys, member_hparams, self.num_members)


def _compile_in_background(chunk_fn, init, keys, member_hparams, num_members: int) -> concurrent.futures.Future:
    """Compile ``chunk_fn`` for the state ``init`` will return, on a thread; returns the future program.

    Lowering needs only the state's shapes (``eval_shape`` of the init) and runs here, on the
    caller's thread (JAX's thread-local settings apply); XLA then compiles it while the caller
    compiles and runs the init, using a second core. The benchmarks time the same path.
    """
    shapes = jax.eval_shape(init, keys, member_hparams)
    sharding = devices.member_sharding(num_members)
    if sharding is not None:
        shapes = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), shapes)
    lowered = chunk_fn.lower(shapes, member_hparams)
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="pgkit-compile")
    future = pool.submit(lowered.compile)
    pool.shutdown(wait=False)
    return future


def start_members(recipe_module, config, env_name: str, chunk: int, hparams, num_members: int, seed: int = 0):
    """The driver's start for ``num_members`` copies of ``hparams`` (seeds ``split(PRNGKey(seed))``).

    Members placed over the devices as the driver places them, the chunk compiled on a thread
    while the init compiles and runs. Returns ``(state, member_hparams, compiled_chunk)``; the
    benchmarks (bench/throughput.py, bench/peers/pgkit_runner.py) time this path.
    """
    _, init, chunk_fn = programs(recipe_module, config, env_name, chunk)
    keys = jax.random.split(jax.random.PRNGKey(seed), num_members)
    member_hparams = jax.tree.map(lambda x: np.full((num_members,), x, np.float32), hparams)
    keys, member_hparams = devices.shard_members((keys, member_hparams), num_members)
    compiling = _compile_in_background(chunk_fn, init, keys, member_hparams, num_members)
    state = jax.block_until_ready(devices.shard_members(init(keys, member_hparams), num_members))
    return state, member_hparams, compiling.result()


def _from_json(value):
    return tuple(value) if isinstance(value, list) else value


def _to_json(value):
    return list(value) if isinstance(value, tuple) else value


def train(
    recipe: str | os.PathLike | types.ModuleType,
    *,
    env: str | None = None,
    seeds: int = 8,
    seed: int = 0,
    config: dict | None = None,
    hparams: dict | None = None,
    sweep: dict[str, list[float]] | None = None,
    out: str | os.PathLike | None = None,
    chunk: int | None = None,
    stop_after_chunks: int | None = None,
    log: Callable[[str], None] | None = print,
) -> RunResult:
    """Train ``seeds`` seeds of every setting of ``sweep`` as one compiled program.

    Args:
      recipe: a module that follows :mod:`pgkit.recipe`, a built-in name
        (``pgkit.experiment.available_recipes()``), a ``.py`` file path or a dotted module path
        (see :func:`pgkit.experiment.load_recipe`). ``config.json`` records where it came from.
      env: gymnax environment name; the recipe's ``DEFAULT_ENV`` if omitted.
      seeds: seeds per setting. ``seed``: the master seed.
      config: static options (the recipe's ``Config`` fields) overriding defaults.
      hparams: float hyperparameters (the recipe's ``HParams`` fields) overriding defaults.
      sweep: ``{hyperparameter: [values]}``; the grid is their cartesian product.
      out: run directory for config, metrics, plot and checkpoints (nothing written if None).
      chunk: updates per compiled chunk (default: about 20 chunks, dividing the run).
      stop_after_chunks: stop early after this many chunks (simulates an interruption).
      log: where progress lines go (``None`` for silence).

    Returns:
      ``RunResult(state, metrics, run_dir, summary)``: final state with a leading member
      axis, ``{metric: [members, updates]}`` host arrays, and per-setting summaries.
    """
    module = registry.load_recipe(recipe)
    name = registry.recipe_name(module)
    config = dict(config or {})
    hparams = dict(hparams or {})
    for given, cls in ((config, module.Config), (hparams, module.HParams)):
        for option_name in given:
            if option_name not in options_of(cls):
                raise ConfigError(
                    f"unknown option {option_name!r} for recipe {name!r}; available: {', '.join(options_of(cls))}"
                )
    base_config = module.Config(**config)
    base_hparams = module.HParams(**hparams)
    spec = {
        "recipe": name,
        "recipe_source": registry.recipe_source(module),
        "env": env or module.DEFAULT_ENV,
        "seeds": int(seeds),
        "seed": int(seed),
        "config": {k: _to_json(v) for k, v in dataclasses.asdict(base_config).items()},
        "hparams": dataclasses.asdict(base_hparams),
        "sweep": {k: [float(v) for v in vs] for k, vs in (sweep or {}).items()},
        "chunk": chunk,
        "jax_version": jax.__version__,
        "pgkit_version": pgkit.__version__,
    }
    run_dir = None
    if out is not None:
        run_dir = Path(out)
        if store.updates_done(run_dir) is not None:
            raise ConfigError(f"run directory {str(run_dir)!r} already holds a run; use 'pgkit resume {run_dir}' or another --out")
    run = Run(spec, run_dir, log or (lambda _: None), module)
    spec["devices"] = devices.devices_used(run.num_members)  # results are reproducible per device count
    spec["xla_cpu_threads"] = devices.xla_cpu_threads()  # and per thread count of XLA's CPU pool (TRPO)
    if run_dir is not None:
        store.write_config(run_dir, spec)
    keys, member_hparams = run.member_inputs()
    _, init, _ = run.functions(run.chunk)
    t_compile = time.perf_counter()
    first_chunk = run.compile_first_chunk(keys, member_hparams, 0)
    state = devices.shard_members(init(keys, member_hparams), run.num_members)
    return _loop(run, state, member_hparams, start=0, metrics=None, stop_after_chunks=stop_after_chunks,
                 first_chunk=first_chunk, t_compile=t_compile)


def resume(
    run_dir,
    *,
    recipe: str | os.PathLike | types.ModuleType | None = None,
    stop_after_chunks: int | None = None,
    log: Callable[[str], None] | None = print,
) -> RunResult:
    """Continue an interrupted run from its last checkpoint (same key stream, same result).

    The recipe is found where ``config.json`` says it came from; pass ``recipe`` (a module, name
    or path, as for :func:`train`) if it has moved since, and ``config.json`` records its new place.
    """
    run_dir = Path(run_dir)
    spec = store.read_config(run_dir)
    run = Run(spec, run_dir, log or (lambda _: None), recipe)
    if recipe is not None:  # the recipe's new place, for the next resume or eval
        spec["recipe_source"] = registry.recipe_source(run.module)
        store.write_config(run_dir, spec)
    used = devices.devices_used(run.num_members)
    if spec.get("devices", used) != used:
        warnings.warn(
            f"run {str(run_dir)!r} was started with its members on {spec['devices']} device(s) and resumes on "
            f"{used}: the continuation is not bit-identical to an uninterrupted run (set XLA_FLAGS="
            f"--xla_force_host_platform_device_count={spec['devices']} before JAX starts to match)",
            stacklevel=2,
        )
    threads = devices.xla_cpu_threads()
    if None not in (spec.get("xla_cpu_threads"), threads) and spec["xla_cpu_threads"] != threads:
        warnings.warn(
            f"run {str(run_dir)!r} was started with {spec['xla_cpu_threads']} thread(s) in XLA's CPU pool and "
            f"resumes with {threads}: some results (large sums) may round differently from an uninterrupted run",
            stacklevel=2,
        )
    keys, member_hparams = run.member_inputs()
    _, init, _ = run.functions(run.chunk)
    done = store.updates_done(run_dir)
    start = done or 0
    t_compile = time.perf_counter()
    first_chunk = run.compile_first_chunk(keys, member_hparams, start)
    if done is None:  # interrupted before the first checkpoint: start over
        state = devices.shard_members(init(keys, member_hparams), run.num_members)
    else:
        state = run.read_checkpoint(jax.eval_shape(init, keys, member_hparams))
        state = devices.shard_members(jax.device_put(state), run.num_members)
    metrics = store.read_metrics(
        run_dir, start, num_members=run.num_members, seeds=run.seeds, hparam_names=options_of(run.module.HParams)
    )
    return _loop(run, state, member_hparams, start=start, metrics=metrics, stop_after_chunks=stop_after_chunks,
                 first_chunk=first_chunk, t_compile=t_compile)


def check_finite(metrics_chunk: dict, first_update: int) -> None:
    """A :class:`NonFiniteError` naming the metric, update and members if any value is NaN or infinite."""
    for name, values in metrics_chunk.items():
        bad = ~np.isfinite(values)
        if bad.any():
            members, steps = np.nonzero(bad)
            raise NonFiniteError(
                f"metric {name!r} became non-finite at update {first_update + int(steps.min())} "
                f"for member(s) {sorted(set(members.tolist()))[:8]}; the last checkpoint holds the state before it"
            )


def _format_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _loop(
    run: Run, state, member_hparams, *, start: int, metrics, stop_after_chunks, first_chunk, t_compile: float
) -> RunResult:
    recipe, _, chunk_fn = run.functions(run.chunk)
    steps_per_update = recipe.env_steps_per_update
    total_steps = run.num_updates * steps_per_update
    collected = [] if metrics is None else [metrics]
    threads = devices.xla_cpu_threads() if jax.default_backend() == "cpu" else None
    run.log(
        f"pgkit: {run.spec['recipe']} on {run.spec['env']}: {len(run.settings)} setting(s) x {run.seeds} seed(s), "
        f"{total_steps:,} env steps each, {run.num_updates} updates in chunks of {run.chunk}, "
        f"members on {devices.devices_used(run.num_members)} of {len(jax.devices())} {jax.default_backend()} device(s)"
        + (f", {threads} XLA CPU thread(s)" if threads else "")
    )
    compiled = {} if first_chunk is None else {first_chunk[0]: first_chunk[1].result()}  # {length: program}

    def launch(u, state):
        """Dispatch the chunk starting at update ``u``; returns (length, start time, (state, metrics)) at once."""
        length = min(run.chunk, run.num_updates - u)
        if length not in compiled:
            fn = chunk_fn if length == run.chunk else run.functions(length)[2]
            compiled[length] = fn.lower(state, member_hparams).compile()
        program = compiled[length]
        # outputs may come back with other (equivalent) shardings than the program was compiled for
        state = jax.device_put(state, program.input_shardings[0][0])
        return length, time.perf_counter(), program(state, member_hparams)

    def more(u, chunks):
        return u < run.num_updates and (stop_after_chunks is None or chunks < stop_after_chunks)

    run.log(f"compiled and initialised in {time.perf_counter() - t_compile:.1f}s")
    u, chunks, t_start = start, 0, time.perf_counter()
    in_flight = launch(u, state) if more(u, chunks) else None
    while in_flight is not None:
        length, t0, (state, chunk_metrics) = in_flight
        chunk_metrics = {k: np.asarray(v, dtype=np.float64) for k, v in jax.device_get(chunk_metrics).items()}
        dt = time.perf_counter() - t0
        check_finite(chunk_metrics, u)
        # copied before the next chunk takes over (donates) the state's buffers
        host_state = jax.device_get(state) if run.run_dir is not None else None
        first_update, u, chunks = u, u + length, chunks + 1
        # the next chunk runs while this one's results are written
        in_flight = launch(u, state) if more(u, chunks) else None
        collected.append(chunk_metrics)
        if run.run_dir is not None:
            store.append_metrics(
                run.run_dir, chunk_metrics, first_update=first_update, steps_per_update=steps_per_update,
                settings=run.settings, labels=run.labels(), seeds=run.seeds,
            )
            store.write_checkpoint(
                run.run_dir, host_state, updates_done=u, num_updates=run.num_updates,
                wall_seconds=time.perf_counter() - t_start,
            )
        returns = chunk_metrics["episode_return"][:, -1]
        rate = run.num_members * length * steps_per_update / dt
        eta = (run.num_updates - u) * (time.perf_counter() - t_start) / max(u - start, 1)
        run.log(
            f"update {u:>5}/{run.num_updates} | steps {u * steps_per_update:>10,}/{total_steps:,} | "
            f"{rate:>10,.0f} steps/s | return mean {returns.mean():8.2f} min {returns.min():8.2f} "
            f"max {returns.max():8.2f} | ETA {_format_duration(eta)}"
        )
    metrics = {k: np.concatenate([c[k] for c in collected], axis=1) for k in collected[0]} if collected else {}
    summary = []
    if u >= run.num_updates and metrics:
        summary = _summarise(run, metrics)
        if run.run_dir is not None:
            store.write_summary(run.run_dir, summary)
            png = plot.plot_runs([run.run_dir], run.run_dir / "learning_curve.png")
            run.log(f"wrote {run.run_dir / 'metrics.csv'}, {png}, {run.run_dir / 'checkpoint.eqx'}")
    elif run.run_dir is not None:
        run.log(f"stopped at update {u}/{run.num_updates}; continue with: pgkit resume {run.run_dir}")
    return RunResult(state, metrics, run.run_dir, summary)


def _summarise(run: Run, metrics) -> list[dict]:
    final = metrics["episode_return"][:, -1]
    summary = []
    for g, setting in enumerate(run.settings):
        values = final[g * run.seeds : (g + 1) * run.seeds]
        s = stats.summarise(values)
        s["label"] = _label(setting, run.sweep)
        summary.append(s)
        run.log(
            f"final return [{s['label']}]: mean {s['mean']:.2f} (95% CI {s['mean_low']:.2f} to {s['mean_high']:.2f}), "
            f"IQM {s['iqm']:.2f}, min {s['min']:.2f}, max {s['max']:.2f} over {s['seeds']} seeds"
        )
    return summary


