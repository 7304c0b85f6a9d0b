"""Small tabular environments (the gymnax ``Environment`` API) whose observation is a state index.

gymnax's own chains (``MemoryChain-bsuite``, ``UmbrellaChain-bsuite``, ``DiscountingChain-bsuite``,
``DeepSea-bsuite``) observe float feature vectors, not a discrete state; the one gymnax
environment with a ``Discrete`` observation space is ``FrozenLake-misc``. This module adds a
chain with a ``Discrete`` observation space, for tabular methods (``pgkit.tabular_cem_update``,
the CEM recipe's ``variant="tabular"``). :func:`pgkit.envs.make` builds these by name, as it
builds gymnax's::

    env = pgkit.envs.make("Chain-pgkit", num_envs=8)       # or: pgkit train cem --env Chain-pgkit

The module knows nothing of pgkit's wrappers: :func:`make` returns ``(environment, params)``
as ``gymnax.make`` does.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import struct
from gymnax.environments import environment, spaces

__all__ = ["Chain", "ChainParams", "ChainState", "make", "registered_envs"]


@struct.dataclass
class ChainState(environment.EnvState):
    """The agent's position on the chain and the elapsed episode time.

    Attributes:
      position: int32 scalar in ``[0, length]`` (``length`` is the goal).
      time: steps taken in this episode.
    """

    position: jax.Array


@struct.dataclass
class ChainParams(environment.EnvParams):
    """Episode limit (an episode of the chain lasts at most ``length`` steps anyway).

    Attributes:
      max_steps_in_episode: truncation limit.
    """

    max_steps_in_episode: int = 100


class Chain(environment.Environment[ChainState, ChainParams]):
    """A chain of ``length`` states where one action per state moves on and any other ends the episode.

    States s = 0 .. L−1 (start at 0) and the goal L. In state s the correct action is
    c(s) = s mod |A|: it moves to s + 1 with reward 1 (the goal, s + 1 = L, terminates). Any
    other action terminates the episode with reward 0. The return of an episode is the number
    of states passed, in ``[0, L]``; only the policy that takes c(s) in every state reaches L,
    and a uniformly random policy does so with probability |A|^−L. The correct action changes
    from state to state, so no state-independent policy solves it: the chain needs a table.

    The observation is the position, an int32 scalar (``Discrete(L + 1)``: the goal is
    observed only as the final observation of a successful episode).

    Args:
      length: L ≥ 1, the number of decisions to get right.
      num_actions: |A| ≥ 2.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> env, params = pgkit.tabular_envs.make("Chain-pgkit", length=3)
      >>> obs, state = env.reset(jax.random.key(0), params)
      >>> obs, state, reward, terminated, truncated, info = env.step(jax.random.key(1), state, 0, params)
      >>> int(obs), float(reward), bool(terminated)
      (1, 1.0, False)
      >>> obs, state, reward, terminated, truncated, info = env.step(jax.random.key(2), state, 0, params)
      >>> int(info["final_observation"]), float(reward), bool(terminated)   # c(1) = 1: the episode ends
      (1, 0.0, True)
    """

    def __init__(self, length: int = 10, num_actions: int = 2):
        if not isinstance(length, int) or length < 1:
            raise ValueError(f"length must be an int >= 1, got {length!r}")
        if not isinstance(num_actions, int) or num_actions < 2:
            raise ValueError(f"num_actions must be an int >= 2, got {num_actions!r}")
        self.length = length
        self.n_actions = num_actions

    @property
    def default_params(self) -> ChainParams:
        """A time limit above the chain's length (episodes end by termination)."""
        return ChainParams(max_steps_in_episode=max(100, self.length + 1))

    @property
    def name(self) -> str:
        """The name :func:`pgkit.envs.make` knows it by."""
        return "Chain-pgkit"

    @property
    def num_actions(self) -> int:
        """|A|."""
        return self.n_actions

    def correct_actions(self) -> jax.Array:
        """c(s) = s mod |A| for s = 0 .. L−1, int32 ``[L]``: the one policy that reaches the goal."""
        return jnp.arange(self.length, dtype=jnp.int32) % self.n_actions

    def step_env(self, key: jax.Array, state: ChainState, action, params: ChainParams):
        """One transition before gymnax's auto-reset."""
        del key
        correct = jnp.asarray(action, jnp.int32) == state.position % self.n_actions
        position = jnp.where(correct, state.position + 1, state.position).astype(jnp.int32)
        next_state = ChainState(position=position, time=state.time + 1)
        terminated = jnp.logical_or(~correct, position >= self.length)
        reward = correct.astype(jnp.float32)
        return self.observe(None, next_state, action, params), next_state, reward, terminated, {}

    def reset_env(self, key: jax.Array, params: ChainParams):
        """Start at state 0."""
        state = ChainState(position=jnp.int32(0), time=0)
        return self.observe(key, state, None, params), state

    def observe(self, key, state: ChainState, action, params: ChainParams) -> jax.Array:
        """The position, an int32 scalar."""
        del key, action, params
        return state.position

    def is_terminated(self, state: ChainState, params: ChainParams) -> jax.Array:
        """At the goal (a wrong action's termination is decided in ``step_env``)."""
        del params
        return state.position >= self.length

    def action_space(self, params: ChainParams | None = None) -> spaces.Discrete:
        """``Discrete(|A|)``."""
        del params
        return spaces.Discrete(self.n_actions)

    def observation_space(self, params: ChainParams) -> spaces.Discrete:
        """``Discrete(L + 1)``: the positions, goal included."""
        del params
        return spaces.Discrete(self.length + 1)

    def state_space(self, params: ChainParams) -> spaces.Dict:
        """Position and elapsed time."""
        return spaces.Dict(
            {
                "position": spaces.Discrete(self.length + 1),
                "time": spaces.Discrete(params.max_steps_in_episode + 1),
            }
        )


_ENVIRONMENTS = {"Chain-pgkit": Chain}

registered_envs: tuple[str, ...] = tuple(_ENVIRONMENTS)
"""Names :func:`make` builds (``pgkit.envs.available_envs`` lists them after gymnax's)."""


def make(name: str, **env_kwargs: Any):
    """Build the environment ``name`` and its default parameters, as ``gymnax.make`` does.

    Args:
      name: one of :data:`registered_envs`.
      **env_kwargs: forwarded to the environment's constructor (``length``, ``num_actions``
        for ``Chain-pgkit``).

    Returns:
      ``(environment, params)``.

    Example:
      >>> env, params = pgkit.tabular_envs.make("Chain-pgkit", length=4)
      >>> env.observation_space(params).n, env.num_actions
      (5, 2)
    """
    if name not in _ENVIRONMENTS:
        raise ValueError(f"name must be one of {list(registered_envs)}, got {name!r}")
    env = _ENVIRONMENTS[name](**env_kwargs)
    return env, env.default_params
