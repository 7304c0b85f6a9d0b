"""The experiment driver: seeds x hyperparameter grid as one compiled program, run in chunks.

A recipe is a module with ``NAME``, ``DESCRIPTION``, ``DEFAULT_ENV``, a static ``Config``
(frozen dataclass: shapes, counts, switches), float hyperparameters ``HParams`` (a
:func:`hyperparameters` dataclass: traced, vmappable) and ``make(config, env_name) -> Recipe``.

The driver builds ``jit(vmap(scan(update, K)))`` once per (recipe, config, environment, K),
vmapped over members = settings x seeds (member ``g * seeds + s`` runs setting ``g`` with the
key of seed ``s``), and calls it chunk after chunk. Between chunks it prints a progress line,
appends metrics to ``metrics.csv`` (so device memory stays bounded), and writes a checkpoint;
the PRNG key lives in the state, so a resumed run continues the same key stream and is
bit-identical to an uninterrupted one. Members are sharded over ``jax.devices()``.
"""

from __future__ import annotations

import concurrent.futures
import csv
import dataclasses
import functools
import importlib
import itertools
import json
import math
import os
import re
import time
import types
import typing
import warnings
from pathlib import Path
from typing import Any, Callable, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

import pgkit
from pgkit import plot, stats

__all__ = [
    "ConfigError",
    "NonFiniteError",
    "Recipe",
    "RunResult",
    "option",
    "hyperparameters",
    "options_of",
    "parse_option",
    "validate",
    "load_recipe",
    "available_recipes",
    "train",
    "resume",
    "evaluate",
    "use_compilation_cache",
    "use_cpu_cores",
    "xla_cpu_threads",
]

RECIPES_PACKAGE = "recipes"


class ConfigError(ValueError):
    """A bad option value; the message names the option and what is allowed."""


class NonFiniteError(FloatingPointError):
    """A metric became NaN or infinite during training."""


class Recipe(NamedTuple):
    """The pure functions a recipe's ``make`` returns.

    Attributes:
      init: ``(key, hparams) -> state``; the state holds the PRNG key stream.
      update: ``(state, hparams) -> (state, metrics)``: one iteration of the algorithm box;
        ``metrics`` maps names to scalars and includes ``episode_return`` (mean undiscounted
        return of the episodes completed in this update, the last known value if none).
      act: ``(state, key, obs [E, obs_size]) -> actions [E, ...]``, the evaluation policy.
      env: the training ``pgkit.envs.VecEnv``.
      env_steps_per_update: environment steps of one member in one update.
      num_updates: updates in a whole run.
    """

    init: Callable
    update: Callable
    act: Callable
    env: Any
    env_steps_per_update: int
    num_updates: int


class RunResult(NamedTuple):
    """What :func:`train` returns: final state ``[M, ...]``, metrics ``{name: [M, U]}``."""

    state: Any
    metrics: dict
    run_dir: Path | None
    summary: list


# ----------------------------------------------------------------------------- options


def option(default, help: str, *, low=None, high=None, choices=None, positive=False):
    """A documented, validated dataclass field for a recipe's ``Config`` or ``HParams``."""
    meta = {"help": help, "low": low, "high": high, "choices": choices, "positive": positive}
    return dataclasses.field(default=default, metadata=meta)


def hyperparameters(cls):
    """Frozen dataclass whose fields are pytree leaves (traced floats, vmappable)."""
    cls = dataclasses.dataclass(frozen=True)(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    return jax.tree_util.register_dataclass(cls, data_fields=names, meta_fields=[])


def options_of(cls) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls)}


def _type_of(cls, name):
    hints = typing.get_type_hints(cls)
    return hints[name]


def _describe(field) -> str:
    meta = field.metadata
    if meta.get("choices"):
        return "one of " + ", ".join(map(str, meta["choices"]))
    parts = []
    if meta.get("positive"):
        parts.append("> 0")
    if meta.get("low") is not None:
        parts.append(f">= {meta['low']}")
    if meta.get("high") is not None:
        parts.append(f"<= {meta['high']}")
    return " and ".join(parts) if parts else "any value"


