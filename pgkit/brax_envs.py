"""Brax's environments behind the gymnax ``Environment`` API (optional: ``pip install pgkit[brax]``).

:func:`pgkit.envs.make` builds them by name, as it builds gymnax's, so every recipe trains on
them unchanged::

    env = pgkit.envs.make("ant-brax", num_envs=16)          # or: pgkit train sac --env ant-brax

A name is ``TASK-brax`` for each of Brax's tasks (:data:`registered_envs`: ant, halfcheetah,
hopper, humanoid, ...). The adapter keeps apart what Brax's own training wrappers merge into one
``done``: a **terminated** step is Brax's natural end (the ant falls over, the hopper is
unhealthy), a **truncated** step reached ``max_steps_in_episode`` (1000 by default, Brax's
episode length), and gymnax's auto-reset gives the true last observation of an ended episode in
``info["final_observation"]`` (``EnvStep.final_obs``), so critics bootstrap a truncated episode
from the state it really reached. Actions are Brax's, in [-1, 1]. The backend is Brax's default
physics pipeline (MuJoCo XLA, which runs on the CPU); ``backend=`` as a keyword of
:func:`pgkit.envs.make` picks another (``"spring"``, ``"positional"``, ``"generalized"``).

Brax is imported only when such an environment is built; without it :func:`make` raises
``ImportError`` naming the extra. The module knows nothing of pgkit's wrappers: :func:`make`
returns ``(environment, params)`` as ``gymnax.make`` does.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import struct
from gymnax.environments import environment, spaces

__all__ = ["BraxEnvironment", "BraxParams", "BraxState", "make", "registered_envs", "require"]

_TASKS = (
    "ant", "halfcheetah", "hopper", "humanoid", "humanoidstandup", "inverted_pendulum",
    "inverted_double_pendulum", "pusher", "reacher", "swimmer", "walker2d",
)
SUFFIX = "-brax"

registered_envs: tuple[str, ...] = tuple(task + SUFFIX for task in _TASKS)
"""Names :func:`make` builds (``pgkit.envs.available_envs`` lists them after gymnax's)."""


@struct.dataclass
class BraxState(environment.EnvState):
    """Brax's state of one environment and the elapsed episode time.

    Attributes:
      brax: the ``brax.envs.State`` (physics state, observation, reward, done, metrics).
      time: steps taken in this episode (int32).
    """

    brax: Any


@struct.dataclass
class BraxParams(environment.EnvParams):
    """``max_steps_in_episode``: the time limit at which an episode is truncated (Brax's 1000)."""

    max_steps_in_episode: int = 1000


class BraxEnvironment(environment.Environment):
    """One Brax task as a gymnax environment: ``terminated`` is Brax's ``done``, truncation by time.

    Build with :func:`make` (or :func:`pgkit.envs.make` by name). ``brax_env`` is the
    ``brax.envs.Env`` stepped; its own wrappers (episode length, auto-reset) are not used:
    gymnax's ``step`` resets and :class:`BraxParams` sets the time limit.
    """

    def __init__(self, task: str, brax_env):
        super().__init__()
        self.task, self.brax_env = task, brax_env

    @property
    def name(self) -> str:
        return self.task + SUFFIX

    @property
    def default_params(self) -> BraxParams:
        return BraxParams()

    def reset_env(self, key: jax.Array, params: BraxParams):
        state = self.brax_env.reset(key)
        return state.obs, BraxState(time=jnp.int32(0), brax=state)

    def step_env(self, key: jax.Array, state: BraxState, action: jax.Array, params: BraxParams):
        del key  # Brax's dynamics are deterministic
        brax_state = self.brax_env.step(state.brax, jnp.asarray(action, jnp.float32))
        state = BraxState(time=state.time + 1, brax=brax_state)
        return brax_state.obs, state, brax_state.reward, self.is_terminated(state, params), {}

    def is_terminated(self, state: BraxState, params: BraxParams) -> jax.Array:
        return state.brax.done > 0.5

    def action_space(self, params: BraxParams):
        return spaces.Box(-1.0, 1.0, (self.brax_env.action_size,), jnp.float32)

    def observation_space(self, params: BraxParams):
        return spaces.Box(-jnp.inf, jnp.inf, (self.brax_env.observation_size,), jnp.float32)


def require(name: str):
    """``brax.envs``, imported; ``ImportError`` naming the extra (``pgkit[brax]``) for ``name`` without it."""
    try:
        from brax import envs as brax_envs
    except ImportError as error:
        raise ImportError(
            f"environment {name!r} needs Brax, which is not installed ({error}): pip install 'pgkit[brax]'"
        ) from None
    return brax_envs


def make(name: str, *, backend: str | None = None, **brax_kwargs: Any):
    """Build the Brax task ``name`` (``TASK-brax``) and its default parameters, as ``gymnax.make`` does.

    Args:
      name: one of :data:`registered_envs`.
      backend: Brax's physics pipeline; ``None`` for the task's default.
      **brax_kwargs: forwarded to ``brax.envs.get_environment`` (for example
        ``terminate_when_unhealthy=False`` for ant).

    Returns:
      ``(environment, params)``.

    Raises:
      ValueError: ``name`` is not a registered Brax task.
      ImportError: Brax is not installed (install the extra: ``pip install pgkit[brax]``).
    """
    if name not in registered_envs:
        raise ValueError(f"name must be one of the Brax environments {list(registered_envs)}, got {name!r}")
    brax_envs = require(name)
    task = name[: -len(SUFFIX)]
    if backend is not None:
        brax_kwargs["backend"] = backend
    return BraxEnvironment(task, brax_envs.get_environment(task, **brax_kwargs)), BraxParams()
