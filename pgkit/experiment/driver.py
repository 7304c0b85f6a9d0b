"""The run loop: seeds x hyperparameter grid as one compiled program, run in chunks.

The driver builds ``jit(vmap(scan(update, K)))`` once per (recipe, config, environment, K),
vmapped over members = settings x seeds (member ``g * seeds + s`` runs setting ``g`` with the
key of seed ``s``), and calls it chunk after chunk. Between chunks it prints a progress line,
appends metrics to ``metrics.csv`` (so device memory stays bounded), and writes a checkpoint;
the PRNG key lives in the state, so a resumed run continues the same key stream and is
bit-identical to an uninterrupted one. Members are sharded over ``jax.devices()``: over
several processes' devices in a multi-process run (:mod:`.distributed`), where process 0 alone
writes the run directory and prints.

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
import signal
import threading
import time
import types
import warnings
from pathlib import Path
from typing import Any, Callable, NamedTuple, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

import pgkit
from pgkit import plot, stats
from pgkit.experiment import asynchronous, devices, distributed, memory, presets, registry, store
from pgkit.recipe import DATA_AXIS, ConfigError, options_of, validate

__all__ = [
    "NonFiniteError",
    "Interrupted",
    "RunResult",
    "ChunkMetrics",
    "Run",
    "programs",
    "replay_program",
    "finite_members",
    "chunk_length",
    "start_members",
    "check_finite",
    "train",
    "resume",
]


class NonFiniteError(FloatingPointError):
    """A metric became NaN or infinite (``halt_on_nonfinite``), or every member diverged."""


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM stopped the run after a consistent checkpoint; ``signum`` names the signal.

    The ``pgkit`` command exits with status ``128 + signum`` (130 for SIGINT, 143 for SIGTERM).
    """

    def __init__(self, signum: int, message: str):
        super().__init__(message)
        self.signum = signum


class RunResult(NamedTuple):
    """What :func:`train` returns: final state ``[M, ...]``, metrics ``{name: [M, U]}``.

    ``diverged`` maps each member whose metrics or state became non-finite to the update at
    which it did; its state is frozen at the last finite one and its metrics from then on are NaN.
    """

    state: Any
    metrics: dict
    run_dir: Path | None
    summary: list
    diverged: dict = {}


class ChunkMetrics(NamedTuple):
    """What an ``on_chunk`` callback of :func:`train` and :func:`resume` receives after each chunk.

    The same numbers as the chunk's rows of ``metrics.csv`` (written, with the checkpoint, before
    the callback is called). Member ``m = setting * seeds + seed``; per-member fields have one
    entry per member.

    Attributes:
      run_dir: the run directory (None when training without ``out``).
      labels: ``[M]`` each member's setting label (``"lr=0.001"``; ``"default"`` without a sweep).
      settings: ``[M]`` each member's setting index. ``seeds``: ``[M]`` each member's seed index.
      hparams: ``[M]`` each member's hyperparameters, ``{name: float}``.
      first_update, last_update: the chunk's first and last update (0-based, both included).
      num_updates: the updates of the whole run.
      env_steps: ``[L]`` int array (``L = last_update - first_update + 1``): environment steps
        per member after each update of the chunk (``metrics.csv``'s ``env_steps``).
      metrics: ``{metric: [M, L]}`` read-only float64 host arrays; a diverged member's are NaN
        from the update at which it diverged, as in ``metrics.csv``.
      diverged: ``{member: update}`` of every member diverged so far.
    """

    run_dir: Path | None
    labels: tuple
    settings: tuple
    seeds: tuple
    hparams: tuple
    first_update: int
    last_update: int
    num_updates: int
    env_steps: np.ndarray
    metrics: dict
    diverged: dict


def _callbacks(on_chunk) -> list:
    """``on_chunk`` (None, a callable or a sequence of callables) as a list."""
    if on_chunk is None:
        return []
    callbacks = [on_chunk] if callable(on_chunk) else list(on_chunk)
    for callback in callbacks:
        if not callable(callback):
            raise ConfigError(f"on_chunk takes a callable or a sequence of callables, got {callback!r}")
    return callbacks


def _close(callbacks: list) -> None:
    """Call ``close()`` of every callback that has one (the loggers flush and finish their runs)."""
    for callback in callbacks:
        close = getattr(callback, "close", None)
        if callable(close):
            close()


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


def _sweep_values(name, values) -> list[float]:
    """A sweep's values as floats, or a ConfigError naming the option (``config`` options are static)."""
    try:
        return [float(v) for v in values]
    except (TypeError, ValueError):
        raise ConfigError(
            f"cannot sweep {name!r} over {list(values)!r}: a sweep takes float hyperparameters; "
            f"run one train() per value of a config option"
        ) from None