def parse_option(cls, name: str, text: str):
    """Parse ``text`` into the declared type of ``cls.name`` (int, float, bool, str, tuple)."""
    fields = options_of(cls)
    if name not in fields:
        raise ConfigError(f"unknown option {name!r}; available: {', '.join(fields)}")
    kind = _type_of(cls, name)
    try:
        if kind is bool:
            lowered = text.strip().lower()
            if lowered not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError
            return lowered in ("true", "1", "yes")
        if kind is int:
            value = float(text)
            if value != int(value):
                raise ValueError
            return int(value)
        if kind is float:
            return float(text)
        if typing.get_origin(kind) is tuple:
            return tuple(int(v) for v in text.replace("x", ",").split(",") if v.strip())
        return str(text)
    except ValueError:
        expected = getattr(kind, "__name__", str(kind))
        raise ConfigError(f"option {name!r} expects {expected}, got {text!r}") from None


def validate(instance) -> None:
    """Check every field of a ``Config``/``HParams`` against its declared type and range."""
    cls = type(instance)
    for name, field in options_of(cls).items():
        value = getattr(instance, name)
        if isinstance(value, jax.Array | np.ndarray):
            continue  # swept values are validated one by one before stacking
        kind = _type_of(cls, name)
        meta = field.metadata
        if kind is float and isinstance(value, int | float) and not isinstance(value, bool):
            value = float(value)
        elif kind is int and (isinstance(value, bool) or not isinstance(value, int)):
            raise ConfigError(f"option {name!r} expects int, got {value!r}")
        if kind is float and not math.isfinite(value):
            raise ConfigError(f"option {name!r} must be finite, got {value!r}")
        if meta.get("choices") and value not in meta["choices"]:
            raise ConfigError(f"option {name!r} must be {_describe(field)}, got {value!r}")
        if meta.get("positive") and not value > 0:
            raise ConfigError(f"option {name!r} must be {_describe(field)}, got {value!r}")
        if meta.get("low") is not None and value < meta["low"]:
            raise ConfigError(f"option {name!r} must be {_describe(field)}, got {value!r}")
        if meta.get("high") is not None and value > meta["high"]:
            raise ConfigError(f"option {name!r} must be {_describe(field)}, got {value!r}")


# ----------------------------------------------------------------------------- recipes


def available_recipes() -> list[str]:
    """Recipe names found in the ``recipes`` package."""
    import pkgutil

    package = importlib.import_module(RECIPES_PACKAGE)
    names = [m.name for m in pkgutil.iter_modules(package.__path__) if not m.name.startswith("_")]
    return sorted(n for n in names if hasattr(load_recipe(n), "make"))


def load_recipe(name: str) -> types.ModuleType:
    """Import ``recipes.<name>``; an unknown name is a ConfigError listing the recipes."""
    if not name.isidentifier():
        raise ConfigError(f"unknown recipe {name!r}")
    try:
        return importlib.import_module(f"{RECIPES_PACKAGE}.{name}")
    except ModuleNotFoundError as error:
        if error.name != f"{RECIPES_PACKAGE}.{name}":
            raise
        raise ConfigError(
            f"unknown recipe {name!r}; available: {', '.join(available_recipes())}"
        ) from None


# ----------------------------------------------------------------------------- the run


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
def _compiled(recipe_module, config, env_name: str, chunk: int):
    """One jitted init and one jitted chunk per (recipe, config, env, chunk length)."""
    use_unrolled_threefry()  # same random numbers, faster compiles
    recipe = recipe_module.make(config, env_name)

    def run_chunk(state, hparams):
        return jax.lax.scan(lambda s, _: recipe.update(s, hparams), state, None, length=chunk)

    def strongly_typed_init(key, hparams):  # a restored checkpoint has no weak types: same program
        state = recipe.init(key, hparams)
        return jax.tree.map(lambda x: jax.lax.convert_element_type(x, x.dtype) if eqx.is_array(x) else x, state)

    init = jax.jit(jax.vmap(strongly_typed_init))
    chunk_fn = jax.jit(jax.vmap(run_chunk), donate_argnums=0)
    return recipe, init, chunk_fn


