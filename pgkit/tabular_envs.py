"""Small probe environments (the gymnax ``Environment`` API): tabular chains, and a cue to remember.

gymnax's own chains (``MemoryChain-bsuite``, ``UmbrellaChain-bsuite``, ``DiscountingChain-bsuite``,
``DeepSea-bsuite``) observe float feature vectors, not a discrete state; the one gymnax
environment with a ``Discrete`` observation space is ``FrozenLake-misc``. This module adds a
chain with a ``Discrete`` observation space, for tabular methods (``pgkit.tabular_cem_update``,
the CEM recipe's ``variant="tabular"``). :func:`pgkit.envs.make` builds these by name, as it
builds gymnax's::

    env = pgkit.envs.make("Chain-pgkit", num_envs=8)       # or: pgkit train cem --env Chain-pgkit

``Cue-pgkit`` is a memory probe for recurrent policies: a cue shown at the first step of an
episode must be recalled at a query some steps later; nothing observed in between tells it.

The module knows nothing of pgkit's wrappers: :func:`make` returns ``(environment, params)``
as ``gymnax.make`` does.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import struct
from gymnax.environments import environment, spaces

__all__ = ["Chain", "ChainParams", "ChainState", "Cue", "CueParams", "CueState", "make", "registered_envs"]


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


@struct.dataclass
class CueState(environment.EnvState):
    """The cue to recall, the step of the query, and the elapsed episode time.

    Attributes:
      cue: int32 scalar in {0, 1}.
      delay: int32 scalar, the step (counted from 0) at which the query appears.
      time: steps taken in this episode.
    """

    cue: jax.Array
    delay: jax.Array


@struct.dataclass
class CueParams(environment.EnvParams):
    """Episode limit: an episode with a later query than this is truncated before it.

    Attributes:
      max_steps_in_episode: truncation limit.
    """

    max_steps_in_episode: int = 100


class Cue(environment.Environment[CueState, CueParams]):
    """Recall a cue across one episode: shown at step 0, asked for at step d, a fresh one each episode.

    At reset the cue c ∈ {0, 1} and the delay d ∈ {min_delay, ..., max_delay} are drawn
    uniformly. The observation is [2c − 1 at t = 0 (else 0), 1 at t = d (else 0)]: the cue only
    at the first step, the query only at step d. At t = d the action a earns r = 1 if a = c
    (else 0) and the episode terminates; every other step earns 0. A memoryless policy wins
    half of the queries (expected return 0.5); one that remembers the cue wins every one (1.0).
    A hidden state that leaked from the previous episode holds that episode's cue, right only
    by chance.

    Args:
      min_delay: d's smallest value, ≥ 1.
      max_delay: d's largest value, ≥ ``min_delay``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> env, params = pgkit.tabular_envs.make("Cue-pgkit", min_delay=1, max_delay=1)
      >>> obs, state = env.reset(jax.random.key(0), params)
      >>> obs.tolist() == [2.0 * int(state.cue) - 1, 0.0]
      True
      >>> obs, state, reward, terminated, truncated, info = env.step(jax.random.key(1), state, 0, params)
      >>> info["final_observation"].tolist(), bool(terminated)
      ([0.0, 1.0], False)
    """

    def __init__(self, min_delay: int = 1, max_delay: int = 4):
        if not isinstance(min_delay, int) or min_delay < 1:
            raise ValueError(f"min_delay must be an int >= 1, got {min_delay!r}")
        if not isinstance(max_delay, int) or max_delay < min_delay:
            raise ValueError(f"max_delay must be an int >= min_delay={min_delay}, got {max_delay!r}")
        self.min_delay = min_delay
        self.max_delay = max_delay

    @property
    def default_params(self) -> CueParams:
        """A time limit above the longest episode (episodes end by termination)."""
        return CueParams(max_steps_in_episode=max(100, self.max_delay + 1))

    @property
    def name(self) -> str:
        """The name :func:`pgkit.envs.make` knows it by."""
        return "Cue-pgkit"

    @property
    def num_actions(self) -> int:
        """2: the two cues."""
        return 2

    def step_env(self, key: jax.Array, state: CueState, action, params: CueParams):
        """One transition before gymnax's auto-reset."""
        del key
        query = state.time == state.delay
        reward = (query & (jnp.asarray(action, jnp.int32) == state.cue)).astype(jnp.float32)
        next_state = CueState(time=state.time + 1, cue=state.cue, delay=state.delay)
        return self.observe(next_state), next_state, reward, query, {}

    def reset_env(self, key: jax.Array, params: CueParams):
        """A fresh cue and delay."""
        cue_key, delay_key = jax.random.split(key)
        state = CueState(
            time=0,
            cue=jax.random.bernoulli(cue_key).astype(jnp.int32),
            delay=jax.random.randint(delay_key, (), self.min_delay, self.max_delay + 1, jnp.int32),
        )
        return self.observe(state), state

    def observe(self, state: CueState) -> jax.Array:
        """[2c − 1 at t = 0 else 0, 1 at t = d else 0], float32 ``[2]``."""
        cue = jnp.where(state.time == 0, 2.0 * state.cue - 1.0, 0.0)
        query = jnp.where(state.time == state.delay, 1.0, 0.0)
        return jnp.stack([cue, query]).astype(jnp.float32)

    def is_terminated(self, state: CueState, params: CueParams) -> jax.Array:
        """Past the query."""
        del params
        return state.time > state.delay

    def action_space(self, params: CueParams | None = None) -> spaces.Discrete:
        """``Discrete(2)``."""
        del params
        return spaces.Discrete(2)

    def observation_space(self, params: CueParams) -> spaces.Box:
        """``Box(-1, 1, (2,))``."""
        del params
        return spaces.Box(-1.0, 1.0, (2,), jnp.float32)

    def state_space(self, params: CueParams) -> spaces.Dict:
        """Cue, delay and elapsed time."""
        return spaces.Dict(
            {
                "cue": spaces.Discrete(2),
                "delay": spaces.Discrete(self.max_delay + 1),
                "time": spaces.Discrete(params.max_steps_in_episode + 1),
            }
        )


_ENVIRONMENTS = {"Chain-pgkit": Chain, "Cue-pgkit": Cue}

registered_envs: tuple[str, ...] = tuple(_ENVIRONMENTS)
"""Names :func:`make` builds (``pgkit.envs.available_envs`` lists them after gymnax's)."""


def make(name: str, **env_kwargs: Any):
    """Build the environment ``name`` and its default parameters, as ``gymnax.make`` does.

    Args:
      name: one of :data:`registered_envs`.
      **env_kwargs: forwarded to the environment's constructor (``length``, ``num_actions``
        for ``Chain-pgkit``; ``min_delay``, ``max_delay`` for ``Cue-pgkit``).

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