def _label(setting, sweep) -> str:
    return ", ".join(f"{n}={getattr(setting, n):g}" for n in sweep) or "default"


@functools.lru_cache(maxsize=32)
def built(recipe_module: types.ModuleType, config, env_name: str):
    """``recipe_module.make(config, env_name)``, once per (recipe, config, env)."""
    return recipe_module.make(config, env_name)


def programs(recipe_module: types.ModuleType, config, env_name: str, chunk: int, num_members: int = 1):
    """``(recipe, init, chunk_fn)``: the jitted programs the driver runs, once per (recipe, config, env, chunk).

    ``init = jit(vmap(recipe.init))`` over members; ``chunk_fn = jit(vmap(scan(recipe.update,
    chunk)))``, which donates its state. Turns on :func:`devices.use_unrolled_threefry` first.
    A data-parallel recipe (``recipe.data_shards`` D > 1) runs each member's D shards under
    the axis :data:`pgkit.recipe.DATA_AXIS`: vmapped on one device, or, where
    :func:`devices.data_mesh` has D devices per member, one shard per device under
    ``shard_map`` (the mesh depends on ``num_members``).
    """
    devices.use_unrolled_threefry()  # same random numbers, faster compiles
    shards = built(recipe_module, config, env_name).data_shards
    return _programs(recipe_module, config, env_name, chunk, num_members if shards > 1 else 1)


@functools.lru_cache(maxsize=32)
def _programs(recipe_module: types.ModuleType, config, env_name: str, chunk: int, num_members: int):
    recipe = built(recipe_module, config, env_name)
    shards = recipe.data_shards

    def run_chunk(state, hparams):
        return jax.lax.scan(lambda s, _: recipe.update(s, hparams), state, None, length=chunk)

    def strongly_typed_init(key, hparams):  # a restored checkpoint has no weak types: same program
        state = recipe.init(key, hparams)
        return jax.tree.map(lambda x: jax.lax.convert_element_type(x, x.dtype) if eqx.is_array(x) else x, state)

    if shards == 1:
        init = jax.jit(jax.vmap(strongly_typed_init))
        return recipe, init, jax.jit(jax.vmap(run_chunk), donate_argnums=0)
    # every shard of a member starts from the member's key; the recipe tells its shards apart
    init = jax.jit(jax.vmap(jax.vmap(strongly_typed_init, in_axes=(None, None), axis_size=shards, axis_name=DATA_AXIS)))
    mesh = devices.data_mesh(num_members, shards)
    if mesh is None:  # the shards of a member share its device
        chunk_fn = jax.vmap(jax.vmap(run_chunk, in_axes=(0, None), axis_name=DATA_AXIS))
        return recipe, init, jax.jit(chunk_fn, donate_argnums=0)

    def on_device(state, hparams):  # one shard of each of this device's members
        state, metrics = jax.vmap(run_chunk)(jax.tree.map(lambda x: x[:, 0], state), hparams)
        return jax.tree.map(lambda x: x[:, None], (state, metrics))

    split, members = (jax.sharding.PartitionSpec(*axes) for axes in (("members", "data"), ("members",)))
    # check_vma off: what the shards average (pmean) is the same in each, and stays in their carry as such
    chunk_fn = jax.shard_map(on_device, mesh=mesh, in_specs=(split, members), out_specs=(split, split), check_vma=False)
    shardings = [jax.sharding.NamedSharding(mesh, spec) for spec in (split, members)]
    return recipe, init, jax.jit(chunk_fn, in_shardings=tuple(shardings), out_shardings=(shardings[0],) * 2,
                                 donate_argnums=0)


def _finite(tree) -> jax.Array:
    """Whether every float of ``tree`` (one member's) is finite: a scalar bool."""
    leaves = [jnp.isfinite(x).all() for x in jax.tree.leaves(tree) if eqx.is_inexact_array(x)]
    return jnp.stack(leaves).all() if leaves else jnp.asarray(True)


@jax.jit
def finite_members(state) -> jax.Array:
    """``[M]`` bools: whether every float of each member's state is finite."""
    return jax.vmap(_finite)(state)


