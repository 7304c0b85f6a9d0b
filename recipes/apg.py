"""Analytic Policy Gradients (APG): backpropagation through H steps of a differentiable environment.

Algorithm (Freeman et al., 2021, "Brax — A Differentiable Physics Engine for Large Scale Rigid
Body Simulation", https://arxiv.org/abs/2106.13281, §5 and Brax's ``apg`` trainer; Degrave et al.,
2019, "A Differentiable Physics Engine for Deep Learning in Robotics"), one ``update``:

    from the E environments' current states (no gradient into them), roll out H steps of
        a_t = tanh(μ_θ(s_t) + σ·ε_t) through the environment's transition gradients
                                                                    pgkit.rollout.differentiable_rollout
        (gradient-norm clip on each transition's backward pass, max_transition_gradient_norm)
    minimise (1 / (H·E)) Σ_{t,e} −w_t r_t, the discounted return of each episode segment in the
        horizon, no bootstrap                                       pgkit.short_horizon_pathwise_loss
        (next values 0)
    the gradient's global norm clipped, Adam step, the step skipped where the gradient is not
        finite (optax.apply_if_finite)
    the rollout's last states start the next update's horizon (resets happen inside it)

Episode semantics as everywhere in pgkit: discounts γ(1 − terminated), a reset cuts the gradient
path. The environment must be differentiable (gymnax's ``_supports_transition_gradients``); any
other is a ConfigError. Exploration noise σ = exp(log_std) is fixed (``noise_log_std``; −inf-like
values give a deterministic policy).

Defaults: 16 environments x a horizon of 32 steps, γ 0.99, Adam 1e-3, gradient norm 1, 64x64 ELU
actor, noise log-std −1.

Tested configurations, measured returns and the comparison with SHAC, SAC and PPO:
``docs/recipes/shac.md`` (APG and SHAC).
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

NAME = "apg"
DESCRIPTION = "Analytic Policy Gradients: backpropagation through H steps of a differentiable env"
DEFAULT_ENV = "Pendulum-v1"


@dataclasses.dataclass(frozen=True)
class Config:
    total_steps: int = option(20_480, "environment steps per seed", positive=True)
    num_envs: int = option(16, "parallel environments per seed", positive=True)
    horizon: int = option(32, "H, the steps backpropagated through per update", positive=True)
    hidden_sizes: tuple[int, ...] = option((64, 64), "hidden layer widths of the actor")
    activation: str = option("elu", "hidden activation", choices=("tanh", "relu", "elu", "gelu", "silu"))


@hyperparameters
class HParams:
    lr: float = option(1e-3, "Adam learning rate", positive=True)
    gamma: float = option(0.99, "discount factor", low=0.0, high=1.0)
    noise_log_std: float = option(-1.0, "log-std of the Gaussian exploration noise before the tanh")
    max_grad_norm: float = option(1.0, "global-norm clip of the gradient", positive=True)
    max_transition_gradient_norm: float = option(
        1e3, "per-environment norm clip of the gradient flowing back through each transition", positive=True
    )


class State(NamedTuple):
    actor: Any  # μ_θ: pgkit.nn.MLP (its output squashed by tanh)
    opt: Any
    env_state: Any
    obs: jax.Array  # [E, obs_size]
    key: jax.Array  # PRNGKey (uint32[2])
    last_return: jax.Array  # last known completed-episode return


def make(config: Config, env_name: str) -> Recipe:
    """Build APG's pure ``init``/``update``/``act`` on the differentiable ``env_name``."""
    if any(width < 1 for width in config.hidden_sizes):
        raise ConfigError(f"option 'hidden_sizes' must be positive widths, got {config.hidden_sizes}")
    try:
        env = envs.make(env_name, num_envs=config.num_envs, transition_gradients=True)
    except ValueError as error:
        raise ConfigError(f"apg needs a differentiable environment: {error}") from None
    if env.discrete:
        raise ConfigError(f"apg needs continuous actions; {env_name} has discrete ones")
    steps_per_update = config.num_envs * config.horizon
    num_updates = max(1, config.total_steps // steps_per_update)

    def optimizer(hp: HParams):
        return optax.apply_if_finite(
            optax.chain(optax.clip_by_global_norm(hp.max_grad_norm), optax.adam(hp.lr)),
            max_consecutive_errors=2**30,
        )

    def init(key, hp: HParams) -> State:
        key, actor_key, env_key = jax.random.split(key, 3)
        actor = nn.MLP(
            env.observation_size, env.action_size, hidden_sizes=config.hidden_sizes, activation=config.activation,
            final_gain=nn.POLICY_GAIN, key=actor_key,
        )
        env_state, obs = env.reset(env_key)
        return State(actor, optimizer(hp).init(eqx.filter(actor, eqx.is_array)), env_state, obs, key, jnp.float32(0.0))

    def loss_fn(actor, state: State, key, hp: HParams):
        def policy_fn(key, obs):
            mean = jax.vmap(actor)(obs)
            return jnp.tanh(mean + jnp.exp(hp.noise_log_std) * jax.random.normal(key, mean.shape))

        env_state, obs, traj = rollout.differentiable_rollout(
            key, env, jax.lax.stop_gradient(state.env_state), jax.lax.stop_gradient(state.obs), policy_fn,
            num_steps=config.horizon, gamma=hp.gamma, max_gradient_norm=hp.max_transition_gradient_norm,
        )
        losses = pgkit.short_horizon_pathwise_loss(traj.rewards, traj.discounts, traj.dones, traj.next_values)
        return losses.sum(0).mean() / config.horizon, (env_state, obs, traj)

    def update(state: State, hp: HParams):
        key, rollout_key = jax.random.split(state.key)
        (loss, (env_state, obs, traj)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state.actor, state, rollout_key, hp
        )
        grad_norm = optax.tree.norm(grads)
        updates, opt = optimizer(hp).update(grads, state.opt)
        actor = optax.apply_updates(state.actor, updates)
        traj = jax.lax.stop_gradient(traj)
        last_return, episodes = rollout.latest_episode_return(traj, state.last_return)
        stats = {
            "episode_return": last_return,
            "episodes": episodes.astype(jnp.float32),
            "loss": jnp.where(jnp.isfinite(loss), loss, 0.0),
            "grad_norm": jnp.where(opt.last_finite, grad_norm, 0.0),  # the raw norm; 0 where skipped
            "skipped": (~opt.last_finite).astype(jnp.float32),  # 1 where the gradient was not finite
        }
        new_state = State(
            actor, opt, jax.lax.stop_gradient(env_state), jax.lax.stop_gradient(obs), key, last_return
        )
        return new_state, stats

    def act(state: State, key, obs):
        """Greedy evaluation policy: tanh of the mean, no noise."""
        del key
        return jnp.tanh(jax.vmap(state.actor)(obs))

    return Recipe(init, update, act, env, steps_per_update, num_updates)
