"""An actor-critic whose actors act with stale parameters, corrected by V-trace (IMPALA's learner).

In a distributed actor-learner system (IMPALA, Espeholt et al. 2018,
https://arxiv.org/abs/1802.01561) the actors' policy μ lags the learner's π by a few updates, so
the learner's data is off-policy. This example simulates the lag in one pure program: the
actors act with a copy of the policy refreshed every ``lag`` updates (staleness 0 to lag − 1
updates), and the learner corrects with V-trace, or, with ``correction=none``, treats the data
as on-policy (A3C's n-step actor-critic on stale data). It follows the recipe protocol, so the
driver runs it like a built-in recipe::

    pgkit train examples/lagged_vtrace.py --seeds 4 --set lag=8 --set correction=none

Algorithm, one ``update``, with E environments stepped in parallel:

    roll out T steps with the actors' copy μ (log μ(a|s) kept)       pgkit.rollout.rollout
    log ρ_t = log π(a_t|s_t) − log μ(a_t|s_t) under the learner's π
    v_t, A_t = V-trace targets and advantages (ρ̄ = c̄ = 1)            pgkit.vtrace
      (correction=none: log ρ = 0, i.e. λ-returns of the stale data)
    θ ← RMSProp step (global-norm clip) on
         L = −mean[log π(a_t|s_t) A_t] + c_v·mean[½(V(s_t) − v_t)²] − c_e·entropy
                                                           pgkit.score_function_loss, pgkit.value_loss
    every lag updates: μ ← π                                        pgkit.periodic_update

With ``lag=1`` the actors act with the learner's parameters, ρ = 1, and V-trace's targets are
the λ-returns (:func:`pgkit.vtrace`'s tests check that identity). Measured results (the lag
against the correction): ``docs/recipes/lagged_vtrace.md``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import optax

import pgkit
from pgkit import envs, nn, rollout
from pgkit.recipe import ConfigError, Recipe, hyperparameters, option

NAME = "lagged_vtrace"
DESCRIPTION = "Actor-critic on data from a lagged policy copy, corrected by V-trace (an example recipe)"
DEFAULT_ENV = "CartPole-v1"


@dataclasses.dataclass(frozen=True)
class Config:
    total_steps: int = option(200_000, "environment steps per seed", positive=True)
    num_envs: int = option(16, "parallel environments", positive=True)
    num_steps: int = option(16, "rollout length per environment per update", positive=True)
    lag: int = option(4, "updates between refreshes of the actors' policy copy (1: on-policy)", positive=True)
    correction: str = option("vtrace", "off-policy correction of the stale data", choices=("vtrace", "none"))
    hidden_sizes: tuple[int, ...] = option((64, 64), "hidden layer widths of actor and critic")


@hyperparameters
class HParams:
    lr: float = option(3e-3, "RMSProp learning rate", positive=True)
    gamma: float = option(0.99, "discount factor", low=0.0, high=1.0)
    vtrace_lambda: float = option(1.0, "trace decay λ of V-trace", low=0.0, high=1.0)
    clip_rho: float = option(1.0, "ρ̄: clip of the importance ratio in the targets and advantages", positive=True)
    ent_coef: float = option(0.01, "entropy bonus coefficient", low=0.0)
    vf_coef: float = option(0.5, "value loss coefficient", low=0.0)
    max_grad_norm: float = option(0.5, "global gradient-norm clip", positive=True)


class Networks(NamedTuple):
    actor: Any
    critic: Any


class State(NamedTuple):
    networks: Networks  # the learner's π and V
    behaviour: Networks  # the actors' copy μ, refreshed every lag updates
    opt_state: Any
    env_state: Any
    obs: jax.Array  # [E, obs_size]
    key: jax.Array
    updates: jax.Array  # updates done (int32)
    last_return: jax.Array


def make(config: Config, env_name: str) -> Recipe:
    """Build the pure ``init``/``update``/``act`` for ``env_name`` (discrete actions)."""
    env = envs.make(env_name, num_envs=config.num_envs)
    if not env.discrete:
        raise ConfigError(f"environment {env_name!r} must have discrete actions for {NAME}")
    steps_per_update = config.num_envs * config.num_steps

    def optimizer(hp: HParams):
        return optax.chain(optax.clip_by_global_norm(hp.max_grad_norm), optax.rmsprop(hp.lr, decay=0.99, eps=1e-5))

    def init(key, hp: HParams) -> State:
        key, actor_key, critic_key, env_key = jax.random.split(key, 4)
        actor = nn.CategoricalPolicy(env.observation_size, env.num_actions, hidden_sizes=config.hidden_sizes, key=actor_key)
        critic = nn.ValueCritic(env.observation_size, hidden_sizes=config.hidden_sizes, key=critic_key)
        networks = Networks(actor, critic)
        env_state, obs = env.reset(env_key)
        opt_state = optimizer(hp).init(eqx.filter(networks, eqx.is_array))
        return State(networks, networks, opt_state, env_state, obs, key, jnp.int32(0), jnp.float32(0.0))

    def loss_fn(networks: Networks, traj, hp: HParams):
        dist = nn.policy_distribution(jax.vmap(jax.vmap(networks.actor))(traj.obs), discrete=True)
        log_probs = dist.log_prob(traj.actions)
        values = jax.vmap(jax.vmap(networks.critic))(traj.obs)
        next_values = jax.vmap(jax.vmap(networks.critic))(traj.next_obs)
        # log ρ = log π − log μ of the actions the actors took (no gradient: vtrace stops it)
        log_ratios = log_probs - traj.log_probs if config.correction == "vtrace" else jnp.zeros_like(log_probs)
        targets, advantages = pgkit.vtrace(
            traj.rewards, traj.discounts, traj.dones, values, next_values, log_ratios,
            lambda_=hp.vtrace_lambda, clip_rho=hp.clip_rho, clip_c=1.0,
        )
        policy_loss = pgkit.score_function_loss(log_probs, advantages).mean()
        value_loss = pgkit.value_loss(values, targets).mean()
        entropy = dist.entropy().mean()
        loss = policy_loss + hp.vf_coef * value_loss - hp.ent_coef * entropy
        ratios = jnp.exp(jax.lax.stop_gradient(log_probs - traj.log_probs))  # π/μ, whatever the correction
        stats = {"policy_loss": policy_loss, "value_loss": value_loss, "entropy": entropy,
                 "mean_ratio": ratios.mean(), "max_ratio": ratios.max()}
        return loss, stats

    def update(state: State, hp: HParams):
        key, rollout_key = jax.random.split(state.key)
        act_fn = rollout.actor_critic_act_fn(state.behaviour.actor, state.behaviour.critic, discrete=True)
        env_state, obs, traj = rollout.rollout(
            rollout_key, env, state.env_state, state.obs, act_fn, num_steps=config.num_steps, gamma=hp.gamma
        )
        grads, stats = jax.grad(loss_fn, has_aux=True)(state.networks, traj, hp)
        updates, opt_state = optimizer(hp).update(grads, state.opt_state)
        networks = optax.apply_updates(state.networks, updates)
        done = state.updates + 1
        behaviour = pgkit.periodic_update(networks, state.behaviour, step=done, period=config.lag)
        stats["staleness"] = jnp.mod(state.updates, config.lag).astype(jnp.float32)  # updates μ lagged π
        last_return, episodes = rollout.latest_episode_return(traj, state.last_return)
        stats.update(episode_return=last_return, episodes=episodes.astype(jnp.float32))
        return State(networks, behaviour, opt_state, env_state, obs, key, done, last_return), stats

    def act(state: State, key, obs):
        """Greedy evaluation policy of the learner: the most probable action."""
        del key
        return nn.greedy_action(jax.vmap(state.networks.actor)(obs), discrete=True)

    return Recipe(init, update, act, env, steps_per_update, config.total_steps // steps_per_update)