@functools.lru_cache(maxsize=8)
def replay_program(recipe_module: types.ModuleType, config, env_name: str, chunk: int):
    """``jit(vmap(replay))``: a chunk re-run that stops each member at its last finite state.

    ``replay(state, hparams) -> (state, good)``: from the state a chunk started with, apply
    updates while the update's metrics and new state are finite; ``good`` counts those applied,
    so the member diverged at update ``start + good``. Run only when a member diverged (the
    select it does on every leaf costs a copy of the state per update). The shards of a
    data-parallel member (vmapped here) stop together, at the first shard's first non-finite update.
    """
    recipe = built(recipe_module, config, env_name)
    shards = recipe.data_shards

    def replay(state, hparams):
        def body(carry, i):
            state, good = carry
            new, metrics = recipe.update(state, hparams)
            ok = (good == i) & _finite(metrics) & _finite(new)  # every update before it was applied
            if shards > 1:
                ok = jax.lax.pmin(ok.astype(jnp.int32), DATA_AXIS).astype(bool)
            return (jax.tree.map(lambda n, o: jnp.where(ok, n, o), new, state), good + ok.astype(jnp.int32)), None

        (state, good), _ = jax.lax.scan(body, (state, jnp.int32(0)), jnp.arange(chunk, dtype=jnp.int32))
        return state, good

    if shards > 1:
        member_replay = jax.vmap(replay, in_axes=(0, None), axis_name=DATA_AXIS)
        return jax.jit(jax.vmap(lambda state, hparams: (lambda r: (r[0], r[1][0]))(member_replay(state, hparams))))
    return jax.jit(jax.vmap(replay))


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
        self.spec, self.run_dir = spec, run_dir
        self.writes = distributed.is_main()  # process 0 writes the run directory and prints
        self.log = log if self.writes else (lambda _: None)
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
        self.data_shards = probe.data_shards
        self.actor_learner = probe.actor_learner  # free-running actor threads (asynchronous.ThreadedChunks)
        self._threaded: dict[int, asynchronous.ThreadedChunks] = {}
        if self.actor_learner is not None and distributed.is_multiprocess():
            raise ConfigError("a recipe with actor threads (mode=threads) runs in one process; multi-process is not supported yet")
        if self.data_shards > 1 and distributed.is_multiprocess():
            raise ConfigError(f"option 'data_shards': {self.data_shards} shards in a multi-process run are not supported yet")
        if self.num_updates < 1:
            raise ConfigError(
                f"the run is shorter than one update ({probe.env_steps_per_update} env steps); raise 'total_steps'"
            )
        self.chunk = chunk_length(self.num_updates, spec.get("chunk"))
        spec["chunk"] = self.chunk
        self.num_members = len(self.settings) * self.seeds
        distributed.check_members(self.num_members)
        # False (the default): a diverging member is frozen and the others go on
        self.halt_on_nonfinite = bool(spec.get("halt_on_nonfinite", False))

    def member_inputs(self):
        """``(keys, hparams)`` of every member, sharded: member ``g * seeds + s`` = setting g, seed s."""
        seed_keys = jax.random.split(jax.random.PRNGKey(self.spec["seed"]), self.seeds)
        keys = jnp.tile(seed_keys, (len(self.settings), 1))
        hparams = jax.tree.map(
            lambda *xs: jnp.repeat(jnp.asarray(xs, dtype=jnp.float32), self.seeds), *self.settings
        )
        return devices.shard_members((keys, hparams), self.num_members, self.data_shards)

    def labels(self) -> list[str]:
        return [_label(setting, self.sweep) for setting in self.settings]

    def functions(self, length: int):
        """``(recipe, init, chunk_fn)`` for chunks of ``length`` updates (see :func:`programs`)."""
        return programs(self.module, self.config, self.spec["env"], length, self.num_members)

    def read_checkpoint(self, template):
        """``(state, record)``: the newest whole checkpoint of this run, shaped as ``template``.

        See :func:`store.read_checkpoint` (a damaged newest checkpoint falls back to the previous).
        """
        return store.read_checkpoint(
            self.run_dir, template, recipe=self.spec["recipe"],
            written_by=self.spec.get("pgkit_version", "0.1.0"), version=pgkit.__version__,
        )

    def check_memory(self, init, keys, member_hparams) -> dict:
        """Refuse (one-line ConfigError) a run whose state and chunk outputs cannot fit; see :mod:`.memory`.

        Sizes come from ``jax.eval_shape``: nothing is allocated. Without ``halt_on_nonfinite``
        the driver keeps the state on the devices twice at most (a diverging member is replayed
        from the chunk's start) and twice on the host (the chunk's start and end); with it, once
        on the devices and once on the host if it checkpoints.
        """
        try:
            state = jax.eval_shape(init, keys, member_hparams)
            outputs = jax.eval_shape(self.functions(self.chunk)[2], state, member_hparams)[1]
        except OverflowError as error:
            raise ConfigError(
                f"the {self.spec['recipe']!r} state does not fit the device's integers ({error}): lower its size options"
            ) from None
        sharding = devices.member_sharding(self.num_members, self.data_shards)
        used = sorted(sharding.addressable_devices, key=lambda d: d.id) if sharding is not None else jax.devices()[:1]
        keep_host = not self.halt_on_nonfinite or self.run_dir is not None
        return memory.check_fits(
            state, outputs, config=self.config, num_settings=len(self.settings), seeds=self.seeds,
            device_copies=1 if self.halt_on_nonfinite else 2,
            host_copies=(1 if self.halt_on_nonfinite else 2) if keep_host else 0, devices_used=used,
        )

    def compile_first_chunk(self, keys, member_hparams, start: int) -> tuple[int, concurrent.futures.Future] | None:
        """Start compiling the first chunk's program (see :func:`_compile_in_background`).

        Returns the chunk's length and the future program, or None when no chunk is left to run.
        """
        if start >= self.num_updates or self.actor_learner is not None:  # threads compile as they first run
            return None
        _, init, _ = self.functions(self.chunk)
        length = min(self.chunk, self.num_updates - start)
        return length, _compile_in_background(
            self.functions(length)[2], init, keys, member_hparams, self.num_members, self.data_shards
        )

    def threaded_chunk(self, length: int) -> asynchronous.ThreadedChunks:
        """The actor-thread runner of ``length`` updates (one per length: its programs compile once)."""
        if length not in self._threaded:
            self._threaded[length] = asynchronous.ThreadedChunks(self.actor_learner, length)
        return self._threaded[length]

    def place_state(self, state):
        """``state`` (host or device) placed over the devices as the chunk program takes it."""
        return devices.shard_members(state, self.num_members, self.data_shards, shards_axis=True)