def use_cpu_cores(count: int | None = None, *, members: int | None = None, threads: int | None = None) -> bool:
    """Expose ``count`` CPU cores (default: all this process may use) as separate JAX CPU devices.

    XLA runs one program on one CPU device mostly on one thread: the small matrices of RL
    networks leave the other cores idle. With one device per core the driver shards the members
    (seeds x settings) over the cores, each running its share in parallel (PPO CartPole-v1 at 32
    seeds on 2 cores: 2.2x the env-steps/s; see docs/benchmarks.md). The ``pgkit`` command does
    this by default. Each device runs a smaller batch, so float32 rounding differs from a
    one-device run, and over a run the difference compounds into different (equally valid)
    learning curves: results are reproducible for a given device count, and ``config.json``
    records it (``resume`` warns when it differs). Members are split over the largest number
    of devices that divides them (17 members on 16 devices run on one); pass ``members`` to make
    only that many devices.

    XLA's CPU thread pool gets one thread per device (:func:`xla_cpu_threads`), not one per
    core: XLA otherwise hands a program's independent kernels and parts of its large sums to
    idle cores, which changes some results with the machine's core count (TRPO's Fisher
    products) and, for the small kernels of RL networks, costs more than it gains (PPO CartPole-v1
    at one seed on 2 cores: 1.2x the env-steps/s with one thread). So with ``members=1`` a run
    gets one device and one thread. A single member with wide networks loses the idle cores
    (SAC's 256x256 defaults at one seed: 1.5x slower on 2 cores): pass ``threads`` (at least
    the cores for XLA's own pool of one per core; ``pgkit train --threads``).

    It sets ``--xla_force_host_platform_device_count`` in ``XLA_FLAGS`` and starts JAX's
    backends (XLA reads both once): call it first thing. It does nothing, and returns False, if
    JAX has already started or ``XLA_FLAGS`` already sets a device count (so
    ``XLA_FLAGS=--xla_force_host_platform_device_count=1`` turns it off). GPU devices are not
    affected.
    """
    if count is None:
        count = _usable_cores()
    for name, value in (("count", count), ("members", members), ("threads", threads)):
        if value is not None and value < 1:
            raise ValueError(f"{name} must be a positive number, got {value}")
    if members is not None:
        count = _devices_for(members, count)
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_force_host_platform_device_count" in flags or _jax_started():
        return False
    os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={count}".strip()
    _start_jax_with_threads(threads or count)
    return True


def _start_jax_with_threads(threads: int) -> None:
    """Start JAX's backends with ``threads`` threads in XLA's CPU pool (Linux; elsewhere XLA's default).

    XLA sizes that pool to the cores the process may run on when the backend starts: the
    calling thread is narrowed to ``threads`` cores for that moment, and every thread started
    meanwhile (the pool's) gets the process's cores back, so nothing else is confined.
    """
    narrowed = False
    if hasattr(os, "sched_setaffinity") and Path("/proc/self/task").is_dir():
        allowed = os.sched_getaffinity(0)
        before = set(os.listdir("/proc/self/task"))
        try:
            if threads < len(allowed):
                os.sched_setaffinity(0, sorted(allowed)[:threads])
                narrowed = True
        except OSError:  # not permitted here: XLA's default pool
            pass
    try:
        jax.devices()
    finally:
        if narrowed:
            os.sched_setaffinity(0, allowed)
            for tid in set(os.listdir("/proc/self/task")) - before:
                try:
                    os.sched_setaffinity(int(tid), allowed)
                except OSError:  # the thread has ended
                    pass


def xla_cpu_threads() -> int | None:
    """Threads in XLA's CPU pool in this process (Linux; None where that cannot be read)."""
    try:
        tasks = Path("/proc/self/task").iterdir()
        return sum((task / "comm").read_text().strip() == "tf_XLAEigen" for task in tasks) or None
    except OSError:
        return None


