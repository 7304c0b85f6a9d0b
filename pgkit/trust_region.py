"""A policy network's surrogate, KL and Fisher product on a batch: what NPG and TRPO hand to the natural step.

::

    batch = trust_region.flatten_batch(traj, gae)                 # [T, E] -> N = T·E samples
    objectives = trust_region.policy_objectives(actor, batch, discrete=env.discrete)
    fisher = trust_region.fisher_product(objectives, damping=hp.damping)
    result = pgkit.natural_gradient_step(objectives.surrogate, objectives.kl, objectives.params,
                                         fisher, max_kl=hp.max_kl, line_search=True)
    actor = objectives.rebuild(result.params)

The estimators themselves (:func:`pgkit.natural_gradient_step`, the Fisher products, the KLs) are
in :mod:`pgkit.natural` and :mod:`pgkit.divergences`; this module binds them to an equinox
policy of :mod:`pgkit.nn` and a batch of samples.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp

from pgkit import envs, nn
from pgkit.divergences import categorical_entropy, categorical_kl, gaussian_entropy, gaussian_kl
from pgkit.importance import log_ratios
from pgkit.natural import categorical_fisher_product, gauss_newton_fisher_product, gaussian_fisher_product
from pgkit.nn import policy_distribution
from pgkit.recipe import ConfigError

__all__ = [
    "Batch",
    "Networks",
    "PolicyObjectives",
    "State",
    "fisher_product",
    "flatten_batch",
    "init_state",
    "make_env",
    "policy_objectives",
]


class Batch(NamedTuple):
    """A rollout flattened to N = T·E samples."""

    obs: jax.Array  # [N, obs_size]
    actions: jax.Array  # [N] or [N, action_size]
    log_probs: jax.Array  # [N] log π_old(a|s)
    advantages: jax.Array  # [N]
    targets: jax.Array  # [N] critic regression targets


def flatten_batch(traj, gae) -> Batch:
    """The ``[T, E]`` trajectory and its :func:`pgkit.gae` result as one batch of N = T·E samples.

    Sample ``t·E + e`` is step t of environment e. ``traj`` is a :class:`pgkit.rollout.Trajectory`
    (``obs``, ``actions``, ``log_probs``), ``gae`` a ``pgkit.GAE`` (``advantages``, ``targets``).
    """
    size = traj.rewards.shape[0] * traj.rewards.shape[1]
    flat = jax.tree.map(
        lambda x: x.reshape((size,) + x.shape[2:]),
        (traj.obs, traj.actions, traj.log_probs, gae.advantages, gae.targets),
    )
    return Batch(*flat)


class PolicyObjectives(NamedTuple):
    """A policy at θ_old on a batch, as functions of its array parameters θ."""

    params: Any  # θ_old: the policy's array leaves
    rebuild: Callable  # θ -> the policy network with parameters θ
    surrogate: Callable  # θ -> mean[exp(log π_θ(a|s) − log π_old(a|s)) · A], maximised
    kl: Callable  # θ -> mean over the batch states of KL(π_old(·|s) ‖ π_θ(·|s))
    outputs: Callable  # θ -> the raw policy outputs on the batch states (logits, or (mean, log_std))
    entropy: jax.Array  # mean entropy of π_old over the batch states
    discrete: bool


def policy_objectives(actor, batch: Batch, *, discrete: bool) -> PolicyObjectives:
    """The importance-sampled surrogate, mean KL and entropy of ``actor`` (= π_old) on ``batch``.

    ``actor(obs [obs_size])`` returns logits ``[A]`` (``discrete``) or ``(mean [A], log_std
    [A])`` (a diagonal Gaussian), as :mod:`pgkit.nn`'s policies do. π_old is held fixed (no
    gradient) in the ratio's denominator and the KL's first argument.
    """
    params, static = eqx.partition(actor, eqx.is_array)

    def rebuild(p):
        return eqx.combine(p, static)

    def outputs(p):
        return jax.vmap(rebuild(p))(batch.obs)

    old = jax.lax.stop_gradient(jax.vmap(actor)(batch.obs))

    def surrogate(p):
        log_probs = policy_distribution(outputs(p), discrete=discrete).log_prob(batch.actions)
        return jnp.mean(jnp.exp(log_ratios(log_probs, batch.log_probs)) * batch.advantages)

    def kl(p):
        new = outputs(p)
        if discrete:
            return jnp.mean(categorical_kl(old, new))
        return jnp.mean(gaussian_kl(old[0], old[1], new[0], new[1]))

    entropy = jnp.mean(categorical_entropy(old) if discrete else gaussian_entropy(old[1]))
    return PolicyObjectives(params, rebuild, surrogate, kl, outputs, entropy, discrete)


def fisher_product(objectives: PolicyObjectives, *, damping) -> Callable:
    """``v -> F v + damping·v`` at θ_old: the policy's Fisher in Gauss-Newton form (:func:`pgkit.gauss_newton_fisher_product`)."""
    output_fisher = categorical_fisher_product if objectives.discrete else gaussian_fisher_product
    return gauss_newton_fisher_product(objectives.outputs, objectives.params, output_fisher, damping=damping)


class Networks(NamedTuple):
    actor: Any  # π_θ: pgkit.nn.CategoricalPolicy or GaussianPolicy (pgkit.nn.policy_for)
    critic: Any  # V: pgkit.nn.ValueCritic


class State(NamedTuple):
    """The state of a trust-region actor-critic (NPG, TRPO) between updates."""

    networks: Networks
    critic_opt_state: Any
    env_state: Any
    obs: jax.Array  # [E, obs_size]
    key: jax.Array  # PRNGKey (uint32[2])
    last_return: jax.Array  # last known completed-episode return


def make_env(config, env_name: str):
    """The training VecEnv of a trust-region recipe, after ConfigErrors for its shared options.

    Reads ``num_envs``, ``num_steps``, ``critic_minibatches`` (must divide num_envs·num_steps),
    ``hidden_sizes`` (positive widths), ``normalize_observations`` and ``scale_rewards``.
    """
    batch_size = config.num_envs * config.num_steps
    if batch_size % config.critic_minibatches:
        raise ConfigError(
            f"option 'critic_minibatches' must divide num_envs*num_steps={batch_size}, got {config.critic_minibatches}"
        )
    if any(h < 1 for h in config.hidden_sizes):
        raise ConfigError(f"option 'hidden_sizes' must be positive widths, got {config.hidden_sizes}")
    return envs.make(
        env_name,
        num_envs=config.num_envs,
        normalize_observations=config.normalize_observations,
        scale_rewards=config.scale_rewards,
    )


def init_state(key, env, config, critic_optimizer) -> State:
    """A fresh :class:`State`: policy and critic from ``config`` (``hidden_sizes``, ``activation``,
    ``log_std_init``), the environments reset, ``critic_optimizer``'s state (an optax
    transformation, e.g. ``optax.adam(hp.critic_lr)``)."""
    key, actor_key, critic_key, env_key = jax.random.split(key, 4)
    net = dict(hidden_sizes=config.hidden_sizes, activation=config.activation)
    actor = nn.policy_for(env, log_std_init=config.log_std_init, key=actor_key, **net)
    critic = nn.ValueCritic(env.observation_size, key=critic_key, **net)
    env_state, obs = env.reset(env_key)
    opt_state = critic_optimizer.init(eqx.filter(critic, eqx.is_array))
    return State(Networks(actor, critic), opt_state, env_state, obs, key, jnp.float32(0.0))