def _compile_in_background(
    chunk_fn, init, keys, member_hparams, num_members: int, data_shards: int = 1
) -> concurrent.futures.Future:
    """Compile ``chunk_fn`` for the state ``init`` will return, on a thread; returns the future program.

    Lowering needs only the state's shapes (``eval_shape`` of the init) and runs here, on the
    caller's thread (JAX's thread-local settings apply); XLA then compiles it while the caller
    compiles and runs the init, using a second core. The benchmarks time the same path.
    """
    shapes = jax.eval_shape(init, keys, member_hparams)
    sharding = devices.member_sharding(num_members, data_shards, shards_axis=True)
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
    halt_on_nonfinite: bool = False,
    stop_after_chunks: int | None = None,
    log: Callable[[str], None] | None = print,
    on_chunk: Callable[[ChunkMetrics], None] | Sequence[Callable[[ChunkMetrics], None]] | None = None,
    preset: bool = True,
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
      preset: apply the recipe's preset for ``env`` if it has one (:mod:`pgkit.experiment.presets`):
        its values replace the recipe's defaults, ``config`` and ``hparams`` override both, and
        ``config.json`` records it. ``False`` trains with the recipe's own defaults.
      sweep: ``{hyperparameter: [values]}``; the grid is their cartesian product.
      out: run directory for config, metrics, plot and checkpoints (nothing written if None).
      chunk: updates per compiled chunk (default: about 20 chunks, dividing the run).
      halt_on_nonfinite: stop the whole run (:class:`NonFiniteError`) when any metric becomes
        non-finite. By default a diverging member is frozen at its last finite state, marked
        diverged, and the others go on; a run whose every member diverged raises NonFiniteError.
      stop_after_chunks: stop early after this many chunks (simulates an interruption).
      log: where progress lines go (``None`` for silence).
      on_chunk: a callable, or a sequence of them, called with a :class:`ChunkMetrics` after
        each chunk's metrics and checkpoint are written (the loggers of
        :mod:`pgkit.experiment.loggers` stream them to TensorBoard or W&B). A callback that
        raises stops the run: the exception propagates, with metrics.csv and the checkpoint
        holding that chunk (``resume`` goes on from the next). Callbacks with a ``close()``
        method are closed when the call returns or raises.

    Returns:
      ``RunResult(state, metrics, run_dir, summary, diverged)``: final state with a leading
      member axis, ``{metric: [members, updates]}`` host arrays, per-setting summaries, and
      ``{member: update}`` of the members that diverged.

    Before anything is allocated, a run that cannot fit in memory is refused (ConfigError
    naming the options that size it). SIGINT or SIGTERM stops the run after the chunk in
    flight, with a consistent checkpoint (:class:`Interrupted`); a second signal ends it at once.
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
    env = env or module.DEFAULT_ENV
    applied = presets.lookup(module, env) if preset else None
    if applied is not None:
        preset_config, preset_hparams = presets.split_options(module, applied)
        given = [k for k in (*config, *hparams) if k in applied.options]
        (log if log is not None and distributed.is_main() else (lambda _: None))(
            f"preset {applied.name}: "
            + (", ".join(f"{k}={v}" for k, v in applied.options.items()) or "the recipe's defaults")
            + (f" (yours: {', '.join(given)})" if given else "")
        )
        config, hparams = {**preset_config, **config}, {**preset_hparams, **hparams}
    base_config = module.Config(**config)
    base_hparams = module.HParams(**hparams)
    spec = {
        "recipe": name,
        "recipe_source": registry.recipe_source(module),
        "env": env,
        "preset": None if applied is None else {"name": applied.name, "set": {k: _to_json(v) for k, v in applied.options.items()}},
        "seeds": int(seeds),
        "seed": int(seed),
        "config": {k: _to_json(v) for k, v in dataclasses.asdict(base_config).items()},
        "hparams": dataclasses.asdict(base_hparams),
        "sweep": {k: _sweep_values(k, vs) for k, vs in (sweep or {}).items()},
        "chunk": chunk,
        "halt_on_nonfinite": bool(halt_on_nonfinite),
        "jax_version": jax.__version__,
        "pgkit_version": pgkit.__version__,
    }
    run_dir = None
    if out is not None:
        run_dir = Path(out)
        if store.updates_done(run_dir) is not None:
            raise ConfigError(f"run directory {str(run_dir)!r} already holds a run; use 'pgkit resume {run_dir}' or another --out")
    callbacks = _callbacks(on_chunk)
    run = Run(spec, run_dir, log or (lambda _: None), module)
    spec["devices"] = devices.devices_used(run.num_members, run.data_shards)  # results are reproducible per device count
    spec["processes"] = jax.process_count()  # over every process's devices (pgkit.experiment.distributed)
    spec["xla_cpu_threads"] = devices.xla_cpu_threads()  # and per thread count of XLA's CPU pool (TRPO)
    keys, member_hparams = run.member_inputs()
    _, init, _ = run.functions(run.chunk)
    run.check_memory(init, keys, member_hparams)
    if run_dir is not None and run.writes:
        store.write_config(run_dir, spec)
    t_compile = time.perf_counter()
    first_chunk = run.compile_first_chunk(keys, member_hparams, 0)
    state = run.place_state(init(keys, member_hparams))
    return _loop(run, state, member_hparams, start=0, metrics=None, stop_after_chunks=stop_after_chunks,
                 first_chunk=first_chunk, t_compile=t_compile, diverged={}, callbacks=callbacks)