def _jax_started() -> bool:
    """Whether JAX has created its backends (after which XLA_FLAGS is no longer read)."""
    try:
        from jax._src import xla_bridge

        return bool(xla_bridge.backends_are_initialized())
    except (ImportError, AttributeError):  # private API gone: assume started, change nothing
        return True


def _usable_cores() -> int:
    """Cores this process may use: its CPU affinity, capped by a cgroup v2 CPU quota (containers)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, int(int(quota) // int(period))))
    except (OSError, ValueError):
        pass
    return cores


def use_compilation_cache(directory: str | os.PathLike | None = None) -> Path | None:
    """Keep compiled XLA programs on disk, so that a run repeating a configuration skips compiling.

    The directory is ``directory``, else ``$PGKIT_CACHE_DIR``, else ``~/.cache/pgkit/xla``;
    ``PGKIT_CACHE_DIR=""`` turns the cache off (returns None). JAX keys each entry by the
    program, the devices and the compiler flags, so a stale entry is never used; programs that
    compile in under a second are not stored. The ``pgkit`` command calls this.
    """
    if directory is None:
        directory = os.environ.get("PGKIT_CACHE_DIR", str(Path.home() / ".cache" / "pgkit" / "xla"))
    if not str(directory):
        return None
    directory = Path(directory).expanduser()
    jax.config.update("jax_compilation_cache_dir", str(directory))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
    return directory


def use_unrolled_threefry(enable: bool = True) -> bool:
    """Lower JAX's threefry random-bit hash on the CPU as straight-line code (``False``: restore).

    On the CPU, JAX lowers every threefry call (each ``split``, ``normal``, ``categorical``...) to
    a 5-iteration while loop; an RL update draws keys at many places, and XLA compiles each
    loop separately. The unrolled form is the one JAX itself uses on GPUs: the same 20 rounds of
    the same uint32 arithmetic, so every random number is bit-identical (tested), and a PPO
    program compiles about 20% faster (docs/benchmarks.md). The driver (:func:`train`,
    :func:`resume`) turns it on, again each time it builds a program; call it yourself to get
    the same for your own programs. JAX registers this rule out of line on GPUs; here it is
    inlined, which is what was measured.
    Programs already compiled keep their lowering. It needs a private JAX hook; where that is
    gone it does nothing and returns False. From jaxlib 0.11 on it also does nothing and returns
    False: that XLA's LLVM takes minutes (exponential time in its loop vectoriser) over the
    unrolled hash, where JAX's own loop compiles in seconds (PPO CartPole: a 10-minute compile
    of the init, against 4.9 s for the whole run, jaxlib 0.11.2).
    """
    if enable and not _unrolled_threefry_compiles_fast(_jaxlib_version()):
        return False
    try:
        from jax._src.interpreters import mlir
        from jax._src.random import threefry2x32 as threefry

        rule = threefry._threefry2x32_lowering_rule if enable else threefry._threefry2x32_cpu_lowering_rule
        mlir.register_lowering(threefry.threefry2x32_p, rule, platform="cpu")
    except (ImportError, AttributeError):
        return False
    return True


def _jaxlib_version() -> tuple[int, ...]:
    import jaxlib.version

    return tuple(int(part) for part in re.findall(r"\d+", jaxlib.version.__version__)[:3])


def _unrolled_threefry_compiles_fast(jaxlib_version: tuple[int, ...]) -> bool:
    """Whether XLA compiles the unrolled threefry quickly: measured up to jaxlib 0.10, not from 0.11."""
    return jaxlib_version < (0, 11)


def _shard_members(tree, num_members: int):
    """Place every leaf (leading axis: members) split over the devices (no-op on one device).

    Leaves that do not depend on the keys (zero biases, optimiser counters) would otherwise come
    out of a sharded init replicated, and the chunk program would be compiled for that mix.
    """
    sharding = _member_sharding(num_members)
    return tree if sharding is None else jax.device_put(tree, sharding)


def _devices_used(num_members: int) -> int:
    sharding = _member_sharding(num_members)
    return 1 if sharding is None else len(sharding.device_set)


def _devices_for(num_members: int, available: int) -> int:
    """The most devices, up to ``available``, that split ``num_members`` evenly."""
    return max(d for d in range(1, available + 1) if num_members % d == 0)


def _member_sharding(num_members: int):
    """Members split evenly over as many devices as divide their number (None: one device)."""
    devices = jax.devices()
    count = _devices_for(num_members, len(devices))
    if count == 1:
        return None
    mesh = jax.sharding.Mesh(np.array(devices[:count]), ("members",))
    return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("members"))


def _chunk_length(num_updates: int, requested: int | None) -> int:
    if requested is not None:
        if requested < 1:
            raise ConfigError(f"option 'chunk' must be >= 1, got {requested}")
        return min(requested, num_updates)
    # about 20 progress lines, with a chunk that divides the run (no second compilation)
    target = max(1, num_updates // 20)
    divisors = [k for k in range(max(1, (target + 1) // 2), 2 * target + 1) if num_updates % k == 0]
    return min(divisors, key=lambda k: abs(math.log(k / target))) if divisors else target


class _Run:
    """Everything one run needs, rebuilt identically from ``config.json`` on resume."""

    def __init__(self, spec: dict, run_dir: Path | None, log: Callable[[str], None]):
        self.spec, self.run_dir, self.log = spec, run_dir, log
        self.module = load_recipe(spec["recipe"])
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
        self.chunk = _chunk_length(self.num_updates, spec.get("chunk"))
        spec["chunk"] = self.chunk
        self.num_members = len(self.settings) * self.seeds

    def member_inputs(self):
        seed_keys = jax.random.split(jax.random.PRNGKey(self.spec["seed"]), self.seeds)
        keys = jnp.tile(seed_keys, (len(self.settings), 1))
        hparams = jax.tree.map(
            lambda *xs: jnp.repeat(jnp.asarray(xs, dtype=jnp.float32), self.seeds), *self.settings
        )
        return _shard_members((keys, hparams), self.num_members)

    def functions(self, length: int):
        return _compiled(self.module, self.config, self.spec["env"], length)

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
    compiles and runs the init, using both cores (PPO CartPole, one seed: init + chunk compile
    5.2 s -> 4.6 s on 2 cores). The benchmarks time the same path.
    """
    shapes = jax.eval_shape(init, keys, member_hparams)
    sharding = _member_sharding(num_members)
    if sharding is not None:
        shapes = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), shapes)
    lowered = chunk_fn.lower(shapes, member_hparams)
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="pgkit-compile")
    future = pool.submit(lowered.compile)
    pool.shutdown(wait=False)
    return future


