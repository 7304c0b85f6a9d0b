"""Natural policy gradient (Fisher-vector products and conjugate gradient), or natural actor-critic.

Algorithm (Kakade, 2001, "A Natural Policy Gradient",
https://papers.nips.cc/paper/2073-a-natural-policy-gradient; the truncated-natural-gradient
form of Schulman et al., 2015, https://arxiv.org/abs/1502.05477, and Rajeswaran et al., 2017,
https://arxiv.org/abs/1703.02660), one ``update``:

    collect T steps from E environments with π_old                   pgkit.rollout.rollout
    advantages A by GAE(γ, λ) with the critic V                       pgkit.gae
    g = ∇_θ L(θ) at θ_old,  L(θ) = mean[π_θ(a|s) / π_old(a|s) · A]      pgkit.log_ratios
    F v = ∇²_θ mean KL(π_old ‖ π_θ) · v + damping · v                 pgkit.gauss_newton_fisher_product
        = (1/N) Σ_s J_sᵀ M_s J_s v + damping · v  (J_s: Jacobian of the policy's outputs,
          M_s: the Fisher of the action distribution in them)
    direction:
      "fisher":      x ≈ F⁻¹ g by conjugate gradient                  pgkit.conjugate_gradient
      "compatible":  x = w, the least-squares fit A ≈ ψᵀ w on the compatible features
                     ψ = ∇_θ log π_θ(a|s) (natural actor-critic,     pgkit.compatible_features_weights
                     Peters & Schaal, 2008, https://doi.org/10.1016/j.neucom.2007.11.026)
    θ ← θ + sqrt(2 δ / xᵀ F x) · x   (½ sᵀ F s = δ = max_kl)          pgkit.natural_step
    fit V to the GAE targets: a few epochs of minibatch Adam          pgkit.value_loss

The step is the steepest ascent direction in distribution space (the seed notes' "Natural
Gradient", ``d* = argmax J(θ + d) s.t. KL(π_θ ‖ π_{θ+d}) ≤ ε``) with the quadratic model of the
KL taken at face value: no line search (that is TRPO, ``recipes/trpo.py``).

The "compatible" direction builds per-sample score vectors ``[N, P]`` and solves the normal
equations of the least-squares fit, (F̂ + ridge·I) w = Ψᵀ A / N with the empirical Fisher
F̂ = ΨᵀΨ / N, by ``cg_iterations`` of conjugate gradient on ``pgkit.empirical_fisher_vector_product``
(O(N P) per iteration, so it runs on the default 64x64 policy, P = 4,610;
``pgkit.compatible_features_weights`` is the exact O(N P²) solve for small policies). With the
defaults otherwise, CartPole ends at a mean final return of 426 over 32 seeds (master seeds 0-3
x 8, 102,400 steps; 8-seed means 404-458; 451 and 404-475 with the step length's Fisher product
as the Hessian of the KL, the same algorithm in other last bits). An earlier version solved the
least-squares problem exactly with a (16,) policy and ended at a mean of 273: the small network,
not the empirical Fisher, held it back.

Tested configurations, measured returns and tuning history: ``docs/recipes/npg.md``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
from jax.flatten_util import ravel_pytree

import pgkit
from pgkit import envs, nn, rollout
from pgkit.recipe import ConfigError, Recipe, hyperparameters, option

NAME = "npg"
DESCRIPTION = "Natural policy gradient: Fisher-vector products + CG (or compatible features), GAE critic"
DEFAULT_ENV = "CartPole-v1"


@dataclasses.dataclass(frozen=True)
class Config:
    total_steps: int = option(102_400, "environment steps per seed", positive=True)
    num_envs: int = option(4, "parallel environments per seed", positive=True)
    num_steps: int = option(256, "rollout length per environment per update", positive=True)
    hidden_sizes: tuple[int, ...] = option((64, 64), "hidden layer widths of policy and critic")
    activation: str = option("tanh", "hidden activation", choices=("tanh", "relu", "elu", "gelu", "silu"))
    direction: str = option(
        "fisher", "natural-gradient direction: CG on Fisher-vector products, or compatible features (NAC)",
        choices=("fisher", "compatible"),
    )
    cg_iterations: int = option(10, "conjugate-gradient iterations (either direction)", positive=True)
    critic_epochs: int = option(20, "Adam epochs of critic regression per update", positive=True)
    critic_minibatches: int = option(2, "minibatches per critic epoch (must divide num_envs*num_steps)", positive=True)
    normalize_advantages: bool = option(True, "normalise the advantages over each batch")
    normalize_observations: bool = option(False, "running mean/variance observation normalisation")
    scale_rewards: bool = option(False, "divide rewards by the running std of the discounted return")
    log_std_init: float = option(0.0, "initial log-std of the Gaussian policy (continuous actions)")


@hyperparameters
class HParams:
    max_kl: float = option(0.01, "KL trust-region radius δ of the natural step", positive=True)
    damping: float = option(1e-3, "Tikhonov damping added to the Fisher-vector product", low=0.0)
    gamma: float = option(0.99, "discount factor", low=0.0, high=1.0)
    gae_lambda: float = option(0.98, "GAE lambda", low=0.0, high=1.0)
    critic_lr: float = option(1e-3, "Adam learning rate of the critic regression", positive=True)
    ridge: float = option(1e-3, "ridge added to the empirical Fisher (direction 'compatible')", low=0.0)


class Networks(NamedTuple):
    actor: Any
    critic: Any


class State(NamedTuple):
    networks: Networks
    critic_opt_state: Any
    env_state: Any
    obs: jax.Array  # [E, obs_size]
    key: jax.Array  # PRNGKey (uint32[2])
    last_return: jax.Array  # last known completed-episode return


def make(config: Config, env_name: str, *, line_search: bool = False) -> Recipe:
    """Build the natural policy gradient's pure ``init``/``update``/``act`` for ``env_name``.

    ``line_search=True`` adds TRPO's backtracking line search to the natural step
    (``recipes/trpo.py``; its config and hyperparameters carry ``max_backtracks`` and
    ``backtrack_ratio``).
    """
    if line_search and not hasattr(config, "max_backtracks"):
        raise ConfigError("line_search=True needs a config with 'max_backtracks' (recipes.trpo.Config)")
    batch_size = config.num_envs * config.num_steps
    if batch_size % config.critic_minibatches:
        raise ConfigError(
            f"option 'critic_minibatches' must divide num_envs*num_steps={batch_size}, got {config.critic_minibatches}"
        )
    if any(h < 1 for h in config.hidden_sizes):
        raise ConfigError(f"option 'hidden_sizes' must be positive widths, got {config.hidden_sizes}")
    env = envs.make(
        env_name,
        num_envs=config.num_envs,
        normalize_observations=config.normalize_observations,
        scale_rewards=config.scale_rewards,
    )
    num_updates = config.total_steps // batch_size
    minibatch_size = batch_size // config.critic_minibatches
    critic_optimizer = optax.scale_by_adam()  # the learning rate stays a traced hyperparameter

    def init(key, hp: HParams) -> State:
        key, actor_key, critic_key, env_key = jax.random.split(key, 4)
        networks = build_networks(config, env, actor_key, critic_key)
        env_state, obs = env.reset(env_key)
        opt_state = critic_optimizer.init(eqx.filter(networks.critic, eqx.is_array))
        return State(networks, opt_state, env_state, obs, key, jnp.float32(0.0))

    def update(state: State, hp: HParams):
        key, rollout_key, critic_key = jax.random.split(state.key, 3)
        actor, critic = state.networks

        # 1. collect a batch with π_old
        act_fn = rollout.actor_critic_act_fn(actor, critic, discrete=env.discrete)
        env_state, obs, traj = rollout.rollout(
            rollout_key, env, state.env_state, state.obs, act_fn,
            num_steps=config.num_steps, gamma=hp.gamma, value_fn=jax.vmap(critic),
        )
        # 2. advantages and critic targets
        gae = pgkit.gae(
            traj.rewards, traj.discounts, traj.dones, traj.values, traj.next_values, lambda_=hp.gae_lambda
        )
        batch = flatten_batch(traj, gae, batch_size, config.normalize_advantages)
        # 3. the natural step on the policy (TRPO: full step, then backtracking under the KL constraint)
        search = dict(backtrack_ratio=hp.backtrack_ratio, max_backtracks=config.max_backtracks) if line_search else {}
        actor, policy_stats = natural_update(actor, batch, hp, config, env.discrete, line_search=line_search, **search)
        # 4. critic regression
        critic, critic_opt_state, value_loss = fit_critic(
            critic, state.critic_opt_state, critic_optimizer, batch, hp.critic_lr, critic_key,
            epochs=config.critic_epochs, minibatches=config.critic_minibatches, minibatch_size=minibatch_size,
        )
        mean_return, episodes = rollout.completed_episode_statistics(traj)
        last_return = jnp.where(episodes > 0, mean_return, state.last_return)
        stats = dict(policy_stats, value_loss=value_loss, episode_return=last_return, episodes=episodes.astype(jnp.float32))
        new_state = State(Networks(actor, critic), critic_opt_state, env_state, obs, key, last_return)
        return new_state, stats

    def act(state: State, key, obs):
        """Greedy evaluation policy: argmax (discrete) or the mean (continuous); obs as the env gives them."""
        del key
        return nn.greedy_action(jax.vmap(state.networks.actor)(obs), discrete=env.discrete)

    return Recipe(init, update, act, env, batch_size, num_updates)


# ----------------------------------------------------------------------------- pieces shared with TRPO
# (recipes/trpo.py is this update plus a line search; it imports these rather than repeating them)


class Batch(NamedTuple):
    """The rollout flattened to N = T·E samples."""

    obs: jax.Array  # [N, obs_size]
    actions: jax.Array  # [N] or [N, action_size]
    log_probs: jax.Array  # [N] log π_old(a|s)
    advantages: jax.Array  # [N] (normalised if configured)
    targets: jax.Array  # [N] critic regression targets (GAE λ-returns)


def build_networks(config, env, actor_key, critic_key) -> Networks:
    net = dict(hidden_sizes=config.hidden_sizes, activation=config.activation)
    if env.discrete:
        actor = nn.CategoricalPolicy(env.observation_size, env.num_actions, key=actor_key, **net)
    else:
        actor = nn.GaussianPolicy(
            env.observation_size, env.action_size, log_std_init=config.log_std_init, key=actor_key, **net
        )
    critic = nn.ValueCritic(env.observation_size, key=critic_key, **net)
    return Networks(actor, critic)


def flatten_batch(traj, gae, batch_size: int, normalize_advantages: bool) -> Batch:
    flat = jax.tree.map(
        lambda x: x.reshape((batch_size,) + x.shape[2:]),
        (traj.obs, traj.actions, traj.log_probs, gae.advantages, gae.targets),
    )
    batch = Batch(*flat)
    if normalize_advantages:
        advantages = batch.advantages
        batch = batch._replace(advantages=(advantages - advantages.mean()) / (advantages.std() + 1e-8))
    return batch


def policy_functions(actor, batch: Batch, discrete: bool):
    """(params, rebuild, surrogate_fn, kl_fn, entropy) for the policy at θ_old = ``actor``."""
    params, static = eqx.partition(actor, eqx.is_array)

    def rebuild(p):
        return eqx.combine(p, static)

    old = jax.lax.stop_gradient(jax.vmap(actor)(batch.obs))  # logits, or (mean, log_std)

    def log_probs_of(p):
        return nn.policy_distribution(jax.vmap(rebuild(p))(batch.obs), discrete=discrete).log_prob(batch.actions)

    def surrogate_fn(p):
        """L(θ) = mean[exp(log π_θ − log π_old) · A], maximised."""
        ratios = jnp.exp(pgkit.log_ratios(log_probs_of(p), batch.log_probs))
        return jnp.mean(ratios * batch.advantages)

    def kl_fn(p):
        """mean_s KL(π_old(·|s) ‖ π_θ(·|s)) over the batch states, π_old fixed."""
        new = jax.vmap(rebuild(p))(batch.obs)
        if discrete:
            return jnp.mean(pgkit.categorical_kl(old, new))
        return jnp.mean(pgkit.gaussian_kl(old[0], old[1], new[0], new[1]))

    if discrete:
        entropy = jnp.mean(pgkit.categorical_entropy(old))
    else:
        entropy = jnp.mean(pgkit.gaussian_entropy(old[1]))
    return params, rebuild, surrogate_fn, kl_fn, entropy


def _score_vectors(params, rebuild, batch: Batch):
    """ψ_i = ∇_θ log π_θ(a_i|s_i), flattened: ``[N, P]``."""

    def log_prob(p, obs, action):
        return rebuild(p).distribution(obs).log_prob(action)

    scores = jax.vmap(jax.grad(log_prob), in_axes=(None, 0, 0))(params, batch.obs, batch.actions)
    return jax.vmap(lambda s: ravel_pytree(s)[0])(scores)


def natural_update(actor, batch: Batch, hp, config, discrete: bool, *, line_search: bool, backtrack_ratio=0.5,
                    max_backtracks: int = 10):
    """One natural-gradient step on the policy (with TRPO's line search if ``line_search``)."""
    params, rebuild, surrogate_fn, kl_fn, entropy = policy_functions(actor, batch, discrete)
    gradient = jax.grad(surrogate_fn)(params)

    fvp = pgkit.gauss_newton_fisher_product(
        lambda p: jax.vmap(rebuild(p))(batch.obs),  # logits, or (mean, log_std), per state
        params,
        pgkit.categorical_fisher_product if discrete else pgkit.gaussian_fisher_product,
        damping=hp.damping,
    )

    stats = {}
    if getattr(config, "direction", "fisher") == "compatible":
        # w = argmin ‖Ψw − A‖² + N·ridge‖w‖²: the normal equations (F̂ + ridge) w = ΨᵀA / N solved
        # matrix-free by CG, O(N P) per iteration (pgkit.compatible_features_weights is the exact
        # O(N P²) solve of the same problem, for small policies)
        _, unravel = ravel_pytree(params)
        scores = _score_vectors(params, rebuild, batch)
        cg = pgkit.conjugate_gradient(
            lambda v: pgkit.empirical_fisher_vector_product(scores, v, damping=hp.ridge),
            scores.T @ batch.advantages / scores.shape[0],
            iterations=config.cg_iterations,
        )
        direction = unravel(cg.solution)
        stats["cg_residual"] = cg.residual_norm_squared
    else:
        cg = pgkit.conjugate_gradient(fvp, gradient, iterations=config.cg_iterations)
        direction = cg.solution
        stats["cg_residual"] = cg.residual_norm_squared
    full_step = pgkit.natural_step(direction, fvp(direction), max_kl=hp.max_kl)
    if line_search:
        search = pgkit.backtracking_line_search(
            surrogate_fn, kl_fn, params, full_step, max_kl=hp.max_kl,
            backtrack_ratio=backtrack_ratio, max_backtracks=max_backtracks,
        )
        new_params = search.params
        stats["accepted"] = search.accepted.astype(jnp.float32)
        stats["backtracks"] = search.num_backtracks.astype(jnp.float32)
        stats["step_fraction"] = search.step_fraction
    else:
        new_params = jax.tree.map(lambda p, s: p + s, params, full_step)
    stats["surrogate_improvement"] = surrogate_fn(new_params) - surrogate_fn(params)
    stats["kl"] = kl_fn(new_params)
    stats["entropy"] = entropy
    stats["gradient_norm"] = jnp.sqrt(sum(jnp.vdot(g, g) for g in jax.tree.leaves(gradient)))
    return rebuild(new_params), stats


def fit_critic(critic, opt_state, optimizer, batch: Batch, lr, key, *, epochs: int, minibatches: int,
                minibatch_size: int):
    """Regress V on the targets: ``epochs`` passes of ``minibatches`` Adam steps on ½(V − target)²."""
    params, static = eqx.partition(critic, eqx.is_array)
    batch_size = minibatches * minibatch_size

    def loss_fn(p, obs, targets):
        values = jax.vmap(eqx.combine(p, static))(obs)
        return jnp.mean(pgkit.value_loss(values, targets))

    def minibatch_step(carry, indices):
        p, opt_state = carry
        loss, grads = jax.value_and_grad(loss_fn)(p, batch.obs[indices], batch.targets[indices])
        updates, opt_state = optimizer.update(grads, opt_state)
        p = optax.apply_updates(p, jax.tree.map(lambda u: -lr * u, updates))
        return (p, opt_state), loss

    def epoch(carry, key):
        perm = jax.random.permutation(key, batch_size).reshape(minibatches, minibatch_size)
        return jax.lax.scan(minibatch_step, carry, perm)

    (params, opt_state), losses = jax.lax.scan(epoch, (params, opt_state), jax.random.split(key, epochs))
    return eqx.combine(params, static), opt_state, jnp.mean(losses)
