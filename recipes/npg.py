"""Natural policy gradient (Fisher-vector products and conjugate gradient), or natural actor-critic.

Algorithm (Kakade, 2001, "A Natural Policy Gradient",
https://papers.nips.cc/paper/2073-a-natural-policy-gradient; the truncated-natural-gradient
form of Schulman et al., 2015, https://arxiv.org/abs/1502.05477, and Rajeswaran et al., 2017,
https://arxiv.org/abs/1703.02660, algorithm 1), one ``update``:

    collect T steps from E environments with π_old;                  pgkit.rollout.gae_rollout
      advantages A by GAE(γ, λ) with the critic V
    normalise A over the batch (optional)                            pgkit.normalized_advantages
    g = ∇_θ L(θ) at θ_old,  L(θ) = mean[π_θ(a|s) / π_old(a|s) · A]      pgkit.trust_region.policy_objectives
    F v = ∇²_θ mean KL(π_old ‖ π_θ) · v + damping · v                 pgkit.trust_region.fisher_product
        = (1/N) Σ_s J_sᵀ M_s J_s v + damping · v  (J_s: Jacobian of the policy's outputs,
          M_s: the Fisher of the action distribution in them)
    direction x:
      "fisher":      x ≈ F⁻¹ g by conjugate gradient                  (in pgkit.natural_gradient_step)
      "compatible":  x = w, the least-squares fit A ≈ ψᵀ w on the compatible features
                     ψ = ∇_θ log π_θ(a|s) (natural actor-critic,     pgkit.empirical_fisher_vector_product
                     Peters & Schaal, 2008, https://doi.org/10.1016/j.neucom.2007.11.026)
      "nac":         x = w of the compatible critic A_w = ψᵀ w fitted to the rollout itself (episodic
                     natural actor-critic, Peters & Schaal 2008, table 2): every episode segment
                     of every environment is a row, R = Σ γᵗ r_t ≈ (Σ γᵗ ψ_t)ᵀ w + bᵀ v   pgkit.episode_segment_sums
                     with b = φ(s_start) − γᴴ φ(s_end), V = φᵀ v (φ = 1 or [1, s]),     pgkit.episodic_natural_actor_critic_weights
                     solved by CG (or exactly); g and the surrogate use A = ψᵀ w
    θ ← θ + sqrt(2 δ / xᵀ F x) · x   (½ sᵀ F s = δ = max_kl)          pgkit.natural_gradient_step
    fit V to the GAE targets: epochs of minibatch Adam               pgkit.nn.fit_value
      (not for "nac": its critic is (w, v), refitted from each batch; the value network is unused)

The step is the steepest ascent direction in distribution space,
``d* = argmax L(θ + d) s.t. KL(π_θ ‖ π_{θ+d}) ≤ δ``, with the quadratic model of the KL taken at
face value: no line search (adding one gives TRPO, ``recipes/trpo.py``).

The "compatible" direction builds per-sample score vectors ``[N, P]`` and solves the normal
equations of the least-squares fit, (F̂ + ridge·I) w = Ψᵀ A / N with the empirical Fisher
F̂ = ΨᵀΨ / N, by ``cg_iterations`` of conjugate gradient on ``pgkit.empirical_fisher_vector_product``
(O(N P) per iteration, so it runs on the default 64x64 policy, P = 4,610;
``pgkit.compatible_features_weights`` is the exact O(N P²) solve for small policies); the step
length uses the policy's Fisher product F, as in the "fisher" direction.

The "nac" direction learns no value network: the critic is the compatible function approximator
itself, w together with the value part v, by least squares on the discounted returns of the
batch's episode segments (a segment cut by a truncation or by the rollout's end bootstraps from
φ of its true next state). It steps along w as the lecture's natural actor-critic does
(∇J = G_θ w, so the natural gradient G_θ⁻¹ ∇J is w), with the step length of the other
directions. ``nac_solver="exact"`` solves by :func:`pgkit.compatible_features_weights`
(O(N P²), for small policies), ``"cg"`` by ``cg_iterations`` of CG; ``ridge`` is added to the
Fisher of the score sums. Its metric ``value_loss`` is the fit's mean squared residual over
the segments, ``cg_residual`` conjugate gradient's on the normal equations of w (0 when exact).

Defaults (CartPole-v1, the configuration of the learning tests, close to rl-baselines3-zoo's
TRPO CartPole setting): 4 envs x 256 steps (1,024 samples per update), 100 updates (102,400
steps), γ 0.99, λ 0.98, max_kl 0.01, damping 1e-3, 10 CG iterations, a 64x64 tanh policy and
critic, the critic fitted by 20 epochs of 2 minibatches of Adam at 1e-3, advantages normalised
per batch. Discrete actions use a categorical policy, continuous ones a Gaussian with a
state-independent log-std (``pgkit.nn.GaussianPolicy``).

Tested configurations, measured returns and tuning history: ``docs/recipes/npg.md``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.flatten_util import ravel_pytree

import pgkit
from pgkit import nn, rollout, trust_region
from pgkit.recipe import Recipe, hyperparameters, option
from pgkit.trust_region import Networks, State

NAME = "npg"
DESCRIPTION = "Natural policy gradient: Fisher-vector products + CG (or compatible features), GAE critic; or natural actor-critic"
DEFAULT_ENV = "CartPole-v1"


@dataclasses.dataclass(frozen=True)
class Config:
    total_steps: int = option(102_400, "environment steps per seed", positive=True)
    num_envs: int = option(4, "parallel environments per seed", positive=True)
    num_steps: int = option(256, "rollout length per environment per update", positive=True)
    hidden_sizes: tuple[int, ...] = option((64, 64), "hidden layer widths of policy and critic")
    activation: str = option("tanh", "hidden activation", choices=("tanh", "relu", "elu", "gelu", "silu"))
    direction: str = option(
        "fisher",
        "natural-gradient direction: CG on Fisher-vector products, compatible features fitted to the GAE "
        "advantages, or the episodic natural actor-critic (compatible critic fitted to the rollouts' returns)",
        choices=("fisher", "compatible", "nac"),
    )
    cg_iterations: int = option(10, "conjugate-gradient iterations (every direction)", positive=True)
    nac_baseline: str = option(
        "constant", "direction 'nac': the critic's value part V(s) = φ(s)ᵀv, φ = 1 or [1, observation]",
        choices=("constant", "linear"),
    )
    nac_solver: str = option(
        "cg", "direction 'nac': w by CG on the empirical Fisher, or the exact O(N P²) least squares (small policies)",
        choices=("cg", "exact"),
    )
    critic_epochs: int = option(20, "Adam epochs of critic regression per update (not direction 'nac')", positive=True)
    critic_minibatches: int = option(2, "minibatches per critic epoch (must divide num_envs*num_steps)", positive=True)
    normalize_advantages: bool = option(True, "normalise the advantages over each batch (not direction 'nac')")
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
    ridge: float = option(1e-3, "ridge added to the empirical Fisher (directions 'compatible' and 'nac')", low=0.0)


def make(config: Config, env_name: str) -> Recipe:
    """Build the natural policy gradient's pure ``init``/``update``/``act`` for ``env_name``."""
    batch_size = config.num_envs * config.num_steps
    env = trust_region.make_env(config, env_name)

    def init(key, hp: HParams) -> State:
        return trust_region.init_state(key, env, config, optax.adam(hp.critic_lr))

    def update(state: State, hp: HParams):
        key, rollout_key, critic_key = jax.random.split(state.key, 3)
        actor, critic = state.networks

        # 1-2. collect a batch with π_old; advantages and critic targets by GAE(γ, λ)
        env_state, obs, traj, gae = rollout.gae_rollout(
            rollout_key, env, state.env_state, state.obs, actor, critic,
            num_steps=config.num_steps, gamma=hp.gamma, lambda_=hp.gae_lambda,
        )
        batch = trust_region.flatten_batch(traj, gae)
        if config.normalize_advantages and config.direction != "nac":
            batch = batch._replace(advantages=pgkit.normalized_advantages(batch.advantages))
        # 3. the natural step on the policy: θ ← θ + sqrt(2δ / xᵀFx) x, x ≈ F⁻¹g (or compatible weights)
        objectives = trust_region.policy_objectives(actor, batch, discrete=env.discrete)
        stats = {}
        direction = None
        if config.direction == "compatible":
            direction, stats["cg_residual"] = compatible_direction(objectives, batch, hp.ridge, config.cg_iterations)
        elif config.direction == "nac":
            nac = natural_actor_critic_direction(objectives, batch, traj, hp, config)
            direction, stats["cg_residual"], value_loss = nac.direction, nac.cg_residual, nac.critic_loss
            # the surrogate (and its reported improvement) on the compatible critic's advantages ψᵀw
            objectives = trust_region.policy_objectives(
                actor, batch._replace(advantages=nac.advantages), discrete=env.discrete
            )
        fisher = trust_region.fisher_product(objectives, damping=hp.damping)
        step = pgkit.natural_gradient_step(
            objectives.surrogate, objectives.kl, objectives.params, fisher,
            max_kl=hp.max_kl, cg_iterations=config.cg_iterations, direction=direction,
        )
        if direction is None:
            stats["cg_residual"] = step.cg_residual_norm_squared
        actor = objectives.rebuild(step.params)
        # 4. critic regression on the GAE targets (the natural actor-critic's critic was fitted in 3)
        critic_opt_state = state.critic_opt_state
        if config.direction != "nac":
            critic, critic_opt_state, value_loss = nn.fit_value(
                critic, critic_opt_state, optax.adam(hp.critic_lr), batch.obs, batch.targets, critic_key,
                epochs=config.critic_epochs, minibatches=config.critic_minibatches,
            )
        last_return, episodes = rollout.latest_episode_return(traj, state.last_return)
        stats.update(
            surrogate_improvement=step.surrogate_improvement,
            kl=step.kl,
            entropy=objectives.entropy,
            gradient_norm=jnp.sqrt(sum(jnp.vdot(g, g) for g in jax.tree.leaves(step.gradient))),
            value_loss=value_loss,
            episode_return=last_return,
            episodes=episodes.astype(jnp.float32),
        )
        new_state = State(Networks(actor, critic), critic_opt_state, env_state, obs, key, last_return)
        return new_state, stats

    def act(state: State, key, obs):
        """Greedy evaluation policy: argmax (discrete) or the mean (continuous); obs as the env gives them."""
        del key
        return nn.greedy_action(jax.vmap(state.networks.actor)(obs), discrete=env.discrete)

    return Recipe(init, update, act, env, batch_size, config.total_steps // batch_size)


def compatible_direction(objectives: trust_region.PolicyObjectives, batch: trust_region.Batch, ridge, iterations: int):
    """Natural actor-critic's direction: the compatible-feature weights w, and CG's squared residual.

    w = argmin ‖Ψw − A‖² + N·ridge‖w‖² with ψ_i = ∇_θ log π_θ(a_i|s_i): the normal equations
    (F̂ + ridge) w = ΨᵀA / N solved matrix-free by CG, O(N P) per iteration
    (:func:`pgkit.compatible_features_weights` is the exact O(N P²) solve of the same problem).
    """
    _, unravel = ravel_pytree(objectives.params)
    scores = score_vectors(objectives, batch)  # ψ_i, [N, P]
    cg = pgkit.conjugate_gradient(
        lambda v: pgkit.empirical_fisher_vector_product(scores, v, damping=ridge),
        scores.T @ batch.advantages / scores.shape[0],
        iterations=iterations,
    )
    return unravel(cg.solution), cg.residual_norm_squared


class NaturalActorCriticStep(NamedTuple):
    """What :func:`natural_actor_critic_direction` hands to the natural step."""

    direction: Any  # w as a pytree shaped like the policy's parameters
    advantages: jax.Array  # [N] the compatible critic's A_w(s, a) = ψᵀw of every sample
    cg_residual: jax.Array  # CG's squared residual on the normal equations of w (0 when exact)
    critic_loss: jax.Array  # Σ_m q_m (R_m − Ψ_mᵀw − b_mᵀv)², the fit's mean squared residual


def natural_actor_critic_direction(objectives, batch, traj, hp: HParams, config: Config) -> NaturalActorCriticStep:
    """Episodic natural actor-critic (Peters & Schaal 2008, table 2): w from the rollout's own returns.

    Every segment of every environment's stream (a whole episode, or its part inside this
    rollout) is one row: its discounted return R, the discounted sum of compatible features
    Ψ = Σ γᵗ ψ_t, and the value part φ(s_start) − γᴴ φ(s_end) (pgkit.episode_segment_sums);
    R ≈ Ψᵀw + bᵀv by least squares (pgkit.episodic_natural_actor_critic_weights) gives the
    compatible critic A_w = ψᵀw, and w is the natural gradient.
    """
    _, unravel = ravel_pytree(objectives.params)
    scores = score_vectors(objectives, batch)  # ψ_i, [N, P]
    steps = traj.rewards.shape
    if config.nac_baseline == "linear":
        def features(obs):
            return jnp.concatenate([jnp.ones(obs.shape[:-1] + (1,), obs.dtype), obs], axis=-1)

        state_features, next_features = features(traj.obs), features(traj.next_obs)
    else:
        state_features = next_features = None
    segments = pgkit.episode_segment_sums(
        scores.reshape(steps + scores.shape[-1:]), traj.rewards, traj.discounts, traj.dones,
        state_features, next_features,
    )
    rows = segments.ends.reshape(-1).astype(scores.dtype)
    fit = pgkit.episodic_natural_actor_critic_weights(
        segments.score_sums.reshape(scores.shape),
        segments.returns.reshape(-1),
        segments.baseline_features.reshape((rows.shape[0], -1)),
        rows,
        ridge=hp.ridge,
        iterations=config.cg_iterations if config.nac_solver == "cg" else None,
    )
    critic_loss = jnp.sum(rows * fit.residuals**2) / jnp.sum(rows)
    w = fit.natural_gradient
    return NaturalActorCriticStep(unravel(w), scores @ w, fit.cg_residual_norm_squared, critic_loss)


def score_vectors(objectives: trust_region.PolicyObjectives, batch: trust_region.Batch):
    """The compatible features ψ_i = ∇_θ log π_θ(a_i|s_i) of every sample, flattened: ``[N, P]``."""

    def log_prob(p, obs, action):
        return objectives.rebuild(p).distribution(obs).log_prob(action)

    scores = jax.vmap(jax.grad(log_prob), in_axes=(None, 0, 0))(objectives.params, batch.obs, batch.actions)
    return jax.vmap(lambda s: ravel_pytree(s)[0])(scores)
