"""Trust Region Policy Optimization: the natural-gradient direction plus a KL-constrained line search.

Algorithm (Schulman, Levine, Moritz, Jordan, Abbeel, 2015, "Trust Region Policy Optimization",
https://arxiv.org/abs/1502.05477, section 6 "practical algorithm" and appendix C; GAE from
Schulman et al., 2016, https://arxiv.org/abs/1506.02438), one ``update``:

    collect T steps from E environments with π_old;                  pgkit.rollout.gae_rollout
      advantages A by GAE(γ, λ) with the critic V
    normalise A over the batch (optional)                            pgkit.normalized_advantages
    maximise L(θ) = mean[π_θ(a|s) / π_old(a|s) · A]                   pgkit.trust_region.policy_objectives
      subject to KL̄(θ) = mean_s KL(π_old(·|s) ‖ π_θ(·|s)) ≤ δ:
    g = ∇_θ L at θ_old                                                pgkit.natural_gradient_step:
    x ≈ F⁻¹ g by conjugate gradient on Fisher-vector products           (F: pgkit.trust_region.fisher_product)
    full step s = sqrt(2 δ / xᵀ F x) · x
    θ ← θ + ρ^j s for the first j with L improved and KL̄ ≤ δ            (line_search=True)
        (θ unchanged if no j < max_backtracks passes)
    fit V to the GAE targets: epochs of minibatch Adam               pgkit.nn.fit_value

The pieces (batch flattening, surrogate, mean KL, critic regression) are library code that NPG
uses too; what TRPO adds to NPG is the line search, which makes the KL constraint hold on the
sample (not only in the quadratic model) and guarantees that the surrogate does not decrease.

Defaults (CartPole-v1, a learning test's configuration, close to rl-baselines3-zoo's TRPO
CartPole setting): 4 envs x 256 steps (1,024 samples per update), 100 updates (102,400 steps),
max_kl 0.01, damping 1e-3, 10 CG iterations, 10 backtracks of ratio 0.8, γ 0.99, λ 0.98, 64x64
tanh policy and critic, the critic fitted by 20 epochs x 2 minibatches of Adam at 1e-3,
advantages normalised per batch. Discrete actions use a categorical policy; continuous ones a
Gaussian with a state-independent log-std (``pgkit.nn.GaussianPolicy``); Pendulum-v1 uses
``PENDULUM_CONFIG`` / ``PENDULUM_HPARAMS`` below.

Tested configurations, measured returns and tuning history: ``docs/recipes/trpo.md``.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax

import pgkit
from pgkit import nn, rollout, trust_region
from pgkit.recipe import Recipe, hyperparameters, option
from pgkit.trust_region import Networks, State

NAME = "trpo"
DESCRIPTION = "Trust Region Policy Optimization: natural direction by CG, KL line search, GAE critic"
DEFAULT_ENV = "CartPole-v1"


@dataclasses.dataclass(frozen=True)
class Config:
    total_steps: int = option(102_400, "environment steps per seed", positive=True)
    num_envs: int = option(4, "parallel environments per seed", positive=True)
    num_steps: int = option(256, "rollout length per environment per update", positive=True)
    hidden_sizes: tuple[int, ...] = option((64, 64), "hidden layer widths of policy and critic")
    activation: str = option("tanh", "hidden activation", choices=("tanh", "relu", "elu", "gelu", "silu"))
    cg_iterations: int = option(10, "conjugate-gradient iterations", positive=True)
    max_backtracks: int = option(10, "step sizes tried by the line search", positive=True)
    critic_epochs: int = option(20, "Adam epochs of critic regression per update", positive=True)
    critic_minibatches: int = option(2, "minibatches per critic epoch (must divide num_envs*num_steps)", positive=True)
    normalize_advantages: bool = option(True, "normalise the advantages over each batch")
    normalize_observations: bool = option(False, "running mean/variance observation normalisation")
    scale_rewards: bool = option(False, "divide rewards by the running std of the discounted return")
    log_std_init: float = option(0.0, "initial log-std of the Gaussian policy (continuous actions)")


@hyperparameters
class HParams:
    max_kl: float = option(0.01, "KL trust-region radius δ", positive=True)
    damping: float = option(1e-3, "Tikhonov damping added to the Fisher-vector product", low=0.0)
    backtrack_ratio: float = option(0.8, "line-search shrink factor ρ", positive=True, high=1.0)
    gamma: float = option(0.99, "discount factor", low=0.0, high=1.0)
    gae_lambda: float = option(0.98, "GAE lambda", low=0.0, high=1.0)
    critic_lr: float = option(1e-3, "Adam learning rate of the critic regression", positive=True)


# Pendulum-v1 (the learning test's configuration): the CartPole batch and critic settings with
# observation normalisation, rewards divided by the running std of the discounted return (the
# raw returns, down to about -1,200 per episode, are far from the critic's initial outputs), a
# smaller initial exploration noise (σ = e^-0.5 ≈ 0.6 of the half-range: σ = 1 saturates the
# torque bounds most of the time) and a short horizon, γ 0.9, λ 0.95 (as rl-baselines3-zoo's
# Pendulum settings). Measured returns and the settings tried: docs/recipes/trpo.md.
PENDULUM_CONFIG = dict(
    total_steps=102_400, normalize_observations=True, scale_rewards=True, log_std_init=-0.5,
)
PENDULUM_HPARAMS = dict(gamma=0.9, gae_lambda=0.95)

def make(config: Config, env_name: str) -> Recipe:
    """Build TRPO's pure ``init``/``update``/``act`` for ``env_name`` (discrete or continuous actions)."""
    batch_size = config.num_envs * config.num_steps
    env = trust_region.make_env(config, env_name)

    def init(key, hp: HParams) -> State:
        return trust_region.init_state(key, env, config, optax.adam(hp.critic_lr))

    def update(state: State, hp: HParams):
        key, rollout_key, critic_key = jax.random.split(state.key, 3)
        actor, critic = state.networks
        # collect a batch with π_old; advantages and critic targets by GAE(γ, λ)
        env_state, obs, traj, gae = rollout.gae_rollout(
            rollout_key, env, state.env_state, state.obs, actor, critic,
            num_steps=config.num_steps, gamma=hp.gamma, lambda_=hp.gae_lambda,
        )
        batch = trust_region.flatten_batch(traj, gae)
        if config.normalize_advantages:
            batch = batch._replace(advantages=pgkit.normalized_advantages(batch.advantages))
        # maximise L(θ) s.t. KL̄ ≤ δ: CG direction, full natural step, backtracking line search
        objectives = trust_region.policy_objectives(actor, batch, discrete=env.discrete)
        step = pgkit.natural_gradient_step(
            objectives.surrogate, objectives.kl, objectives.params,
            trust_region.fisher_product(objectives, damping=hp.damping),
            max_kl=hp.max_kl, cg_iterations=config.cg_iterations,
            line_search=True, backtrack_ratio=hp.backtrack_ratio, max_backtracks=config.max_backtracks,
        )
        actor = objectives.rebuild(step.params)
        critic, critic_opt_state, value_loss = nn.fit_value(
            critic, state.critic_opt_state, optax.adam(hp.critic_lr), batch.obs, batch.targets, critic_key,
            epochs=config.critic_epochs, minibatches=config.critic_minibatches,
        )
        last_return, episodes = rollout.latest_episode_return(traj, state.last_return)
        stats = {
            "cg_residual": step.cg_residual_norm_squared,
            "accepted": step.accepted.astype(jnp.float32),
            "backtracks": step.num_backtracks.astype(jnp.float32),
            "step_fraction": step.step_fraction,
            "surrogate_improvement": step.surrogate_improvement,
            "kl": step.kl,
            "entropy": objectives.entropy,
            "gradient_norm": jnp.sqrt(sum(jnp.vdot(g, g) for g in jax.tree.leaves(step.gradient))),
            "value_loss": value_loss,
            "episode_return": last_return,
            "episodes": episodes.astype(jnp.float32),
        }
        return State(Networks(actor, critic), critic_opt_state, env_state, obs, key, last_return), stats

    def act(state: State, key, obs):
        """Greedy evaluation policy: argmax (discrete) or the mean (continuous); obs as the env gives them."""
        del key
        return nn.greedy_action(jax.vmap(state.networks.actor)(obs), discrete=env.discrete)

    return Recipe(init, update, act, env, batch_size, config.total_steps // batch_size)