def resume(
    run_dir,
    *,
    recipe: str | os.PathLike | types.ModuleType | None = None,
    stop_after_chunks: int | None = None,
    log: Callable[[str], None] | None = print,
    on_chunk: Callable[[ChunkMetrics], None] | Sequence[Callable[[ChunkMetrics], None]] | None = None,
) -> RunResult:
    """Continue an interrupted run from its last checkpoint (same key stream, same result).

    The recipe is found where ``config.json`` says it came from; pass ``recipe`` (a module, name
    or path, as for :func:`train`) if it has moved since, and ``config.json`` records its new place.
    ``on_chunk`` is called after each chunk, as for :func:`train`, from the first chunk not in the
    checkpoint: over a run and its resumes it sees every update of the checkpoints once (a chunk
    whose callback did not return, because the process died, is not offered again; a chunk
    replayed because its checkpoint was lost or damaged is offered again).
    """
    callbacks = _callbacks(on_chunk)
    run_dir = Path(run_dir)
    spec = store.read_config(run_dir)
    run = Run(spec, run_dir, log or (lambda _: None), recipe)
    if recipe is not None and run.writes:  # the recipe's new place, for the next resume or eval
        spec["recipe_source"] = registry.recipe_source(run.module)
        store.write_config(run_dir, spec)
    used = devices.devices_used(run.num_members, run.data_shards)
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
    run.check_memory(init, keys, member_hparams)
    def read_run():
        """``(state, record, metrics)`` from the run directory, setting aside what is damaged."""
        state, record = None, None
        if store.updates_done(run_dir) is not None:
            try:
                state, record = run.read_checkpoint(jax.eval_shape(init, keys, member_hparams))
            except store.DamagedCheckpointError as error:
                if error.newest_update > run.chunk:
                    raise
                # the first chunk's checkpoint was all there was: starting over loses only that chunk
                store.set_aside_checkpoints(run_dir)
                warnings.warn(f"{error}: set aside as .corrupt; the run starts over", stacklevel=3)
        metrics = store.read_metrics(
            run_dir, 0 if record is None else record["updates_done"], num_members=run.num_members, seeds=run.seeds,
            hparam_names=options_of(run.module.HParams),
        )
        return state, record, metrics

    # process 0 reads first (and sets aside or cuts what is damaged); the others then read the same files
    if run.writes:
        state, record, metrics = read_run()
        distributed.barrier("the run directory read by process 0")
    else:
        distributed.barrier("the run directory read by process 0")
        state, record, metrics = read_run()
    start = 0 if record is None else record["updates_done"]
    diverged = {} if record is None else {int(m): int(u) for m, u in record.get("diverged", [])}
    t_compile = time.perf_counter()
    first_chunk = run.compile_first_chunk(keys, member_hparams, start)
    if state is None:  # interrupted before the first checkpoint: start over
        state = run.place_state(init(keys, member_hparams))
    else:
        state = run.place_state(jax.device_put(state))
    return _loop(run, state, member_hparams, start=start, metrics=metrics, stop_after_chunks=stop_after_chunks,
                 first_chunk=first_chunk, t_compile=t_compile, diverged=diverged, callbacks=callbacks)


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


