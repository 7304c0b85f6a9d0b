"""Vectorised gymnax (≥ 1.0) environments with episode statistics and normalisation.

``make(name, num_envs=E)`` returns a :class:`VecEnv`: a static, hashable description of E
copies of a gymnax environment with pure ``reset`` and ``step`` methods. All mutable quantities
(the gymnax states, per-env episode accumulators, running normalisation statistics) live in
the returned :class:`VecEnvState`, a pytree, so a whole training run is ``jit``/``vmap``-able
over seeds::

    env = pgkit.envs.make("CartPole-v1", num_envs=4)
    state, obs = env.reset(key)                    # obs [E, obs_size]
    state, step = env.step(key, state, actions)    # step.obs, step.reward, step.final_obs ...

Wrappers (all inside :meth:`VecEnv.step`, switched by static flags):

- auto-reset with the true next observation kept: ``final_obs`` is s'_t (gymnax's
  ``info["final_observation"]``), ``obs`` is the observation to act on next (post-reset);
- episode statistics: undiscounted return and length of each episode as it ends;
- observation flattening to ``[E, obs_size]`` float32;
- continuous actions arrive in [−1, 1], are clipped to it and rescaled to the Box bounds;
- observation normalisation with running mean / variance (parallel Chan et al. update),
  applied to ``obs`` and ``final_obs`` alike and clipped to ±``clip_observations``;
- reward scaling by the running standard deviation of the discounted return, as SB3's
  ``VecNormalize`` (the per-env return accumulator restarts at every done).

``training=False`` (on ``reset`` and ``step``) freezes the statistics, for evaluation.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, NamedTuple

import gymnax
import jax
import jax.numpy as jnp
import numpy as np
from gymnax.environments import spaces
from jaxtyping import Array, Bool, Float, Int

from pgkit import brax_envs, tabular_envs

__all__ = [
    "EnvStep",
    "EnvUnavailableError",
    "Normalization",
    "RunningMeanStd",
    "VecEnv",
    "VecEnvState",
    "available_envs",
    "make",
    "running_mean_std_init",
    "running_mean_std_update",
]


class EnvUnavailableError(RuntimeError):
    """gymnax could not build an environment here: it fetches some environments' data when they
    are made (MNIST for ``MNISTBandit-bsuite``), and that failed (no network)."""


class RunningMeanStd(NamedTuple):
    """Running mean and (population) variance of a stream of batches.

    Attributes:
        mean: running mean, shape ``[*shape]``.
        var: running variance (ddof 0), shape ``[*shape]``; 1 before any data.
        count: number of samples seen, scalar float32.
    """

    mean: Array
    var: Array
    count: Array


def running_mean_std_init(shape: tuple[int, ...] = ()) -> RunningMeanStd:
    """Empty running statistics: mean 0, variance 1, count 0.

    Args:
        shape: shape of one sample (static).

    Returns:
        A :class:`RunningMeanStd` with ``mean``/``var`` of shape ``shape`` and ``count`` 0.

    Example:
        >>> pgkit.envs.running_mean_std_init((3,)).var.tolist()
        [1.0, 1.0, 1.0]
    """
    return RunningMeanStd(
        mean=jnp.zeros(shape, jnp.float32),
        var=jnp.ones(shape, jnp.float32),
        count=jnp.zeros((), jnp.float32),
    )


def running_mean_std_update(stats: RunningMeanStd, batch: Array) -> RunningMeanStd:
    """Merge a batch into running statistics (parallel algorithm of Chan, Golub, LeVeque).

    With δ = x̄_B − μ, n' = n + n_B:  μ' = μ + δ·n_B/n',
    σ'² = (σ²·n + σ_B²·n_B + δ²·n·n_B/n') / n'.  Starting from count 0 the result equals the
    mean and population variance of all samples seen.

    Args:
        stats: current statistics (shapes ``[*shape]``).
        batch: new samples, shape ``[N, *shape]`` with N ≥ 1 (static).

    Returns:
        Updated :class:`RunningMeanStd`.

    Example:
        >>> import jax.numpy as jnp
        >>> s = pgkit.envs.running_mean_std_init(())
        >>> s = pgkit.envs.running_mean_std_update(s, jnp.array([1.0, 2.0]))
        >>> s = pgkit.envs.running_mean_std_update(s, jnp.array([3.0, 4.0, 5.0]))
        >>> round(float(s.mean), 4), round(float(s.var), 4), float(s.count)
        (3.0, 2.0, 5.0)

    Reference:
        Chan, Golub, LeVeque, "Updating formulae and a pairwise algorithm for computing sample
        variances", 1979. https://doi.org/10.1007/978-3-642-51461-6_3
    """
    batch = jnp.asarray(batch, jnp.float32)
    n = batch.shape[0]
    batch_mean = jnp.mean(batch, axis=0)
    batch_var = jnp.var(batch, axis=0)
    total = stats.count + n
    delta = batch_mean - stats.mean
    mean = stats.mean + delta * (n / total)
    m2 = stats.var * stats.count + batch_var * n + jnp.square(delta) * (stats.count * n / total)
    return RunningMeanStd(mean=mean, var=m2 / total, count=total)


class Normalization(NamedTuple):
    """Running statistics of the normalisation wrappers (both present even when unused).

    Attributes:
        obs: :class:`RunningMeanStd` of the raw flat observations, shape ``[obs_size]``.
        returns: :class:`RunningMeanStd` (scalar) of the per-env discounted returns.
    """

    obs: RunningMeanStd
    returns: RunningMeanStd


class VecEnvState(NamedTuple):
    """Everything that changes while E environments run (a pytree; vmap it over seeds).

    Attributes:
        env_state: the gymnax states, every leaf with leading axis ``[E]``.
        episode_return: undiscounted raw return of the running episodes, ``[E]`` float32.
        episode_length: steps of the running episodes, ``[E]`` int32.
        discounted_return: per-env discounted return accumulator for reward scaling, ``[E]``.
        normalization: :class:`Normalization` running statistics.
    """

    env_state: Any
    episode_return: Float[Array, " E"]
    episode_length: Int[Array, " E"]
    discounted_return: Float[Array, " E"]
    normalization: Normalization


class EnvStep(NamedTuple):
    """What one vectorised step returns (all with leading axis ``[E]``).

    Attributes:
        obs: the observation to act on next, ``[E, obs_size]``: post-reset where done.
        reward: r_t, ``[E]`` float32 (scaled when ``scale_rewards``).
        terminated: the episode reached a terminal state, ``[E]`` bool.
        truncated: the episode hit its time limit, ``[E]`` bool (may coincide with terminated).
        final_obs: the true next observation s'_t (pre-reset), ``[E, obs_size]``; equals
            ``obs`` where not done.
        episode_return: undiscounted raw (unscaled) return of the episode up to and including
            this step, ``[E]``: the return of the episode that just ended where done.
        episode_length: length of that episode including this step, ``[E]`` int32.
    """

    obs: Float[Array, "E obs_size"]
    reward: Float[Array, " E"]
    terminated: Bool[Array, " E"]
    truncated: Bool[Array, " E"]
    final_obs: Float[Array, "E obs_size"]
    episode_return: Float[Array, " E"]
    episode_length: Int[Array, " E"]


def available_envs() -> list[str]:
    """Names accepted by :func:`make`: gymnax's environments, ``pgkit.tabular_envs``'s, then Brax's (``TASK-brax``).

    Brax's (``pgkit.brax_envs``) are listed whether or not Brax is installed: building one
    without it raises ``ImportError`` naming the extra (``pip install 'pgkit[brax]'``).

    Returns:
        A list of environment names.

    Example:
        >>> "CartPole-v1" in pgkit.envs.available_envs()
        True
    """
    return list(gymnax.registered_envs) + list(tabular_envs.registered_envs) + list(brax_envs.registered_envs)


def observed_name(name: str, observe) -> str:
    """The environment name that keeps only the observation components ``observe``: ``"NAME[i,j,...]"``.

    Recipes receive an environment as a name, so a partially observed task travels as one:
    ``pgkit.envs.make(observed_name("CartPole-v1", [0, 2]), ...)`` equals
    ``pgkit.envs.make("CartPole-v1", observe=[0, 2], ...)``, and ``pgkit train ... --observe 0,2``
    trains on ``"CartPole-v1[0,2]"`` (recorded so in ``config.json``). ``observe=None`` gives
    ``name`` unchanged.

    Example:
        >>> pgkit.envs.observed_name("CartPole-v1", [0, 2])
        'CartPole-v1[0,2]'
    """
    if observe is None:
        return name
    return f"{name}[{','.join(str(int(i)) for i in observe)}]"


def split_observed_name(name: str) -> tuple[str, tuple[int, ...] | None]:
    """``"NAME[i,j]"`` -> ``("NAME", (i, j))``; a name without brackets -> ``(name, None)``.

    Raises:
        ValueError: brackets that do not hold comma-separated integers.

    Example:
        >>> pgkit.envs.split_observed_name("CartPole-v1[0,2]")
        ('CartPole-v1', (0, 2))
    """
    if not name.endswith("]") or "[" not in name:
        return name, None
    base, _, inside = name[:-1].partition("[")
    try:
        return base, tuple(int(part) for part in inside.split(","))
    except ValueError:
        raise ValueError(
            f"observe: the name {name!r} must end in [i,j,...] with integer indices"
        ) from None


def _check_observe(name: str, observe, full_size: int) -> tuple[int, ...]:
    observe = tuple(observe)
    bad = [i for i in observe if isinstance(i, bool) or not isinstance(i, (int, np.integer))
           or not 0 <= i < full_size]
    if not observe or bad or len(set(observe)) != len(observe):
        raise ValueError(
            f"observe must list distinct observation indices in 0..{full_size - 1} of {name} "
            f"(its flattened observation has {full_size} components), got {list(observe)}"
        )
    return tuple(int(i) for i in observe)


def _freeze(value):
    """A hashable stand-in for ``value`` (used for equality / hashing of VecEnv)."""
    if isinstance(value, dict):
        return tuple(sorted((k, _freeze(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    if isinstance(value, np.ndarray | jax.Array):
        return ("array", np.asarray(value).shape, np.asarray(value).tobytes())
    return value


@dataclasses.dataclass(frozen=True, eq=False)
class VecEnv:
    """E copies of a gymnax environment behind pure ``reset`` / ``step`` (build with :func:`make`).

    A static, hashable value: close over it or pass it as a static argument (it is registered
    as a pytree with no leaves, so ``jax.jit(f)(env, ...)`` also works). Two VecEnvs built with
    the same arguments compare equal and hash alike (no recompilation).

    Attributes:
        name: gymnax environment name.
        num_envs: E, the number of parallel environments.
        observation_size: size of the flattened observation (``observation_shape`` is the
            gymnax one, or ``(len(observe),)``).
        observe: the indices of the flattened gymnax observation that are kept, in that order
            (a partially observed task), or ``None`` for all of it.
        transition_gradients: whether ``step`` carries gradients through the transition
            (gymnax's ``env.with_transition_gradients()``; see :func:`make`).
        discrete: whether actions are integers in ``[0, num_actions)``.
        num_actions: number of actions (discrete envs; ``None`` otherwise).
        action_size: action dimension (continuous envs; ``None`` otherwise); the gymnax
            action shape is ``action_shape``.
        action_low, action_high: Box bounds as float32 NumPy arrays ``[action_size]``
            (continuous envs; ``None`` otherwise). Policies emit actions in [−1, 1].
        normalize_observations, scale_rewards, gamma, clip_observations, clip_rewards,
        epsilon: wrapper settings (see :func:`make`).
        env, env_params: the gymnax environment and its parameters (``env_kwargs`` and
            ``env_params_overrides`` record how they were built, for equality and hashing).

    Example:
        >>> import jax, jax.numpy as jnp
        >>> env = pgkit.envs.make("CartPole-v1", num_envs=3)
        >>> state, obs = env.reset(jax.random.key(0))
        >>> state, step = env.step(jax.random.key(1), state, jnp.zeros(3, jnp.int32))
        >>> obs.shape, step.reward.tolist(), step.final_obs.shape
        ((3, 4), [1.0, 1.0, 1.0], (3, 4))
    """

    name: str
    num_envs: int
    normalize_observations: bool
    scale_rewards: bool
    gamma: float
    clip_observations: float
    clip_rewards: float
    epsilon: float
    env_kwargs: tuple
    env_params_overrides: tuple
    env: Any
    env_params: Any
    observation_shape: tuple[int, ...]
    observation_size: int
    discrete: bool
    num_actions: int | None
    action_shape: tuple[int, ...] | None
    action_size: int | None
    action_low: np.ndarray | None
    action_high: np.ndarray | None
    observe: tuple[int, ...] | None = None
    transition_gradients: bool = False

    # ------------------------------------------------------------------ identity
    def _identity(self):
        return (
            self.name,
            self.num_envs,
            self.normalize_observations,
            self.scale_rewards,
            self.gamma,
            self.clip_observations,
            self.clip_rewards,
            self.epsilon,
            self.env_kwargs,
            self.env_params_overrides,
            self.observe,
            self.transition_gradients,
        )

    def __eq__(self, other):
        if not isinstance(other, VecEnv):
            return NotImplemented
        return self is other or self._identity() == other._identity()

    def __hash__(self):
        try:
            return hash(self._identity())
        except TypeError:  # unhashable constructor arguments: fall back to identity
            return id(self)

    def __repr__(self):
        flags = []
        if self.normalize_observations:
            flags.append("normalize_observations=True")
        if self.scale_rewards:
            flags.append(f"scale_rewards=True, gamma={self.gamma}")
        if self.observe is not None:
            flags.append(f"observe={list(self.observe)}")
        if self.transition_gradients:
            flags.append("transition_gradients=True")
        extra = "".join(", " + f for f in flags)
        return f"VecEnv({self.name!r}, num_envs={self.num_envs}{extra})"

    def with_num_envs(self, num_envs: int) -> VecEnv:
        """The same environment and wrappers with a different number of copies.

        Useful for an evaluation env that shares the training env's normalisation statistics:
        ``eval_env.reset(key, normalization=state.normalization, training=False)``.
        """
        _check_num_envs(num_envs)
        return dataclasses.replace(self, num_envs=num_envs)

    # ------------------------------------------------------------------ wrappers
    def _flatten(self, obs: Array) -> Array:
        obs = jnp.reshape(obs, (self.num_envs, -1)).astype(jnp.float32)
        if self.observe is not None:  # the kept components, in the order given
            obs = obs[:, np.asarray(self.observe)]
        return obs

    def _normalize(self, obs: Array, stats: RunningMeanStd) -> Array:
        scaled = (obs - stats.mean) * jax.lax.rsqrt(stats.var + self.epsilon)
        return jnp.clip(scaled, -self.clip_observations, self.clip_observations)

    def _env_actions(self, actions: Array) -> Array:
        actions = jnp.asarray(actions)
        if self.discrete:
            if actions.shape != (self.num_envs,):
                raise ValueError(
                    f"actions must have shape [num_envs]=({self.num_envs},) for the discrete "
                    f"env {self.name}, got {actions.shape}"
                )
            return actions.astype(jnp.int32)
        if actions.shape != (self.num_envs, self.action_size):
            raise ValueError(
                f"actions must have shape [num_envs, action_size]=({self.num_envs}, "
                f"{self.action_size}) for {self.name}, got {actions.shape}"
            )
        actions = jnp.clip(actions.astype(jnp.float32), -1.0, 1.0)
        low, high = self.action_low, self.action_high
        if np.all(np.isfinite(low)) and np.all(np.isfinite(high)):
            actions = low + 0.5 * (actions + 1.0) * (high - low)
        return jnp.reshape(actions, (self.num_envs, *self.action_shape))

    # ------------------------------------------------------------------ API
    def reset(
        self,
        key: Array,
        *,
        normalization: Normalization | None = None,
        training: bool = True,
    ) -> tuple[VecEnvState, Float[Array, "E obs_size"]]:
        """Reset all E environments.

        Args:
            key: PRNG key (split into E reset keys).
            normalization: running statistics to start from (e.g. a training env's, for an
                evaluation env); fresh statistics when ``None``.
            training: static bool; when True (and ``normalize_observations``) the reset
                observations update the observation statistics.

        Returns:
            ``(state, obs)``: a :class:`VecEnvState` and the first observations
            ``[E, obs_size]`` (normalised when ``normalize_observations``).
        """
        keys = jax.random.split(key, self.num_envs)
        raw_obs, env_state = jax.vmap(self.env.reset, in_axes=(0, None))(keys, self.env_params)
        raw_obs = self._flatten(raw_obs)
        if normalization is None:
            normalization = Normalization(
                obs=running_mean_std_init((self.observation_size,)),
                returns=running_mean_std_init(()),
            )
        obs = raw_obs
        if self.normalize_observations:
            if training:
                normalization = normalization._replace(
                    obs=running_mean_std_update(normalization.obs, raw_obs)
                )
            obs = self._normalize(raw_obs, normalization.obs)
        zeros = jnp.zeros((self.num_envs,), jnp.float32)
        state = VecEnvState(
            env_state=env_state,
            episode_return=zeros,
            episode_length=jnp.zeros((self.num_envs,), jnp.int32),
            discounted_return=zeros,
            normalization=normalization,
        )
        return state, obs

    def step(
        self,
        key: Array,
        state: VecEnvState,
        actions: Array,
        *,
        training: bool = True,
        gamma=None,
    ) -> tuple[VecEnvState, EnvStep]:
        """Step all E environments once, auto-resetting those that finish.

        Args:
            key: PRNG key (split into E step keys).
            state: the current :class:`VecEnvState`.
            actions: ``[E]`` int (discrete) or ``[E, action_size]`` float in [−1, 1]
                (continuous: clipped to [−1, 1], then rescaled to ``[action_low, action_high]``).
            training: static bool; when False the normalisation statistics are frozen.
            gamma: discount of the return whose running std scales rewards (a traced float,
                e.g. the agent's γ, so that each member of a γ sweep is scaled by its own);
                the static ``gamma`` given to :func:`make` when None.

        Returns:
            ``(state, step)``: the next :class:`VecEnvState` and an :class:`EnvStep`.
        """
        env_actions = self._env_actions(actions)
        keys = jax.random.split(key, self.num_envs)
        raw_obs, env_state, reward, terminated, truncated, info = jax.vmap(
            self.env.step, in_axes=(0, 0, 0, None)
        )(keys, state.env_state, env_actions, self.env_params)
        raw_obs = self._flatten(raw_obs)
        raw_final_obs = self._flatten(info["final_observation"])
        reward = jnp.reshape(reward, (self.num_envs,)).astype(jnp.float32)
        terminated = jnp.reshape(terminated, (self.num_envs,)).astype(jnp.bool_)
        truncated = jnp.reshape(truncated, (self.num_envs,)).astype(jnp.bool_)
        done = terminated | truncated

        episode_return = state.episode_return + reward
        episode_length = state.episode_length + 1
        normalization = state.normalization

        obs, final_obs = raw_obs, raw_final_obs
        if self.normalize_observations:
            obs_stats = normalization.obs
            if training:
                obs_stats = running_mean_std_update(obs_stats, raw_obs)
                normalization = normalization._replace(obs=obs_stats)
            obs = self._normalize(raw_obs, obs_stats)
            final_obs = self._normalize(raw_final_obs, obs_stats)
        # gymnax computes the pre-reset observation twice (as final_observation and inside the
        # reset's select), and so is each normalised: XLA may round two copies of one computation
        # differently, so the contract "equal to obs where not done" is made to hold by construction
        final_obs = jnp.where(done[:, None], final_obs, obs)

        discounted_return = state.discounted_return
        scaled_reward = reward
        if self.scale_rewards:
            discount = self.gamma if gamma is None else gamma
            discounted_return = discounted_return * discount + reward
            return_stats = normalization.returns
            if training:
                return_stats = running_mean_std_update(return_stats, discounted_return)
                normalization = normalization._replace(returns=return_stats)
            scaled_reward = jnp.clip(
                reward * jax.lax.rsqrt(return_stats.var + self.epsilon),
                -self.clip_rewards,
                self.clip_rewards,
            )
            discounted_return = jnp.where(done, 0.0, discounted_return)

        new_state = VecEnvState(
            env_state=env_state,
            episode_return=jnp.where(done, 0.0, episode_return),
            episode_length=jnp.where(done, 0, episode_length),
            discounted_return=discounted_return,
            normalization=normalization,
        )
        step = EnvStep(
            obs=obs,
            reward=scaled_reward,
            terminated=terminated,
            truncated=truncated,
            final_obs=final_obs,
            episode_return=episode_return,
            episode_length=episode_length,
        )
        return new_state, step


jax.tree_util.register_static(VecEnv)


def _check_num_envs(num_envs) -> None:
    if not isinstance(num_envs, int) or isinstance(num_envs, bool) or num_envs < 1:
        raise ValueError(f"num_envs must be a positive int, got {num_envs!r}")


def make(
    name: str,
    *,
    num_envs: int,
    normalize_observations: bool = False,
    scale_rewards: bool = False,
    gamma: float = 0.99,
    clip_observations: float = 10.0,
    clip_rewards: float = 10.0,
    epsilon: float = 1e-8,
    env_params: dict | None = None,
    observe=None,
    transition_gradients: bool = False,
    **env_kwargs,
) -> VecEnv:
    """Build a :class:`VecEnv` of ``num_envs`` copies of the gymnax environment ``name``.

    Args:
        name: a gymnax environment name, one of ``pgkit.tabular_envs``, or a Brax task
            ``TASK-brax`` (``pgkit.brax_envs``; needs ``pip install 'pgkit[brax]'``); see
            :func:`available_envs`.
        num_envs: E, the number of parallel copies (static int ≥ 1).
        normalize_observations: normalise observations by running mean / std (clipped to
            ±``clip_observations``).
        scale_rewards: divide rewards by the running std of the discounted return
            (γ = ``gamma``), clipped to ±``clip_rewards``.
        gamma: discount of the return whose std scales rewards when ``step`` is given none
            (static float; only used with ``scale_rewards``; ``pgkit.rollout.rollout`` passes
            the agent's γ).
        clip_observations: clip bound of normalised observations.
        clip_rewards: clip bound of scaled rewards.
        epsilon: added to variances before the square root.
        env_params: overrides of fields of the gymnax ``EnvParams`` (e.g.
            ``{"max_steps_in_episode": 100}``).
        observe: indices of the flattened observation to keep, in that order (a partially
            observed task: CartPole-v1 with ``observe=[0, 2]`` has no velocities), or ``None``
            for all; also given as a name suffix, ``"CartPole-v1[0,2]"`` (:func:`observed_name`).
            The environment's dynamics and ``final_obs`` are unchanged; only what the agent
            sees is cut.
        transition_gradients: build gymnax's gradient-carrying copy of the environment
            (``env.with_transition_gradients()``), whose ``step`` keeps the gradient of the next
            observation and state with respect to the action and the previous state (for
            :func:`pgkit.rollout.differentiable_rollout`). Only for environments whose
            ``_supports_transition_gradients`` is True (Pendulum-v1, MountainCarContinuous-v0,
            Reacher-misc, Swimmer-misc, PointRobot-misc); others raise ``ValueError``. An
            auto-reset still cuts the gradient path (the reset state does not depend on the
            previous one).
        **env_kwargs: forwarded to the gymnax environment constructor.

    Returns:
        A :class:`VecEnv`.

    Raises:
        ValueError: unknown ``name`` (the message lists the available ones), bad ``num_envs``,
            or an unsupported action space.
        ValueError: ``transition_gradients=True`` for an environment that is not differentiable.
        EnvUnavailableError: gymnax could not fetch the data the environment is made from.
        ImportError: a Brax environment without Brax installed (the message names the extra).

    Example:
        >>> env = pgkit.envs.make("Pendulum-v1", num_envs=2)
        >>> env.discrete, env.action_size, env.action_low.tolist(), env.action_high.tolist()
        (False, 1, [-2.0], [2.0])
    """
    name, named_observe = split_observed_name(name)
    if named_observe is not None and observe is not None and tuple(observe) != named_observe:
        raise ValueError(f"observe={list(observe)} contradicts the name's [{','.join(map(str, named_observe))}]")
    observe = named_observe if observe is None else observe
    if name not in available_envs():
        raise ValueError(
            f"name must be one of the available environments {available_envs()}, got {name!r}"
        )
    _check_num_envs(num_envs)
    try:
        if name in tabular_envs.registered_envs:
            build = tabular_envs.make
        elif name in brax_envs.registered_envs:
            build = brax_envs.make
        else:
            build = gymnax.make
        env, params = build(name, **env_kwargs)
    except OSError as error:  # urllib's URLError and socket errors are OSErrors
        raise EnvUnavailableError(
            f"environment {name!r} could not be created: gymnax downloads its data when it is made, "
            f"and the download failed ({error}); pgkit itself never downloads"
        ) from error
    if transition_gradients:
        if not getattr(env, "supports_transition_gradients", False):
            raise ValueError(
                f"transition_gradients=True needs a differentiable environment: {name} is not "
                f"(gymnax's _supports_transition_gradients is False for it; Pendulum-v1 is one)"
            )
        env = env.with_transition_gradients()
    overrides = dict(env_params or {})
    if overrides:
        unknown = [k for k in overrides if not hasattr(params, k)]
        if unknown:
            raise ValueError(f"env_params has unknown fields {unknown} for {name}")
        params = params.replace(**overrides)

    obs_struct = jax.eval_shape(env.reset, jax.random.key(0), params)[0]
    observation_shape = tuple(obs_struct.shape)
    observation_size = int(math.prod(observation_shape))
    if observe is not None:
        observe = _check_observe(name, observe, observation_size)
        observation_size = len(observe)
        observation_shape = (observation_size,)

    space = env.action_space(params)
    if isinstance(space, spaces.Discrete):
        discrete, num_actions = True, int(space.n)
        action_shape = action_size = action_low = action_high = None
    elif isinstance(space, spaces.Box):
        discrete, num_actions = False, None
        action_shape = tuple(space.shape)
        action_size = int(math.prod(action_shape))
        action_low = np.broadcast_to(np.asarray(space.low, np.float32), action_shape)
        action_high = np.broadcast_to(np.asarray(space.high, np.float32), action_shape)
        action_low = np.array(action_low.reshape(action_size))
        action_high = np.array(action_high.reshape(action_size))
    else:
        raise ValueError(
            f"name {name!r} has an unsupported action space {space!r} (Discrete or Box only)"
        )

    return VecEnv(
        name=name,
        num_envs=num_envs,
        normalize_observations=bool(normalize_observations),
        scale_rewards=bool(scale_rewards),
        gamma=float(gamma),
        clip_observations=float(clip_observations),
        clip_rewards=float(clip_rewards),
        epsilon=float(epsilon),
        env_kwargs=_freeze(env_kwargs),
        env_params_overrides=_freeze(overrides),
        env=env,
        env_params=params,
        observation_shape=observation_shape,
        observation_size=observation_size,
        discrete=discrete,
        num_actions=num_actions,
        action_shape=action_shape,
        action_size=action_size,
        action_low=action_low,
        action_high=action_high,
        observe=observe,
        transition_gradients=bool(transition_gradients),
    )
