"""The recipe protocol: what an algorithm hands to pgkit's experiment driver.

A recipe is any Python module with

- ``Config``: a frozen dataclass of static options (shapes, counts, mode switches), each field
  an :func:`option`;
- ``HParams``: a :func:`hyperparameters` class of float options, traced and vmappable, so one
  compiled program trains a whole sweep;
- ``make(config, env_name) -> Recipe``: the pure functions of the algorithm;
- ``DEFAULT_ENV``: the environment it trains on when none is named;
- optionally ``NAME`` and ``DESCRIPTION`` (else the module's name and first docstring line).

It imports this module, never the driver; the driver (``pgkit.experiment``) knows recipes only
through it. Built-in recipes and a researcher's own module are run the same way::

    import my_algo                             # follows the protocol
    pgkit.experiment.train(my_algo, seeds=4, sweep={"lr": [1e-3, 3e-4]}, out="runs/x")
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any, Callable, NamedTuple

import jax
import numpy as np

__all__ = [
    "ConfigError",
    "DATA_AXIS",
    "Recipe",
    "ActorLearner",
    "shard_mean",
    "shard_key",
    "option",
    "hyperparameters",
    "options_of",
    "describe",
    "parse_option",
    "validate",
    "check_recipe_module",
]


class ConfigError(ValueError):
    """A bad option value or request; the message names the option and what is allowed."""


DATA_AXIS = "data"  # the named axis over which a data-parallel recipe's shards of one member average


def shard_mean(tree, data_shards: int):
    """The mean over a member's data shards (``jax.lax.pmean`` over :data:`DATA_AXIS`) of every leaf.

    With ``data_shards`` 1 it returns ``tree`` untouched. Call it where every shard must agree:
    on gradients before the optimiser step, on statistics that decide (a KL early stop), on
    reported metrics.
    """
    return jax.lax.pmean(tree, DATA_AXIS) if data_shards > 1 else tree


def shard_key(key, data_shards: int):
    """This shard's own key, ``fold_in(key, shard index)``, for its environments and minibatches.

    With ``data_shards`` 1 it returns ``key``, so a recipe's one-shard random numbers are those
    it drew before it had shards.
    """
    return jax.random.fold_in(key, jax.lax.axis_index(DATA_AXIS)) if data_shards > 1 else key


class Recipe(NamedTuple):
    """The pure functions a recipe's ``make`` returns (the driver vmaps and scans them).

    Attributes:
      init: ``(key, hparams) -> state``; the state holds the PRNG key stream.
      update: ``(state, hparams) -> (state, metrics)``: one iteration of the algorithm box;
        ``metrics`` maps names to scalars and includes ``episode_return`` (mean undiscounted
        return of the episodes completed in this update, the last known value if none).
      act: ``(state, key, obs [E, obs_size]) -> actions [E, ...]``, the evaluation policy.
      env: the training ``pgkit.envs.VecEnv``.
      env_steps_per_update: environment steps of one member in one update.
      num_updates: updates in a whole run.
      data_shards: ``D > 1`` makes the recipe data-parallel: ``init`` and ``update`` run once
        per shard of a member, under the named axis :data:`DATA_AXIS` (``jax.lax.axis_index``
        gives the shard, ``jax.lax.pmean`` averages gradients and statistics over the shards),
        each shard with its own part of the member's environments. The state gets a ``[D]``
        axis after the member axis, the metrics are shard 0's (the recipe makes them equal),
        and ``act`` gets shard 0's state. The driver places the shards on ``D`` devices when it
        has them (``shard_map``), else vmaps them on one, with the same arithmetic.
      actor_learner: an :class:`ActorLearner` runs the recipe on free-running actor threads
        (not bit-reproducible: arrival order varies); None (the default) runs ``update``.
    """

    init: Callable
    update: Callable
    act: Callable
    env: Any
    env_steps_per_update: int
    num_updates: int
    data_shards: int = 1
    actor_learner: ActorLearner | None = None


class ActorLearner(NamedTuple):
    """A recipe's ``update`` split into an actor's half and the learner's half, to run free.

    A recipe that sets ``Recipe.actor_learner`` is run by the driver with ``num_actors`` actor
    threads and a learner (:mod:`pgkit.experiment.asynchronous`): each actor repeatedly takes the
    latest parameters the learner has published, rolls out its own environments with them and
    puts the message on a queue of ``queue_size``; the learner applies one update per
    message it takes, in arrival order. ``Recipe.update`` stays the deterministic schedule the
    halves are tested against; it is what ``pgkit.recipe`` recipes without this field run.
    Functions are per member (the runner vmaps and jits them):

    Attributes:
      num_actors: actor threads, each owning one actor part of the state.
      actor_part: ``(state, i) -> part``: actor ``i``'s own slice (its environments, its key).
      act: ``(part, params, hparams) -> (part, message)``: one rollout with ``params``; the
        message is the trajectory, or what the actor computed from it (A3C: its gradient too,
        so the actors' threads take the gradients' cost and the learner only applies them).
      learn: ``(state, params, message, staleness, hparams) -> (state, metrics)``: one
        update from a message made with ``params``, ``staleness`` (int32) updates old.
      params: ``state -> params``: the parameters the actors act with.
      with_actors: ``(state, parts) -> state``: the actors' parts written back (a list of A).
      max_staleness: trajectories staler than this are dropped (``drop_stale``) or used.
      drop_stale: whether to drop them.
      queue_size: trajectories waiting at most; a full queue blocks the actors.
    """

    num_actors: int
    actor_part: Callable
    act: Callable
    learn: Callable
    params: Callable
    with_actors: Callable
    max_staleness: int
    drop_stale: bool
    queue_size: int


def option(default, help: str, *, low=None, high=None, choices=None, positive=False):
    """A documented, validated dataclass field for a recipe's ``Config`` or ``HParams``.

    ``low``/``high`` are inclusive bounds, ``positive`` means ``> 0``, ``choices`` lists the
    allowed values; :func:`validate` checks them and ``pgkit list`` prints them with ``help``.
    """
    meta = {"help": help, "low": low, "high": high, "choices": choices, "positive": positive}
    return dataclasses.field(default=default, metadata=meta)


def hyperparameters(cls):
    """Frozen dataclass whose fields are pytree leaves (traced floats, vmappable)."""
    cls = dataclasses.dataclass(frozen=True)(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    return jax.tree_util.register_dataclass(cls, data_fields=names, meta_fields=[])


def options_of(cls) -> dict[str, dataclasses.Field]:
    """The fields of a ``Config`` or ``HParams`` class by name, in declaration order."""
    return {f.name: f for f in dataclasses.fields(cls)}


def describe(field: dataclasses.Field) -> str:
    """What an option allows, in words: ``"one of a, b"``, ``"> 0 and <= 1"``, ``"any value"``."""
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
    """Parse ``text`` into the declared type of ``cls.name`` (int, float, bool, str, tuple of ints)."""
    fields = options_of(cls)
    if name not in fields:
        raise ConfigError(f"unknown option {name!r}; available: {', '.join(fields)}")
    kind = typing.get_type_hints(cls)[name]
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
            return tuple(int(v) for v in text.strip("()[] ").replace("x", ",").split(",") if v.strip())
        return str(text)
    except ValueError:
        expected = "integers, as 64,64 or 64x64" if typing.get_origin(kind) is tuple else getattr(kind, "__name__", str(kind))
        raise ConfigError(f"option {name!r} expects {expected}, got {text!r}") from None


def validate(instance) -> None:
    """Check every field of a ``Config``/``HParams`` against its declared type and range."""
    cls = type(instance)
    hints = typing.get_type_hints(cls)
    for name, field in options_of(cls).items():
        value = getattr(instance, name)
        if isinstance(value, jax.Array | np.ndarray):
            continue  # swept values are validated one by one before stacking
        kind, meta = hints[name], field.metadata
        if kind is float and isinstance(value, int | float) and not isinstance(value, bool):
            value = float(value)
        elif kind is int and (isinstance(value, bool) or not isinstance(value, int)):
            raise ConfigError(f"option {name!r} expects int, got {value!r}")
        if kind is float and not math.isfinite(value):
            raise ConfigError(f"option {name!r} must be finite, got {value!r}")
        if kind is int and abs(value) > np.iinfo(jax.dtypes.canonicalize_dtype(np.int64)).max:
            largest = np.iinfo(jax.dtypes.canonicalize_dtype(np.int64)).max
            raise ConfigError(
                f"option {name!r} = {value} is too large for the device's integers (at most {largest:,}"
                + (" unless jax_enable_x64 is set)" if largest < 2**62 else ")")
            )
        allowed = (
            (not meta.get("choices") or value in meta["choices"])
            and (not meta.get("positive") or value > 0)
            and (meta.get("low") is None or value >= meta["low"])
            and (meta.get("high") is None or value <= meta["high"])
        )
        if not allowed:
            raise ConfigError(f"option {name!r} must be {describe(field)}, got {value!r}")


def check_recipe_module(module: types.ModuleType) -> types.ModuleType:
    """``module`` itself if it follows the protocol, else a ConfigError saying what it lacks."""
    where = getattr(module, "__file__", None) or module.__name__
    missing = [
        name
        for name, ok in (
            ("make", callable(getattr(module, "make", None))),
            ("Config", dataclasses.is_dataclass(getattr(module, "Config", None))),
            ("HParams", dataclasses.is_dataclass(getattr(module, "HParams", None))),
            ("DEFAULT_ENV", isinstance(getattr(module, "DEFAULT_ENV", None), str)),
        )
        if not ok
    ]
    if missing:
        raise ConfigError(
            f"{where!r} is not a recipe: it lacks {', '.join(missing)} (a recipe module defines make, "
            "Config, HParams and DEFAULT_ENV; see pgkit.recipe)"
        )
    return module