class _StopOnSignal:
    """While active (main thread only), SIGINT and SIGTERM set ``received`` instead of stopping.

    The first signal restores the default action of both, so a second one ends the process at
    once, even while the main thread waits on the device.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.received, self.previous = None, {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self.previous = {sig: signal.signal(sig, self._handle) for sig in self.SIGNALS}
        return self

    def _handle(self, signum, frame):
        self.received = signum
        for sig in self.SIGNALS:
            signal.signal(sig, signal.SIG_DFL)

    def __exit__(self, *exc):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def _wait(tree) -> None:
    """Block until ``tree``'s arrays are computed, in short sleeps so signal handlers run meanwhile."""
    leaves = [x for x in jax.tree.leaves(tree) if isinstance(x, jax.Array)]
    pause = 1e-3
    while not all(x.is_ready() for x in leaves):
        time.sleep(pause)
        pause = min(2 * pause, 0.05)


def _with_rows(tree, source, members: list[int]):
    """A host copy of ``tree`` whose rows ``members`` (leading axis) are taken from ``source``."""

    def take(x, y):
        x = np.array(x)
        x[members] = np.asarray(y)[members]
        return x

    return jax.tree.map(take, tree, source)


def _first_nonfinite(chunk_metrics: dict) -> np.ndarray:
    """``[M]``: the index of each member's first update with a non-finite metric (the length if none)."""
    bad = np.zeros(next(iter(chunk_metrics.values())).shape, bool)
    for values in chunk_metrics.values():
        bad |= ~np.isfinite(values)
    return np.where(bad.any(axis=1), bad.argmax(axis=1), bad.shape[1])


def _loop(run: Run, state, member_hparams, *, callbacks: list, **kwargs) -> RunResult:
    """The chunk loop (:func:`_run_chunks`); closes the callbacks that have ``close()`` however it ends."""
    try:
        return _run_chunks(run, state, member_hparams, callbacks=callbacks, **kwargs)
    finally:
        _close(callbacks)