def _start_members(recipe_module, config, env_name: str, chunk: int, hparams, num_members: int, seed: int = 0):
    """The driver's start for ``num_members`` copies of ``hparams`` (seeds ``split(PRNGKey(seed))``).

    Members placed over the devices as the driver places them, the chunk compiled on a thread
    while the init compiles and runs. Returns ``(state, member_hparams, compiled_chunk)``; the
    benchmarks (bench/throughput.py, bench/peers/pgkit_runner.py) time this path.
    """
    _, init, chunk_fn = _compiled(recipe_module, config, env_name, chunk)
    keys = jax.random.split(jax.random.PRNGKey(seed), num_members)
    member_hparams = jax.tree.map(lambda x: np.full((num_members,), x, np.float32), hparams)
    keys, member_hparams = _shard_members((keys, member_hparams), num_members)
    compiling = _compile_in_background(chunk_fn, init, keys, member_hparams, num_members)
    state = jax.block_until_ready(_shard_members(init(keys, member_hparams), num_members))
    return state, member_hparams, compiling.result()


def _from_json(value):
    return tuple(value) if isinstance(value, list) else value


def _to_json(value):
    return list(value) if isinstance(value, tuple) else value


def train(
    recipe: str,
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
      recipe: recipe name (``pgkit.experiment.available_recipes()``).
      env: gymnax environment name; the recipe's ``DEFAULT_ENV`` if omitted.
      seeds: seeds per setting. ``seed``: the master seed.
      config: static options (``recipes.<name>.Config`` fields) overriding defaults.
      hparams: float hyperparameters (``recipes.<name>.HParams`` fields) overriding defaults.
      sweep: ``{hyperparameter: [values]}``; the grid is their cartesian product.
      out: run directory for config, metrics, plot and checkpoints (nothing written if None).
      chunk: updates per compiled chunk (default: about 20 chunks, dividing the run).
      stop_after_chunks: stop early after this many chunks (simulates an interruption).
      log: where progress lines go (``None`` for silence).

    Returns:
      ``RunResult(state, metrics, run_dir, summary)``: final state with a leading member
      axis, ``{metric: [members, updates]}`` host arrays, and per-setting summaries.
    """
    module = load_recipe(recipe)
    config = dict(config or {})
    hparams = dict(hparams or {})
    for name in config:
        if name not in options_of(module.Config):
            raise ConfigError(f"unknown option {name!r} for recipe {recipe!r}; available: {', '.join(options_of(module.Config))}")
    for name in hparams:
        if name not in options_of(module.HParams):
            raise ConfigError(f"unknown option {name!r} for recipe {recipe!r}; available: {', '.join(options_of(module.HParams))}")
    base_config = module.Config(**config)
    base_hparams = module.HParams(**hparams)
    spec = {
        "recipe": recipe,
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
        if (run_dir / "progress.json").exists():
            raise ConfigError(f"run directory {str(run_dir)!r} already holds a run; use 'pgkit resume {run_dir}' or another --out")
    run = _Run(spec, run_dir, log or (lambda _: None))
    spec["devices"] = _devices_used(run.num_members)  # results are reproducible per device count
    spec["xla_cpu_threads"] = xla_cpu_threads()  # and per thread count of XLA's CPU pool (TRPO)
    if run_dir is not None:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.json").write_text(json.dumps(spec, indent=2) + "\n")
    keys, member_hparams = run.member_inputs()
    _, init, _ = run.functions(run.chunk)
    t_compile = time.perf_counter()
    first_chunk = run.compile_first_chunk(keys, member_hparams, 0)
    state = _shard_members(init(keys, member_hparams), run.num_members)
    return _loop(run, state, member_hparams, start=0, metrics=None, stop_after_chunks=stop_after_chunks,
                 first_chunk=first_chunk, t_compile=t_compile)


def resume(run_dir, *, stop_after_chunks: int | None = None, log: Callable[[str], None] | None = print) -> RunResult:
    """Continue an interrupted run from its last checkpoint (same key stream, same result)."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.json").exists():
        raise ConfigError(f"run directory {str(run_dir)!r} not found or holds no config.json")
    spec = json.loads((run_dir / "config.json").read_text())
    run = _Run(spec, run_dir, log or (lambda _: None))
    used = _devices_used(run.num_members)
    if spec.get("devices", used) != used:
        warnings.warn(
            f"run {str(run_dir)!r} was started with its members on {spec['devices']} device(s) and resumes on "
            f"{used}: the continuation is not bit-identical to an uninterrupted run (set XLA_FLAGS="
            f"--xla_force_host_platform_device_count={spec['devices']} before JAX starts to match)",
            stacklevel=2,
        )
    threads = xla_cpu_threads()
    if None not in (spec.get("xla_cpu_threads"), threads) and spec["xla_cpu_threads"] != threads:
        warnings.warn(
            f"run {str(run_dir)!r} was started with {spec['xla_cpu_threads']} thread(s) in XLA's CPU pool and "
            f"resumes with {threads}: some results (large sums) may round differently from an uninterrupted run",
            stacklevel=2,
        )
    keys, member_hparams = run.member_inputs()
    _, init, _ = run.functions(run.chunk)
    progress_path = run_dir / "progress.json"
    start = json.loads(progress_path.read_text())["updates_done"] if progress_path.exists() else 0
    t_compile = time.perf_counter()
    first_chunk = run.compile_first_chunk(keys, member_hparams, start)
    if not progress_path.exists():  # interrupted before the first checkpoint: start over
        state = _shard_members(init(keys, member_hparams), run.num_members)
    else:
        state = _read_checkpoint(run_dir, jax.eval_shape(init, keys, member_hparams), spec)
        state = _shard_members(jax.device_put(state), run.num_members)
    metrics = _read_metric_arrays(run, start)
    return _loop(run, state, member_hparams, start=start, metrics=metrics, stop_after_chunks=stop_after_chunks,
                 first_chunk=first_chunk, t_compile=t_compile)


