"""Short-Horizon Actor-Critic (SHAC): pathwise policy gradients through a differentiable environment.

Algorithm (Xu et al., 2022, "Accelerated Policy Learning with Parallel Differentiable Simulation",
https://arxiv.org/abs/2204.07137, Algorithm 1), one ``update``:

    from the E environments' current states (no gradient into them), roll out H steps of
        a_t = tanh(μ_θ(s_t) + σ_θ·ε_t) through the environment's transition gradients,
        the target critic's V'(s'_t) on the true next states       pgkit.rollout.differentiable_rollout
        (gradient-norm clip on each transition's backward pass, max_transition_gradient_norm)
    actor: minimise (1 / (H·E)) Σ_{t,e} −w_t (r_t + end_t·γ(1 − terminated_t)·V'(s'_t)),
        each episode segment's discounted return bootstrapped at the horizon's end or at a
        truncation                                                  pgkit.short_horizon_pathwise_loss
        backpropagated through the H steps; the gradient's global norm clipped, Adam step,
        the step skipped where the gradient is not finite
    critic: TD(λ) targets from the same H steps with V' (no gradient)   pgkit.lambda_returns
        ``critic_epochs`` shuffled passes of ``critic_minibatches`` Adam steps on ½(V(s_t) − G_t^λ)²
                                                                    pgkit.nn.fit_value
    target critic: φ' ← τφ + (1 − τ)φ'                              pgkit.polyak_update
    the rollout's last states start the next update's horizon (resets happen inside it)

Episode semantics as everywhere in pgkit: a truncated step bootstraps from the value of its true
next state (gymnax's ``info["final_observation"]``, with its gradient), a terminated one does not,
and a reset cuts the gradient path. The environment must be differentiable (gymnax's
``_supports_transition_gradients``: Pendulum-v1, MountainCarContinuous-v0, Reacher-misc,
Swimmer-misc, PointRobot-misc); any other is a ConfigError.

Defaults: 8 environments x a horizon of 16 steps, 1e5 steps per seed (they learn Pendulum-v1:
4-seed mean about −180; the paper's 16 x 32 did not at 2e4 steps), γ 0.99, λ 0.95, Adam 2e-3
(actor and critic), actor gradient norm 1, critic 8 epochs x 4 minibatches, τ 0.2 (the paper's
target coefficient α = 0.8 of the old target), 64x64 ELU networks, initial log-std −1.

Tested configurations and measured returns: ``docs/recipes/shac.md``; the comparison with APG,
SAC and PPO on Pendulum-v1 and Reacher-misc: ``docs/pathwise.md``.
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

NAME = "shac"
DESCRIPTION = "Short-Horizon Actor-Critic: pathwise gradients through a differentiable env, TD(lambda) critic bootstrap"
DEFAULT_ENV = "Pendulum-v1"


@dataclasses.dataclass(frozen=True)
class Config:
    total_steps: int = option(100_000, "environment steps per seed", positive=True)
    num_envs: int = option(8, "parallel environments per seed", positive=True)
    horizon: int = option(16, "H, the steps backpropagated through per update", positive=True)
    critic_epochs: int = option(8, "shuffled passes over the rollout per critic fit", positive=True)
    critic_minibatches: int = option(4, "minibatches per critic epoch (must divide num_envs*horizon)", positive=True)
    hidden_sizes: tuple[int, ...] = option((64, 64), "hidden layer widths of actor and critic")
    activation: str = option("elu", "hidden activation", choices=("tanh", "relu", "elu", "gelu", "silu"))
    log_std_init: float = option(-1.0, "initial log-std of the Gaussian before the tanh squashing")


@hyperparameters
class HParams:
    actor_lr: float = option(2e-3, "Adam learning rate of the actor", positive=True)
    critic_lr: float = option(2e-3, "Adam learning rate of the critic", positive=True)
    gamma: float = option(0.99, "discount factor", low=0.0, high=1.0)
    lambda_: float = option(0.95, "TD(lambda) of the critic's targets", low=0.0, high=1.0)
    tau: float = option(0.2, "Polyak weight of the online critic in the target update", low=0.0, high=1.0)
    max_grad_norm: float = option(1.0, "global-norm clip of the actor's gradient", positive=True)
    max_transition_gradient_norm: float = option(
        1e3, "per-environment norm clip of the gradient flowing back through each transition", positive=True
    )


class State(NamedTuple):
    actor: Any  # π_θ: pgkit.nn.GaussianPolicy (its action squashed by tanh)
    critic: Any  # V_φ: pgkit.nn.ValueCritic
    target_critic: Any  # V_φ'
    actor_opt: Any
    critic_opt: Any
    env_state: Any
    obs: jax.Array  # [E, obs_size]
    key: jax.Array  # PRNGKey (uint32[2])
    last_return: jax.Array  # last known completed-episode return


def check_config(config: Config, env_name: str):
    """The differentiable environment and the counts SHAC needs; a ConfigError names what is wrong."""
    if any(width < 1 for width in config.hidden_sizes):
        raise ConfigError(f"option 'hidden_sizes' must be positive widths, got {config.hidden_sizes}")
    try:
        env = envs.make(env_name, num_envs=config.num_envs, transition_gradients=True)
    except ValueError as error:
        raise ConfigError(f"shac needs a differentiable environment: {error}") from None
    if env.discrete:
        raise ConfigError(f"shac needs continuous actions; {env_name} has discrete ones")
    if (config.num_envs * config.horizon) % config.critic_minibatches:
        raise ConfigError(
            f"option 'critic_minibatches' must divide num_envs*horizon={config.num_envs * config.horizon}, "
            f"got {config.critic_minibatches}"
        )
    return env


def make(config: Config, env_name: str) -> Recipe:
    """Build SHAC's pure ``init``/``update``/``act`` on the differentiable ``env_name``."""
    env = check_config(config, env_name)
    steps_per_update = config.num_envs * config.horizon
    num_updates = max(1, config.total_steps // steps_per_update)
    net = dict(hidden_sizes=config.hidden_sizes, activation=config.activation)

    def actor_optimizer(hp: HParams):
        return optax.apply_if_finite(
            optax.chain(optax.clip_by_global_norm(hp.max_grad_norm), optax.adam(hp.actor_lr)),
            max_consecutive_errors=2**30,
        )

    def init(key, hp: HParams) -> State:
        key, actor_key, critic_key, env_key = jax.random.split(key, 4)
        actor = nn.GaussianPolicy(
            env.observation_size, env.action_size, log_std_init=config.log_std_init, key=actor_key, **net
        )
        critic = nn.ValueCritic(env.observation_size, key=critic_key, **net)
        env_state, obs = env.reset(env_key)
        return State(
            actor=actor,
            critic=critic,
            target_critic=critic,
            actor_opt=actor_optimizer(hp).init(eqx.filter(actor, eqx.is_array)),
            critic_opt=optax.adam(hp.critic_lr).init(eqx.filter(critic, eqx.is_array)),
            env_state=env_state,
            obs=obs,
            key=key,
            last_return=jnp.float32(0.0),
        )

    def policy_fn(actor):
        def act(key, obs):
            mean, log_std = jax.vmap(actor)(obs)
            return jnp.tanh(mean + jnp.exp(log_std) * jax.random.normal(key, mean.shape))

        return act

    def actor_loss(actor, state: State, key, hp: HParams):
        env_state, obs, traj = rollout.differentiable_rollout(
            key, env, jax.lax.stop_gradient(state.env_state), jax.lax.stop_gradient(state.obs), policy_fn(actor),
            num_steps=config.horizon, gamma=hp.gamma, value_fn=jax.vmap(state.target_critic),
            max_gradient_norm=hp.max_transition_gradient_norm,
        )
        losses = pgkit.short_horizon_pathwise_loss(traj.rewards, traj.discounts, traj.dones, traj.next_values)
        return losses.sum(0).mean() / config.horizon, (env_state, obs, traj)

    def update(state: State, hp: HParams):
        key, rollout_key, critic_key = jax.random.split(state.key, 3)
        (loss, (env_state, obs, traj)), grads = jax.value_and_grad(actor_loss, has_aux=True)(
            state.actor, state, rollout_key, hp
        )
        grad_norm = optax.tree.norm(grads)
        updates, actor_opt = actor_optimizer(hp).update(grads, state.actor_opt)
        actor = optax.apply_updates(state.actor, updates)

        traj = jax.lax.stop_gradient(traj)
        targets = pgkit.lambda_returns(traj.rewards, traj.discounts, traj.dones, traj.next_values, lambda_=hp.lambda_)
        critic, critic_opt, critic_loss = nn.fit_value(
            state.critic, state.critic_opt, optax.adam(hp.critic_lr),
            jnp.reshape(traj.obs, (steps_per_update, env.observation_size)), jnp.reshape(targets, (steps_per_update,)),
            critic_key, epochs=config.critic_epochs, minibatches=config.critic_minibatches,
        )
        target_critic = pgkit.polyak_update(critic, state.target_critic, tau=hp.tau)

        last_return, episodes = rollout.latest_episode_return(traj, state.last_return)
        stats = {
            "episode_return": last_return,
            "episodes": episodes.astype(jnp.float32),
            "actor_loss": jnp.where(jnp.isfinite(loss), loss, 0.0),
            "critic_loss": critic_loss,
            "grad_norm": jnp.where(actor_opt.last_finite, grad_norm, 0.0),  # the raw norm; 0 where skipped
            "skipped": (~actor_opt.last_finite).astype(jnp.float32),  # 1 where the gradient was not finite
        }
        new_state = State(
            actor, critic, target_critic, actor_opt, critic_opt, jax.lax.stop_gradient(env_state),
            jax.lax.stop_gradient(obs), key, last_return,
        )
        return new_state, stats

    def act(state: State, key, obs):
        """Greedy evaluation policy: tanh of the mean."""
        del key
        mean, _ = jax.vmap(state.actor)(obs)
        return jnp.tanh(mean)

    return Recipe(init, update, act, env, steps_per_update, num_updates)