def _run_chunks(
    run: Run, state, member_hparams, *, start: int, metrics, stop_after_chunks, first_chunk, t_compile: float,
    diverged: dict, callbacks: list,
) -> RunResult:
    recipe, _, chunk_fn = run.functions(run.chunk)
    steps_per_update = recipe.env_steps_per_update
    total_steps = run.num_updates * steps_per_update
    collected = [] if metrics is None else [metrics]
    threads = devices.xla_cpu_threads() if jax.default_backend() == "cpu" else None
    guard = not run.halt_on_nonfinite
    run.log(
        f"pgkit: {run.spec['recipe']} on {run.spec['env']}: {len(run.settings)} setting(s) x {run.seeds} seed(s), "
        f"{total_steps:,} env steps each, {run.num_updates} updates in chunks of {run.chunk}, "
        f"members on {devices.devices_used(run.num_members, run.data_shards)} of {len(jax.devices())} "
        f"{jax.default_backend()} device(s)"
        + (f", {run.data_shards} data shards per member" if run.data_shards > 1 else "")
        + distributed.describe()
        + (f", {threads} XLA CPU thread(s)" if threads else "")
    )
    compiled = {} if first_chunk is None else {first_chunk[0]: first_chunk[1].result()}  # {length: program}

    def launch(u, state):
        """Dispatch the chunk starting at update ``u``; returns (length, start time, (state, metrics)) at once."""
        length = min(run.chunk, run.num_updates - u)
        if run.actor_learner is not None:  # actor threads and the learner: returns when the chunk is done
            return length, time.perf_counter(), run.threaded_chunk(length)(state, member_hparams)
        if length not in compiled:
            fn = chunk_fn if length == run.chunk else run.functions(length)[2]
            compiled[length] = fn.lower(state, member_hparams).compile()
        program = compiled[length]
        # outputs may come back with other (equivalent) shardings than the program was compiled for
        state = jax.device_put(state, program.input_shardings[0][0])
        hparams = member_hparams
        if run.data_shards > 1:  # a shard_map program takes them replicated over the data devices
            hparams = jax.device_put(member_hparams, program.input_shardings[0][1])
        return length, time.perf_counter(), program(state, hparams)

    def more(u, chunks):
        return u < run.num_updates and (stop_after_chunks is None or chunks < stop_after_chunks)

    def freeze(chunk_start, chunk_end, finite_end, chunk_metrics, first_update: int, length: int):
        """Find the members that diverged in this chunk; return the chunk's end state with every diverged
        member at its last finite state, and its metrics NaN from the update at which it diverged."""
        first_bad = _first_nonfinite(chunk_metrics)
        finite_end = distributed.host_copy(finite_end, "which members are finite")
        new = [m for m in range(run.num_members) if m not in diverged and (first_bad[m] < length or not finite_end[m])]
        end = chunk_end
        if new:  # replay the chunk from its start: each new member stops before its first non-finite update
            replayed, good = replay_program(run.module, run.config, run.spec["env"], length)(
                run.place_state(jax.device_put(chunk_start)), member_hparams
            )
            replayed, good = distributed.host_copy((replayed, good), "the replay of diverged members")
            for m in new:
                diverged[m] = first_update + int(min(good[m], first_bad[m], length - 1))
            end = _with_rows(end, replayed, new)
        old = [m for m in diverged if m not in new]
        if old:  # frozen before this chunk: as it started
            end = _with_rows(end, chunk_start, old)
        for m, since in diverged.items():
            for values in chunk_metrics.values():
                values[m, max(since - first_update, 0) :] = np.nan
        return end

    run.log(f"compiled and initialised in {time.perf_counter() - t_compile:.1f}s")
    u, chunks, t_start = start, 0, time.perf_counter()
    # the state a chunk starts from, on the host: written as the checkpoint, and replayed from if a member diverges
    host_state = distributed.host_copy(state, "the state") if guard else None
    if guard:
        finite_start = distributed.host_copy(finite_members(state), "which members are finite")
        for m in np.flatnonzero(~finite_start):  # non-finite from the start
            diverged.setdefault(int(m), start)
    if guard and diverged and len(diverged) == run.num_members:
        raise NonFiniteError(f"every member of the run had diverged by update {start}; nothing is left to train")
    with _StopOnSignal() as stop:

        def stopping() -> int:  # the signal any process received (0: none), the same in every process
            return distributed.largest_over_processes(stop.received or 0)

        in_flight = launch(u, state) if more(u, chunks) and not stopping() else None
        while in_flight is not None:
            length, t0, (state, chunk_metrics) = in_flight
            _wait(chunk_metrics)
            chunk_metrics = distributed.host_copy(chunk_metrics, "the chunk's metrics")
            if run.data_shards > 1:  # [M, D, L]: the shards' metrics are equal; shard 0's
                chunk_metrics = {k: v[:, 0] for k, v in chunk_metrics.items()}
            chunk_metrics = {k: np.array(v, dtype=np.float64) for k, v in chunk_metrics.items()}
            dt = time.perf_counter() - t0
            if run.halt_on_nonfinite:
                check_finite(chunk_metrics, u)
            finite_end = finite_members(state) if guard else None  # dispatched before the next chunk donates it
            # copied before the next chunk takes over (donates) the state's buffers
            end_state = distributed.host_copy(state, "the state") if guard or run.run_dir is not None else None
            first_update, u, chunks = u, u + length, chunks + 1
            # the next chunk runs while this one's results are written
            in_flight = launch(u, state) if more(u, chunks) and not stopping() else None
            if guard:
                host_state = freeze(host_state, end_state, finite_end, chunk_metrics, first_update, length)
                end_state = host_state
            collected.append(chunk_metrics)
            if run.run_dir is not None and run.writes:
                store.append_metrics(
                    run.run_dir, chunk_metrics, first_update=first_update, steps_per_update=steps_per_update,
                    settings=run.settings, labels=run.labels(), seeds=run.seeds, diverged=diverged,
                )
                store.write_checkpoint(
                    run.run_dir, end_state, updates_done=u, num_updates=run.num_updates,
                    wall_seconds=time.perf_counter() - t_start, diverged=diverged,
                )
            returns = chunk_metrics["episode_return"][:, -1]
            returns = returns[np.isfinite(returns)]
            rate = run.num_members * length * steps_per_update / dt
            eta = (run.num_updates - u) * (time.perf_counter() - t_start) / max(u - start, 1)
            run.log(
                f"update {u:>5}/{run.num_updates} | steps {u * steps_per_update:>10,}/{total_steps:,} | "
                f"{rate:>10,.0f} steps/s | "
                + (
                    f"return mean {returns.mean():8.2f} min {returns.min():8.2f} max {returns.max():8.2f}"
                    if returns.size else "return        -"
                )
                + (f" | diverged {len(diverged)}/{run.num_members}" if diverged else "")
                + f" | ETA {_format_duration(eta)}"
            )
            if callbacks and run.writes:  # after the writes: a callback that raises leaves the chunk on disk
                chunk = _chunk_metrics(run, chunk_metrics, first_update, length, steps_per_update, diverged)
                for callback in callbacks:
                    callback(chunk)
            if len(diverged) == run.num_members:
                where = f"; metrics.csv and the checkpoint hold it ({run.run_dir})" if run.run_dir is not None else ""
                raise NonFiniteError(
                    f"every member diverged (the first at update {min(diverged.values())}, the last at update "
                    f"{max(diverged.values())}): the run stopped at update {u}/{run.num_updates}{where}"
                )
            signum = stopping()  # a signal during the writes abandons the chunk in flight
            if signum:
                name = signal.Signals(signum).name
                kept = (
                    f"the checkpoint holds update {u}/{run.num_updates}; continue with: pgkit resume {run.run_dir}"
                    if run.run_dir is not None else "no run directory: nothing was kept"
                )
                run.log(f"stopped by {name}: {kept}")
                raise Interrupted(signum, f"stopped by {name}: {kept}")
    if diverged:  # the returned state holds each diverged member as frozen
        state = run.place_state(jax.device_put(host_state))
    metrics = {k: np.concatenate([c[k] for c in collected], axis=1) for k in collected[0]} if collected else {}
    summary = []
    if u >= run.num_updates and metrics:
        summary = _summarise(run, metrics, diverged)
        if run.run_dir is not None and run.writes:
            store.write_summary(run.run_dir, summary)
            png = plot.plot_runs([run.run_dir], run.run_dir / "learning_curve.png")
            run.log(f"wrote {run.run_dir / 'metrics.csv'}, {png}, checkpoints in {run.run_dir}")
    elif run.run_dir is not None:
        run.log(f"stopped at update {u}/{run.num_updates}; continue with: pgkit resume {run.run_dir}")
    return RunResult(state, metrics, run.run_dir, summary, dict(sorted(diverged.items())))