def _read_checkpoint(run_dir: Path, template, spec: dict):
    """The state saved in ``run_dir``, shaped as ``template``; one that does not fit is a ConfigError."""
    try:
        return eqx.tree_deserialise_leaves(run_dir / "checkpoint.eqx", template)
    except (RuntimeError, ValueError) as error:  # equinox: a leaf changed shape, dtype or kind
        written = spec.get("pgkit_version", "0.1.0")
        raise ConfigError(
            f"checkpoint {str(run_dir / 'checkpoint.eqx')!r} does not fit the {spec['recipe']!r} state of pgkit "
            f"{pgkit.__version__} (it was written by pgkit {written}; retrain with this version): {error}"
        ) from None


def _metric_path(run):
    return run.run_dir / "metrics.csv"


def _read_metric_arrays(run, updates_done: int):
    """Metrics already on disk, truncated to ``updates_done`` (drops a half-written chunk)."""
    path = _metric_path(run)
    if updates_done == 0 or not path.exists():
        if path.exists():
            path.unlink()
        return None
    with path.open() as f:
        reader = csv.DictReader(f)
        rows = [r for r in reader if int(r["update"]) < updates_done]
        header = reader.fieldnames
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=header)
        writer.writeheader()
        writer.writerows(rows)
    skip = {"label", "setting", "seed", "update", "env_steps", *options_of(run.module.HParams)}
    names = [h for h in header if h not in skip]
    metrics = {n: np.full((run.num_members, updates_done), np.nan) for n in names}
    for r in rows:
        member = int(r["setting"]) * run.seeds + int(r["seed"])
        for n in names:
            metrics[n][member, int(r["update"])] = np.float32(r[n])
    return metrics


def _append_csv(run, metrics_chunk: dict, first_update: int, steps_per_update: int):
    path = _metric_path(run)
    hp_names = list(options_of(run.module.HParams))
    names = list(metrics_chunk)
    header = ["label", "setting", "seed", "update", "env_steps", *hp_names, *names]
    new = not path.exists()
    length = next(iter(metrics_chunk.values())).shape[1]
    with path.open("a", newline="") as f:
        writer = csv.writer(f)
        if new:
            writer.writerow(header)
        for member in range(run.num_members):
            g, s = divmod(member, run.seeds)
            setting = run.settings[g]
            label = _label(setting, run.sweep)
            hp_values = [f"{getattr(setting, n):g}" for n in hp_names]
            for i in range(length):
                u = first_update + i
                row = [label, g, s, u, (u + 1) * steps_per_update, *hp_values]
                # float32 metrics: 9 significant digits round-trip exactly (resume reads them back)
                row += [f"{float(metrics_chunk[n][member, i]):.9g}" for n in names]
                writer.writerow(row)


def _check_finite(metrics_chunk: dict, first_update: int):
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


def _write_checkpoint(run, state, updates_done: int, wall: float):
    path = run.run_dir / "checkpoint.eqx"
    tmp = path.with_suffix(".tmp")
    eqx.tree_serialise_leaves(tmp, jax.device_get(state))
    os.replace(tmp, path)
    progress = {"updates_done": updates_done, "num_updates": run.num_updates, "wall_seconds": wall}
    tmp = run.run_dir / "progress.tmp"
    tmp.write_text(json.dumps(progress) + "\n")
    os.replace(tmp, run.run_dir / "progress.json")