def _chunk_metrics(run: Run, chunk_metrics: dict, first_update: int, length: int, steps_per_update: int,
                   diverged: dict) -> ChunkMetrics:
    """The :class:`ChunkMetrics` of one chunk: read-only views of its host arrays."""
    labels = run.labels()
    members = range(run.num_members)
    views = {}
    for name, values in chunk_metrics.items():
        views[name] = values.view()
        views[name].flags.writeable = False
    return ChunkMetrics(
        run_dir=run.run_dir,
        labels=tuple(labels[m // run.seeds] for m in members),
        settings=tuple(m // run.seeds for m in members),
        seeds=tuple(m % run.seeds for m in members),
        hparams=tuple(
            {k: float(v) for k, v in dataclasses.asdict(run.settings[m // run.seeds]).items()} for m in members
        ),
        first_update=first_update,
        last_update=first_update + length - 1,
        num_updates=run.num_updates,
        env_steps=(np.arange(first_update, first_update + length) + 1) * steps_per_update,
        metrics=views,
        diverged=dict(sorted(diverged.items())),
    )


def _summarise(run: Run, metrics, diverged: dict) -> list[dict]:
    """Per setting: statistics of the final returns of its members that did not diverge, and those that did."""
    final = metrics["episode_return"][:, -1]
    summary = []
    for g, setting in enumerate(run.settings):
        members = range(g * run.seeds, (g + 1) * run.seeds)
        lost = [{"seed": m - g * run.seeds, "update": diverged[m]} for m in members if m in diverged]
        values = np.array([final[m] for m in members if m not in diverged])
        label = _label(setting, run.sweep)
        s = {**stats.summarise(values), "label": label} if values.size else {"label": label, "seeds": 0}
        s["diverged"] = lost
        summary.append(s)
        note = (
            f"; {len(lost)} diverged ("
            + ", ".join(f"seed {d['seed']} at update {d['update']}" for d in lost)
            + ")"
            if lost else ""
        )
        if values.size:
            run.log(
                f"final return [{label}]: mean {s['mean']:.2f} (95% CI {s['mean_low']:.2f} to {s['mean_high']:.2f}), "
                f"IQM {s['iqm']:.2f}, min {s['min']:.2f}, max {s['max']:.2f} over {s['seeds']} seeds{note}"
            )
        else:
            run.log(f"final return [{label}]: every seed diverged{note.removeprefix(f'; {len(lost)} diverged')}")
    return summary