def _loop(
    run: _Run, state, member_hparams, *, start: int, metrics, stop_after_chunks, first_chunk, t_compile: float
) -> RunResult:
    recipe, _, chunk_fn = run.functions(run.chunk)
    steps_per_update = recipe.env_steps_per_update
    total_steps = run.num_updates * steps_per_update
    collected = [] if metrics is None else [metrics]
    threads = xla_cpu_threads() if jax.default_backend() == "cpu" else None
    run.log(
        f"pgkit: {run.spec['recipe']} on {run.spec['env']}: {len(run.settings)} setting(s) x {run.seeds} seed(s), "
        f"{total_steps:,} env steps each, {run.num_updates} updates in chunks of {run.chunk}, "
        f"members on {_devices_used(run.num_members)} of {len(jax.devices())} {jax.default_backend()} device(s)"
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
        _check_finite(chunk_metrics, u)
        # copied before the next chunk takes over (donates) the state's buffers
        host_state = jax.device_get(state) if run.run_dir is not None else None
        first_update, u, chunks = u, u + length, chunks + 1
        # the next chunk runs while this one's results are written
        in_flight = launch(u, state) if more(u, chunks) else None
        collected.append(chunk_metrics)
        if run.run_dir is not None:
            _append_csv(run, chunk_metrics, first_update, steps_per_update)
            _write_checkpoint(run, host_state, u, time.perf_counter() - t_start)
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
            (run.run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
            png = plot.plot_runs([run.run_dir], run.run_dir / "learning_curve.png")
            run.log(f"wrote {run.run_dir / 'metrics.csv'}, {png}, {run.run_dir / 'checkpoint.eqx'}")
    elif run.run_dir is not None:
        run.log(f"stopped at update {u}/{run.num_updates}; continue with: pgkit resume {run.run_dir}")
    return RunResult(state, metrics, run.run_dir, summary)


def _summarise(run: _Run, metrics) -> list[dict]:
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


# ----------------------------------------------------------------------------- evaluation


def evaluate(run_dir, *, episodes: int = 10, seed: int = 0, log: Callable[[str], None] | None = print) -> np.ndarray:
    """Greedy evaluation of every member's final policy: ``[members, episodes]`` returns."""
    run_dir = Path(run_dir)
    if not (run_dir / "progress.json").exists():
        raise ConfigError(f"run directory {str(run_dir)!r} not found or holds no checkpoint")
    if episodes < 1:
        raise ConfigError(f"option 'episodes' must be >= 1, got {episodes}")
    spec = json.loads((run_dir / "config.json").read_text())
    run = _Run(spec, run_dir, log or (lambda _: None))
    keys, member_hparams = run.member_inputs()
    recipe, init, _ = run.functions(run.chunk)
    state = _read_checkpoint(run_dir, jax.eval_shape(init, keys, member_hparams), spec)
    eval_env = recipe.env.with_num_envs(episodes)
    max_steps = int(eval_env.env_params.max_steps_in_episode)

    def one_member(member_state, key):
        reset_key, key = jax.random.split(key)
        # frozen observation statistics of the training environment, if the recipe has them
        training_env = getattr(member_state, "env_state", None)
        normalization = getattr(training_env, "normalization", None)
        env_state, obs = eval_env.reset(reset_key, normalization=normalization, training=False)

        def step(carry, key):
            env_state, obs, total, alive = carry
            act_key, step_key = jax.random.split(key)
            actions = recipe.act(member_state, act_key, obs)
            env_state, out = eval_env.step(step_key, env_state, actions, training=False)
            done = out.terminated | out.truncated
            total = jnp.where(alive & done, out.episode_return, total)
            return (env_state, out.obs, total, alive & ~done), None

        init_carry = (env_state, obs, jnp.zeros(episodes), jnp.ones(episodes, bool))
        (_, _, total, _), _ = jax.lax.scan(step, init_carry, jax.random.split(key, max_steps))
        return total

    member_keys = jax.random.split(jax.random.PRNGKey(seed), run.num_members)
    returns = np.asarray(jax.jit(jax.vmap(one_member))(state, member_keys))
    for g, setting in enumerate(run.settings):
        values = returns[g * run.seeds : (g + 1) * run.seeds]
        (log or (lambda _: None))(
            f"eval [{_label(setting, run.sweep)}]: mean return {values.mean():.2f} over "
            f"{run.seeds} seed(s) x {episodes} episode(s) (min {values.min():.2f}, max {values.max():.2f})"
        )
    return returns

