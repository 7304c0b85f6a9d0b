"""Variance and bias of policy-gradient estimators for one fixed CartPole-v1 policy.

For one policy snapshot θ (a 32x32 tanh ``pgkit.nn.CategoricalPolicy`` trained for a few PPO
updates, so that episodes have varied lengths) this study samples complete episodes and measures,
for every return / baseline choice of REINFORCE and for GAE at several λ, the policy-gradient
estimate of a batch of B episodes,

    ĝ_B = (1/B) Σ_i Σ_t ∇_θ log π_θ(a_it | s_it) · w_it,

its total variance tr Cov(ĝ_B) (over many independent batches) and its bias ‖E ĝ_B − ∇J(θ)‖
against a reference gradient from a large independent sample. The objective is the undiscounted
return of a CartPole-v1 episode (at most 500 steps), J(θ) = E[Σ_t r_t], as in the lecture notes
(001, "Reducing variance - Causality", "- Baselines", "Analyzing the variance"); the time limit
ends the episode, so every estimator uses ``discounts = 1 − done`` (γ = 1, nothing bootstrapped
past the end of an episode).

Estimators (every weight from a pgkit function; "batch" baselines are computed from the B
episodes of the batch itself, "fixed" ones are constants estimated once on the independent
reference sample, as in the notes' derivation of the optimal constant):

    whole-trajectory   w_it = R(τ_i) − b          pgkit.reinforce_loss(causal=False)
        b ∈ {0, mean (pgkit.mean_baseline), optimal scalar and per-parameter
        (pgkit.optimal_baseline, b* = E[g² R] / E[g²] with g = ∇ log π(τ))}, batch or fixed
    reward-to-go       w_it = G_it − b             pgkit.reinforce_loss(causal=True)
        b ∈ {0, mean reward-to-go (batch or fixed), learned V(s_it)}
    GAE(λ)             w_it = A^λ_it               pgkit.gae + pgkit.score_function_loss
        λ ∈ {0, 0.5, 0.9, 0.95, 1}, with the same learned V

The critic V is a ``pgkit.nn.ValueCritic`` fitted with ``pgkit.value_loss`` to Monte-Carlo
returns of a separate pilot sample of episodes. The reference gradient is the mean of the
reward-to-go estimator (no baseline) over a large independent sample; its standard error is
reported. Constant baselines enter linearly, Σ_t ∇log π_t (w_t − b) = Σ_t ∇log π_t w_t − b·∇log π(τ),
so the per-episode gradients of the unbaselined estimators and the episode score ∇log π(τ) give
every baselined row (``tests/test_variance_study.py`` checks this identity against
``pgkit.reinforce_loss(baselines=b)``). Standard errors and the ordering verdicts come from a
paired bootstrap over batches.

    python bench/variance_study.py            # full study; writes docs/variance_study.{md,png}
    python bench/variance_study.py --quick    # small sample (a minute or two); prints only
    python bench/variance_study.py --seed 1 --out /tmp/study   # another key, elsewhere
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import functools
import os
import platform
import sys
import time
from typing import NamedTuple

import distrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree

import pgkit
from pgkit import envs, nn, rollout

# ----------------------------------------------------------------------------- settings


@dataclasses.dataclass(frozen=True)
class Settings:
    """Everything that defines one run of the study (all static)."""

    env: str = "CartPole-v1"
    max_steps: int | None = None  # override of the env's episode limit (None: its own, 500)
    hidden_sizes: tuple[int, ...] = (32, 32)  # policy snapshot
    snapshot_updates: int = 32  # PPO updates of 4 envs x 128 steps
    critic_hidden_sizes: tuple[int, ...] = (64, 64)
    critic_steps: int = 3000  # Adam steps fitting V to Monte-Carlo returns
    critic_batch: int = 512
    critic_lr: float = 1e-3
    pilot_episodes: int = 2048  # episodes the critic is fitted on (10% held out)
    reference_episodes: int = 16384  # reference gradient and the fixed baselines
    batch_size: int = 16  # B, episodes per gradient estimate
    num_batches: int = 512  # M, independent batches per estimator
    lambdas: tuple[float, ...] = (0.0, 0.5, 0.9, 0.95, 1.0)
    bootstrap: int = 1000
    rollout_envs: int = 512  # episodes collected per rollout call
    grad_chunk: int = 64  # episodes per per-episode-gradient call
    min_bucket: int = 32  # shortest padded episode length compiled


FULL = Settings()
QUICK = dataclasses.replace(
    FULL, pilot_episodes=1024, reference_episodes=4096, num_batches=128, critic_steps=1500, bootstrap=400
)

FAMILY_WHOLE, FAMILY_RTG, FAMILY_GAE = "whole-trajectory R(τ)", "reward-to-go G_t", "GAE"


def estimator_names(lambdas) -> list[tuple[str, str]]:
    """(family, name) of every row of the table, in order."""
    rows = [
        (FAMILY_WHOLE, "R(τ), no baseline"),
        (FAMILY_WHOLE, "R(τ) − mean (batch)"),
        (FAMILY_WHOLE, "R(τ) − mean (fixed)"),
        (FAMILY_WHOLE, "R(τ) − optimal scalar (batch)"),
        (FAMILY_WHOLE, "R(τ) − optimal scalar (fixed)"),
        (FAMILY_WHOLE, "R(τ) − optimal per-param (batch)"),
        (FAMILY_WHOLE, "R(τ) − optimal per-param (fixed)"),
        (FAMILY_RTG, "G_t, no baseline"),
        (FAMILY_RTG, "G_t − mean (batch)"),
        (FAMILY_RTG, "G_t − mean (fixed)"),
        (FAMILY_RTG, "G_t − V(s_t) (learned)"),
    ]
    rows += [(FAMILY_GAE, f"GAE λ={lam:g}") for lam in lambdas]
    return rows


# ----------------------------------------------------------------------------- snapshot


def train_snapshot(settings: Settings, seed: int = 0) -> nn.CategoricalPolicy:
    """The policy snapshot: ``settings.snapshot_updates`` PPO updates on ``settings.env``."""
    from pgkit import experiment

    steps = 4 * 128 * settings.snapshot_updates
    result = experiment.train(
        "ppo",
        env=settings.env,
        seeds=1,
        seed=seed,
        config=dict(total_steps=steps, num_envs=4, num_steps=128, hidden_sizes=settings.hidden_sizes),
        log=None,
    )
    actor = result.state.networks.actor
    return jax.tree.map(lambda x: x[0] if eqx.is_array(x) else x, actor)


def random_policy(settings: Settings, key) -> nn.CategoricalPolicy:
    """A freshly initialised policy (near-uniform actions): a cheap snapshot for smoke tests."""
    env = make_env(settings, 1)
    return nn.CategoricalPolicy(
        env.observation_size, env.num_actions, hidden_sizes=settings.hidden_sizes, key=key
    )


@functools.lru_cache(maxsize=None)
def make_env(settings: Settings, num_envs: int) -> envs.VecEnv:
    params = None if settings.max_steps is None else {"max_steps_in_episode": settings.max_steps}
    return envs.make(settings.env, num_envs=num_envs, env_params=params)


# ----------------------------------------------------------------------------- episodes


class Episodes(NamedTuple):
    """The first episode of each of N environments, time-major ``[T, N]`` (host NumPy).

    T is the env's step limit; steps after an episode's end are padding: ``mask`` is 0 there and
    ``rewards`` are zeroed.
    """

    obs: np.ndarray  # [T, N, obs_size]
    actions: np.ndarray  # [T, N]
    rewards: np.ndarray  # [T, N]
    dones: np.ndarray  # [T, N] bool
    mask: np.ndarray  # [T, N] float, 1 up to and including the episode's done step
    next_obs: np.ndarray  # [T, N, obs_size]
    returns: np.ndarray  # [T, N] Monte-Carlo reward-to-go G_t (pgkit.reward_to_go; 0 on padding)
    lengths: np.ndarray  # [N] int


@functools.partial(jax.jit, static_argnames=("env", "horizon"))
def _first_episodes(key, policy, env, horizon):
    reset_key, run_key = jax.random.split(key)
    env_state, obs = env.reset(reset_key)

    def act_fn(k, o):
        dist = distrax.Categorical(logits=jax.vmap(policy)(o))
        actions, log_probs = dist.sample_and_log_prob(seed=k)
        return actions, log_probs, jnp.zeros(o.shape[:1])

    _, _, traj = rollout.rollout(run_key, env, env_state, obs, act_fn, num_steps=horizon, gamma=1.0)
    first_done = jnp.argmax(traj.dones, axis=0)
    finished = jnp.any(traj.dones, axis=0)
    mask = (jnp.arange(horizon)[:, None] <= first_done[None, :]).astype(jnp.float32)
    rewards = traj.rewards * mask
    returns = pgkit.reward_to_go(rewards, 1.0 - traj.dones.astype(jnp.float32), traj.dones)
    return (traj.obs, traj.actions, rewards, traj.dones, mask, traj.next_obs, returns,
            first_done + 1, finished)


def collect(key, policy, settings: Settings, num_episodes: int) -> Episodes:
    """``num_episodes`` complete episodes of ``policy`` (fresh resets; first episode per env)."""
    env = make_env(settings, settings.rollout_envs)
    horizon = int(env.env_params.max_steps_in_episode)  # every first episode ends by then
    parts = []
    calls = -(-num_episodes // settings.rollout_envs)
    for k in jax.random.split(key, calls):
        *arrays, finished = _first_episodes(k, policy, env, horizon)
        if not bool(np.all(np.asarray(finished))):
            raise RuntimeError("an episode did not end within the environment's step limit")
        parts.append([np.asarray(a) for a in arrays])
    arrays = [np.concatenate([p[i] for p in parts], axis=0 if parts[0][i].ndim == 1 else 1)
              for i in range(len(parts[0]))]
    arrays = [a[..., :num_episodes] if a.ndim == 1 else a[:, :num_episodes] for a in arrays]
    return Episodes(*arrays)


def _select(episodes: Episodes, index: np.ndarray, steps: int) -> Episodes:
    return Episodes(*[a[index] if name == "lengths" else a[:steps, index]
                      for name, a in zip(Episodes._fields, episodes)])


def _bucket(length: int, horizon: int, smallest: int) -> int:
    """Pad lengths to a power of two (>= ``smallest``) so that few shapes are compiled."""
    return min(horizon, max(smallest, 1 << (int(length) - 1).bit_length()))


# ----------------------------------------------------------------------------- critic


class Critic(eqx.Module):
    """V(s) = offset + scale · net((s − obs_mean) / obs_std): a ValueCritic on standardised data."""

    net: nn.ValueCritic
    obs_mean: jax.Array
    obs_std: jax.Array
    offset: jax.Array
    scale: jax.Array

    def normalised(self, obs):
        return self.net((obs - self.obs_mean) / self.obs_std)

    def __call__(self, obs):
        return self.offset + self.scale * self.normalised(obs)


def _padded(x: np.ndarray) -> np.ndarray:
    """``x`` padded along axis 0 to a power of two (so that few shapes are compiled)."""
    size = 1 << (max(x.shape[0], 1) - 1).bit_length()
    return np.concatenate([x, np.zeros((size - x.shape[0],) + x.shape[1:], x.dtype)])


@jax.jit
def _critic_values(critic, states):
    return jax.vmap(critic)(states)


@functools.partial(jax.jit, static_argnames=("steps", "batch"))
def _fit(critic, opt_state, key, states, targets, count, lr, steps, batch):
    optimizer = optax.adam(lr)

    def loss(critic, idx):
        pred = jax.vmap(critic.normalised)(states[idx])
        return pgkit.value_loss(pred, (targets[idx] - critic.offset) / critic.scale).mean()

    def step(carry, k):
        critic, opt_state = carry
        idx = jax.random.randint(k, (batch,), 0, count)  # the first ``count`` rows are data
        grads = eqx.filter_grad(loss)(critic, idx)
        updates, opt_state = optimizer.update(grads, opt_state, critic)
        return (eqx.apply_updates(critic, updates), opt_state), None

    (critic, opt_state), _ = jax.lax.scan(step, (critic, opt_state), jax.random.split(key, steps))
    return critic


def fit_critic(key, episodes: Episodes, settings: Settings) -> tuple[Critic, float]:
    """Fit V to Monte-Carlo returns (pgkit.value_loss); returns (critic, held-out explained variance)."""
    returns = episodes.returns
    n = episodes.lengths.shape[0]
    held_out = np.arange(n) >= int(0.9 * n)
    valid = episodes.mask > 0
    train = valid & ~held_out[None, :]
    test = valid & held_out[None, :]
    states, targets = episodes.obs[train], returns[train]
    init_key, fit_key = jax.random.split(key)
    critic = Critic(
        net=nn.ValueCritic(states.shape[-1], hidden_sizes=settings.critic_hidden_sizes, key=init_key),
        obs_mean=jnp.asarray(states.mean(0)),
        obs_std=jnp.asarray(states.std(0) + 1e-6),
        offset=jnp.asarray(targets.mean(), jnp.float32),
        scale=jnp.asarray(targets.std() + 1e-6, jnp.float32),
    )
    opt_state = optax.adam(settings.critic_lr).init(eqx.filter(critic, eqx.is_array))
    critic = _fit(critic, opt_state, fit_key, _padded(states), _padded(targets), states.shape[0],
                  jnp.float32(settings.critic_lr), settings.critic_steps, settings.critic_batch)
    if test.any():
        pred = np.asarray(_critic_values(critic, _padded(episodes.obs[test])))[: int(test.sum())]
        explained = 1.0 - np.var(returns[test] - pred) / np.var(returns[test])
    else:
        explained = float("nan")
    return critic, float(explained)


# ----------------------------------------------------------------------------- gradients

# per-episode outputs of _episode_gradients, rows of its [K, P] Jacobian
SCORE, WHOLE, RTG, RTG_V, GAE0 = 0, 1, 2, 3, 4


@functools.partial(jax.jit, static_argnames=("lambdas",))
def _episode_gradients(policy, critic, obs, actions, rewards, dones, mask, next_obs, lambdas):
    """Per-episode gradient estimates Σ_t ∇log π(a_t|s_t) w_t, flattened: [N, K, P].

    Rows: the episode score ∇log π(τ) (w = 1), whole-trajectory R(τ), reward-to-go G_t,
    G_t − V(s_t), then GAE(λ) for each λ. Also the return R(τ) [N] and Σ_t G_t [N].
    """
    params, static = eqx.partition(policy, eqx.is_array)
    flat, unravel = ravel_pytree(params)

    def log_probs(flat, obs, actions):
        policy = eqx.combine(unravel(flat), static)
        return distrax.Categorical(logits=jax.vmap(policy)(obs)).log_prob(actions)

    def one(obs, actions, rewards, dones, mask, next_obs):
        discounts = 1.0 - dones.astype(jnp.float32)  # the time limit ends the episode (γ = 1)
        values = jax.vmap(critic)(obs)
        next_values = jax.vmap(critic)(next_obs)
        advantages = [
            pgkit.gae(rewards, discounts, dones, values, next_values, lambda_=lam).advantages
            for lam in lambdas
        ]

        def surrogates(flat):
            lp = log_probs(flat, obs, actions)
            losses = [
                pgkit.score_function_loss(lp, jnp.ones_like(lp)),
                pgkit.reinforce_loss(lp, rewards, discounts, dones, causal=False),
                pgkit.reinforce_loss(lp, rewards, discounts, dones, causal=True),
                pgkit.reinforce_loss(lp, rewards, discounts, dones, causal=True, baselines=values),
                *[pgkit.score_function_loss(lp, adv) for adv in advantages],
            ]
            # minus the summed loss of the episode: its gradient is the gradient estimate
            return -jnp.stack([jnp.sum(mask * loss) for loss in losses])

        jacobian = jax.jacrev(surrogates)(flat)
        episode_return = pgkit.episode_returns(rewards, discounts, dones)[0]
        rtg_sum = jnp.sum(mask * pgkit.reward_to_go(rewards, discounts, dones))
        return jacobian, episode_return, rtg_sum

    return jax.vmap(one, in_axes=1)(obs, actions, rewards, dones, mask, next_obs)


class PerEpisode(NamedTuple):
    jacobian: np.ndarray  # [N, K, P]
    returns: np.ndarray  # [N] R(τ)
    rtg_sums: np.ndarray  # [N] Σ_t G_t
    lengths: np.ndarray  # [N]


def per_episode(policy, critic, episodes: Episodes, settings: Settings, rows=None) -> PerEpisode:
    """Per-episode gradients of ``episodes`` (in their order), computed length-sorted in chunks."""
    n = episodes.lengths.shape[0]
    horizon = episodes.obs.shape[0]
    order = np.argsort(episodes.lengths, kind="stable")
    jac, ret, rtg = [], [], []
    for start in range(0, n, settings.grad_chunk):
        index = order[start : start + settings.grad_chunk]
        pad = settings.grad_chunk - index.shape[0]
        index = np.concatenate([index, np.repeat(index[-1:], pad)])  # one shape per bucket
        steps = _bucket(episodes.lengths[index].max(), horizon, settings.min_bucket)
        chunk = _select(episodes, index, steps)
        j, r, g = _episode_gradients(policy, critic, chunk.obs, chunk.actions, chunk.rewards, chunk.dones,
                                     chunk.mask, chunk.next_obs, lambdas=tuple(settings.lambdas))
        j = np.asarray(j)
        jac.append(j[: settings.grad_chunk - pad] if rows is None else j[: settings.grad_chunk - pad][:, rows])
        ret.append(np.asarray(r)[: settings.grad_chunk - pad])
        rtg.append(np.asarray(g)[: settings.grad_chunk - pad])
    inverse = np.empty_like(order)
    inverse[order] = np.arange(n)
    return PerEpisode(np.concatenate(jac)[inverse], np.concatenate(ret)[inverse],
                      np.concatenate(rtg)[inverse], episodes.lengths)


class FixedBaselines(NamedTuple):
    mean: jax.Array  # [] mean return
    optimal: jax.Array  # [] scalar optimal baseline
    optimal_per_param: jax.Array  # [P]
    rtg_mean: jax.Array  # [] mean reward-to-go over steps


@jax.jit
def _batch_estimates(jacobian, returns, rtg_sums, lengths, fixed: FixedBaselines):
    """Batch estimates [M, E, P] from per-episode outputs grouped [M, B, ...] (E estimators)."""

    def one(jacobian, returns, rtg_sums, lengths):
        score, whole, rtg, rtg_v = (jacobian[:, i] for i in (SCORE, WHOLE, RTG, RTG_V))
        b_mean = pgkit.mean_baseline(returns)[:, None]  # [B, 1]
        b_opt = pgkit.optimal_baseline(score, returns, per_parameter=False)
        b_opt_k = pgkit.optimal_baseline(score, returns)  # [P]
        b_rtg = jnp.sum(rtg_sums) / jnp.sum(lengths)  # mean G_t over the batch's steps
        rows = [
            whole,
            whole - b_mean * score,
            whole - fixed.mean * score,
            whole - b_opt * score,
            whole - fixed.optimal * score,
            whole - b_opt_k * score,
            whole - fixed.optimal_per_param * score,
            rtg,
            rtg - b_rtg * score,
            rtg - fixed.rtg_mean * score,
            rtg_v,
            *[jacobian[:, i] for i in range(GAE0, jacobian.shape[1])],
        ]
        return jnp.stack([r.mean(0) for r in rows])

    return jax.vmap(one)(jacobian, returns, rtg_sums, lengths.astype(jnp.float32))


# ----------------------------------------------------------------------------- statistics


def _variances(estimates, weights):
    """tr Cov of each estimator's batch estimate under bootstrap weights: [R, E] (and means [R, E, P])."""
    m = estimates.shape[0]
    sq = np.einsum("mep,mep->me", estimates, estimates)  # [M, E]
    means = np.einsum("rm,mep->rep", weights, estimates) / m  # [R, E, P]
    second = weights @ sq / m  # [R, E]
    return (second - np.einsum("rep,rep->re", means, means)) * m / (m - 1), means


def _bootstrap_weights(rng, m, count):
    w = rng.multinomial(m, np.full(m, 1.0 / m), size=count).astype(np.float64)
    return np.concatenate([np.ones((1, m)), w])  # row 0: the sample itself


class Row(NamedTuple):
    family: str
    name: str
    variance: float  # tr Cov(ĝ_B)
    variance_se: float
    variance_ratio: float  # / variance of R(τ), no baseline
    bias: float  # ‖E ĝ − ∇J‖ estimate (0 when below the noise floor)
    bias_sq_excess: float  # ‖ĝ̄ − g_ref‖² − expected if unbiased
    bias_sq_se: float
    bias_z: float


class Claim(NamedTuple):
    text: str
    lower: str  # name expected to have lower variance
    higher: str
    ratio: float  # var(lower) / var(higher)
    ci: tuple[float, float]  # 95% paired-bootstrap interval
    verdict: str


class Result(NamedTuple):
    rows: list
    claims: list
    info: dict


def analyse(estimates, reference_chunks, settings: Settings, seed: int = 0):
    """Rows (variance, bias) and ordering claims from batch estimates [M, E, P] and reference chunk means."""
    names = estimator_names(settings.lambdas)
    rng = np.random.default_rng(seed)
    est = np.asarray(estimates, np.float64)
    ref = np.asarray(reference_chunks, np.float64)
    m, c = est.shape[0], ref.shape[0]
    w = _bootstrap_weights(rng, m, settings.bootstrap)
    w_ref = _bootstrap_weights(rng, c, settings.bootstrap)
    var, means = _variances(est, w)  # [R, E]
    ref_var, ref_means = _variances(ref[:, None], w_ref)  # chunk-mean variance, [R, 1]
    ref_mean_var = ref_var[:, 0] / c  # variance of the reference mean (trace)
    dist_sq = np.einsum("rep,rep->re", means - ref_means, means - ref_means)
    excess = dist_sq - var / m - ref_mean_var[:, None]
    ref_norm = float(np.linalg.norm(ref_means[0, 0]))
    base = var[:, 0]
    rows = []
    for e, (family, name) in enumerate(names):
        se = float(np.std(excess[1:, e], ddof=1))
        rows.append(Row(
            family, name, float(var[0, e]), float(np.std(var[1:, e], ddof=1)),
            float(var[0, e] / base[0]), float(np.sqrt(max(excess[0, e], 0.0))),
            float(excess[0, e]), se, float(excess[0, e] / se) if se > 0 else float("nan"),
        ))

    index = {name: e for e, (_, name) in enumerate(names)}

    def claim(text, lower, higher):
        ratios = var[:, index[lower]] / var[:, index[higher]]
        lo, hi = np.percentile(ratios[1:], [2.5, 97.5])
        verdict = "holds" if hi < 1 else ("reversed" if lo > 1 else "not resolved")
        return Claim(text, lower, higher, float(ratios[0]), (float(lo), float(hi)), verdict)

    whole0, rtg0 = "R(τ), no baseline", "G_t, no baseline"
    claims = [claim("causality: reward-to-go below whole-trajectory", rtg0, whole0)]
    for _, name in names[1:7]:
        claims.append(claim("baseline below none (whole-trajectory)", name, whole0))
    for _, name in names[8:11]:
        claims.append(claim("baseline below none (reward-to-go)", name, rtg0))
    for kind in ("fixed", "batch"):
        mean = f"R(τ) − mean ({kind})"
        claims.append(claim(f"optimal scalar below mean ({kind})", f"R(τ) − optimal scalar ({kind})", mean))
        claims.append(claim(f"optimal per-param below mean ({kind})", f"R(τ) − optimal per-param ({kind})", mean))
        claims.append(claim(f"optimal per-param below optimal scalar ({kind})",
                            f"R(τ) − optimal per-param ({kind})", f"R(τ) − optimal scalar ({kind})"))
    # observations beyond the notes' predictions
    for base in ("mean", "optimal scalar", "optimal per-param"):
        claims.append(claim("extra: in-batch below fixed", f"R(τ) − {base} (batch)", f"R(τ) − {base} (fixed)"))
    claims.append(claim("extra: learned V below constant mean (reward-to-go)", "G_t − V(s_t) (learned)",
                        "G_t − mean (fixed)"))
    claims.append(claim("extra: learned V with G_t below best constant with R(τ)", "G_t − V(s_t) (learned)",
                        "R(τ) − optimal per-param (fixed)"))
    lams = sorted(settings.lambdas)
    for a, b in zip(lams[:-1], lams[1:]):
        claims.append(claim("extra: GAE, smaller λ lower variance", f"GAE λ={a:g}", f"GAE λ={b:g}"))
    info = dict(
        reference_norm=ref_norm,
        reference_se=float(np.sqrt(ref_mean_var[0])),
        reference_chunks=c,
    )
    return rows, claims, info


# ----------------------------------------------------------------------------- the study


def run_study(policy, key, settings: Settings, *, log=print) -> Result:
    """The whole study for one policy snapshot: pilot → critic → reference → test batches.

    Args:
        policy: a ``pgkit.nn.CategoricalPolicy`` (the fixed snapshot θ).
        key: PRNG key (the only source of randomness).
        settings: sample sizes and options.
        log: progress lines (``None`` for silence).

    Returns:
        ``Result(rows, claims, info)``: one :class:`Row` per estimator (``estimator_names``
        order), the ordering :class:`Claim` s and run information.
    """
    log = log or (lambda *_: None)
    t0 = time.perf_counter()
    pilot_key, critic_key, ref_key, test_key = jax.random.split(key, 4)

    pilot = collect(pilot_key, policy, settings, settings.pilot_episodes)
    critic, explained = fit_critic(critic_key, pilot, settings)
    log(f"pilot: {settings.pilot_episodes} episodes, mean length {pilot.lengths.mean():.1f}; "
        f"critic explained variance (held out) {explained:.3f} [{time.perf_counter() - t0:.0f} s]")

    # reference sample: reference gradient (reward-to-go) and the fixed baselines
    ref_rows = [SCORE, RTG, RTG_V]
    scores, returns, rtg_sums, lengths, ref_chunks, ref_v_chunks = [], [], [], [], [], []
    chunk_mean = settings.batch_size
    done = 0
    for k in jax.random.split(ref_key, -(-settings.reference_episodes // settings.rollout_envs)):
        n = min(settings.rollout_envs, settings.reference_episodes - done)
        episodes = collect(k, policy, settings, n)
        out = per_episode(policy, critic, episodes, settings, rows=ref_rows)
        usable = n - n % chunk_mean
        ref_chunks.append(out.jacobian[:usable, 1].reshape(-1, chunk_mean, out.jacobian.shape[-1]).mean(1))
        ref_v_chunks.append(out.jacobian[:usable, 2].reshape(-1, chunk_mean, out.jacobian.shape[-1]).mean(1))
        scores.append(out.jacobian[:, 0])
        returns.append(out.returns)
        rtg_sums.append(out.rtg_sums)
        lengths.append(out.lengths)
        done += n
    scores, returns = np.concatenate(scores), np.concatenate(returns)
    rtg_sums, lengths = np.concatenate(rtg_sums), np.concatenate(lengths)
    ref_chunks, ref_v_chunks = np.concatenate(ref_chunks), np.concatenate(ref_v_chunks)
    fixed = FixedBaselines(
        mean=jnp.float32(returns.mean()),
        optimal=pgkit.optimal_baseline(jnp.asarray(scores), jnp.asarray(returns), per_parameter=False),
        optimal_per_param=pgkit.optimal_baseline(jnp.asarray(scores), jnp.asarray(returns)),
        rtg_mean=jnp.float32(rtg_sums.sum() / lengths.sum()),
    )
    del scores
    log(f"reference: {done} episodes, mean return {returns.mean():.1f} (sd {returns.std():.1f}, "
        f"min {returns.min():.0f}, max {returns.max():.0f}) [{time.perf_counter() - t0:.0f} s]")

    # test batches
    b = settings.batch_size
    per_call = max(b, settings.rollout_envs - settings.rollout_envs % b)
    estimates, done = [], 0
    total = settings.num_batches * b
    for k in jax.random.split(test_key, -(-total // per_call)):
        n = min(per_call, total - done)
        episodes = collect(k, policy, settings, n)
        out = per_episode(policy, critic, episodes, settings)
        group = lambda x: jnp.asarray(x.reshape((n // b, b) + x.shape[1:]))  # noqa: E731
        estimates.append(np.asarray(_batch_estimates(
            group(out.jacobian), group(out.returns), group(out.rtg_sums), group(out.lengths), fixed)))
        done += n
    estimates = np.concatenate(estimates)
    log(f"test: {settings.num_batches} batches of {b} episodes [{time.perf_counter() - t0:.0f} s]")

    rows, claims, info = analyse(estimates, ref_chunks, settings)
    ref_v_var = float(np.var(ref_v_chunks, axis=0, ddof=1).sum() / ref_v_chunks.shape[0])
    info.update(
        critic_explained_variance=explained,
        pilot_mean_length=float(pilot.lengths.mean()),
        mean_return=float(returns.mean()),
        sd_return=float(returns.std()),
        min_return=float(returns.min()),
        max_return=float(returns.max()),
        reference_episodes=int(lengths.shape[0]),
        reference_v_se=float(np.sqrt(ref_v_var)),
        reference_v_distance=float(np.linalg.norm(ref_v_chunks.mean(0) - ref_chunks.mean(0))),
        num_parameters=int(estimates.shape[-1]),
        seconds=time.perf_counter() - t0,
        batch_size=settings.batch_size,
        fixed_mean=float(fixed.mean),
        fixed_optimal=float(fixed.optimal),
        fixed_rtg_mean=float(fixed.rtg_mean),
        fixed_optimal_per_param_range=(float(np.min(fixed.optimal_per_param)),
                                       float(np.max(fixed.optimal_per_param))),
    )
    return Result(rows, claims, info)


# ----------------------------------------------------------------------------- output


def format_table(result: Result) -> str:
    ref = result.info["reference_norm"]
    lines = [
        f"{'estimator':<34} {'tr Cov(ĝ_B)':>12} {'± se':>9} {'/ R(τ)':>7} {'‖bias‖/‖∇J‖':>12} {'bias z':>7}",
    ]
    family = None
    for r in result.rows:
        if r.family != family:
            family = r.family
            lines.append(f"-- {family}")
        lines.append(
            f"{r.name:<34} {r.variance:>12.4g} {r.variance_se:>9.2g} {r.variance_ratio:>7.3f} "
            f"{r.bias / ref:>12.3f} {r.bias_z:>7.1f}"
        )
    return "\n".join(lines)


def format_claims(result: Result) -> str:
    lines = []
    for c in result.claims:
        lines.append(f"{c.verdict:<13} {c.text}: {c.lower} / {c.higher} = {c.ratio:.3f} "
                     f"[{c.ci[0]:.3f}, {c.ci[1]:.3f}]")
    return "\n".join(lines)


def plot(result: Result, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.colors
    import matplotlib.ticker

    rows = result.rows
    ref = result.info["reference_norm"]
    colors = {FAMILY_WHOLE: "#4c72b0", FAMILY_RTG: "#55a868", FAMILY_GAE: "#c44e52"}
    y = np.arange(len(rows))[::-1]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 0.42 * len(rows) + 1.6), sharey=True)
    ax1.barh(y, [r.variance for r in rows], xerr=[2 * r.variance_se for r in rows],
             color=[colors[r.family] for r in rows], capsize=2)
    ax1.set_xscale("log")
    ax1.xaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
    ax1.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax1.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax1.set_yticks(y, [r.name for r in rows])
    ax1.set_xlabel("tr Cov(ĝ_B), batch of B episodes (log scale; bars ±2 se)")
    ax1.set_title("variance")
    bias = [r.bias / ref for r in rows]
    limit = [np.sqrt(3 * max(r.bias_sq_se, 0.0)) / ref for r in rows]
    detected = [r.bias_z > 3 for r in rows]
    ax2.barh(y, bias, color=[matplotlib.colors.to_rgba(colors[r.family], 1.0 if d else 0.35)
                             for r, d in zip(rows, detected)])
    ax2.plot(limit, y, "k|", markersize=10, label="detection limit (z = 3)")
    ax2.set_xlabel("‖E ĝ − ∇J‖ / ‖∇J‖ (solid: detected, z > 3; pale: not detected)")
    ax2.set_title("bias")
    ax2.legend(loc="lower right", fontsize=8)
    for ax in (ax1, ax2):
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle(f"Policy-gradient estimators on a fixed {result.info.get('env', 'CartPole-v1')} "
                 f"policy (mean return {result.info['mean_return']:.0f})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _md_table(result: Result) -> str:
    ref = result.info["reference_norm"]
    lines = [
        "| family | estimator | tr Cov(ĝ_B) | ± se | ratio to R(τ) | ‖bias‖ / ‖∇J‖ | bias z |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in result.rows:
        lines.append(
            f"| {r.family} | {r.name} | {r.variance:.4g} | {r.variance_se:.2g} | {r.variance_ratio:.3f} "
            f"| {r.bias / ref:.3f} | {r.bias_z:.1f} |"
        )
    return "\n".join(lines)


def _md_claims(result: Result) -> str:
    lines = ["| prediction | lower | higher | variance ratio | 95% interval | verdict |",
             "|---|---|---|---:|---|---|"]
    for c in result.claims:
        lines.append(f"| {c.text} | {c.lower} | {c.higher} | {c.ratio:.3f} "
                     f"| [{c.ci[0]:.3f}, {c.ci[1]:.3f}] | {c.verdict} |")
    return "\n".join(lines)


def _fmt(c: Claim) -> str:
    return f"{c.ratio:.3f} [{c.ci[0]:.3f}, {c.ci[1]:.3f}]"


_SAYS = {"holds": "holds", "reversed": "is reversed", "not resolved": "is not resolved at this sample size"}


def _interpretation(result: Result) -> str:
    info = result.info
    ref = info["reference_norm"]
    rows = {r.name: r for r in result.rows}

    def find(text, lower=None):
        return next(c for c in result.claims if c.text == text and (lower is None or c.lower == lower))

    parts = []
    causal = result.claims[0]
    parts.append(
        f"- **Causality** ('Reducing variance - Causality'). Reward-to-go over whole-trajectory "
        f"variance: {_fmt(causal)}, a factor {1 / causal.ratio:.1f}. The prediction "
        f"**{_SAYS[causal.verdict]}**."
    )

    base = [c for c in result.claims if c.text.startswith("baseline below none")]
    held = [c for c in base if c.verdict == "holds"]
    other = [c for c in base if c.verdict != "holds"]
    v_vs_mean = find("extra: learned V below constant mean (reward-to-go)")
    whole_rows = [r for r in result.rows if r.family == FAMILY_WHOLE][1:]
    text = (
        f"- **Baselines** ('Reducing variance - Baselines'). {len(held)} of {len(base)} baselined "
        f"estimators are resolvably below the same return without a baseline (variance ratios "
        f"{min(c.ratio for c in base):.3f} to {max(c.ratio for c in base):.3f})"
    )
    text += "; the prediction **holds** for every baseline tried." if not other else (
        "; not for " + ", ".join(f"{c.lower} ({_fmt(c)}, {c.verdict})" for c in other) + ".")
    text += (
        f" For the whole-trajectory return the constants leave "
        f"{min(r.variance_ratio for r in whole_rows):.3f} to {max(r.variance_ratio for r in whole_rows):.3f} "
        f"of the unbaselined variance. "
        f"With reward-to-go the learned V(s_t) against the constant mean reward-to-go: "
        f"{_fmt(v_vs_mean)} ({v_vs_mean.verdict}). The critic explains only "
        f"{info['critic_explained_variance']:.0%} of the held-out variance of G_t: most of the "
        f"spread of the return still to come is the randomness of the future under a stochastic "
        f"policy, not a function of s_t, so V(s_t) removes little more than a constant does here."
    )
    parts.append(text)

    fixed = [find(f"{name} (fixed)") for name in
             ("optimal scalar below mean", "optimal per-param below mean", "optimal per-param below optimal scalar")]
    batch = [find(f"{name} (batch)") for name in
             ("optimal scalar below mean", "optimal per-param below mean", "optimal per-param below optimal scalar")]
    mean_row = rows["R(τ) − mean (fixed)"]
    verdict = "holds" if all(c.verdict == "holds" for c in fixed) else (
        "is reversed" if any(c.verdict == "reversed" for c in fixed) else "is only partly resolved")
    parts.append(
        f"- **Optimal constant baseline** ('Analyzing the variance', b = E[g²r]/E[g²]). With the "
        f"constants fixed (estimated once on the independent reference sample, the notes' setting): "
        f"scalar optimum over mean {_fmt(fixed[0])}, per-parameter optimum over mean {_fmt(fixed[1])}, "
        f"per-parameter over scalar {_fmt(fixed[2])}. The prediction **{verdict}**. The effect is "
        f"modest next to what any baseline does: the mean baseline already brings the variance to "
        f"{mean_row.variance_ratio:.3f} of no baseline, the optimal ones a further "
        f"{1 - fixed[0].ratio:.0%} (scalar) and {1 - fixed[1].ratio:.0%} (per parameter) below it. "
        f"The scalar optimum is b* = {info['fixed_optimal']:.1f} against a mean return of "
        f"{info['fixed_mean']:.1f} (long episodes have large scores ‖g‖² and large returns, so b* "
        f"weights them up); per parameter b*_k ranges from "
        f"{info['fixed_optimal_per_param_range'][0]:.1f} to {info['fixed_optimal_per_param_range'][1]:.1f}. "
        f"So 'average reward is not the best baseline, but it's pretty good', as the notes say. "
        "Estimated from the batch itself: "
        + ", ".join(c.text.split(" (")[0] + f" {_fmt(c)} ({c.verdict})" for c in batch) + "."
    )

    in_batch = [find("extra: in-batch below fixed", f"R(τ) − {b} (batch)")
                for b in ("mean", "optimal scalar", "optimal per-param")]
    zs = [rows[c.lower].bias_z for c in in_batch]
    parts.append(
        "- **In-batch against fixed baselines** (beyond the notes). Computing the baseline from the "
        "batch's own episodes gives "
        + ", ".join(f"{c.lower.split(' − ')[1].replace(' (batch)', '')} {_fmt(c)} ({c.verdict})" for c in in_batch)
        + " relative to the same baseline fixed in advance. With b = mean of the batch the estimate is "
        "(1/B) Σ_i (g_i − ḡ) R_i: it also subtracts the batch's mean score ḡ, whose expectation is 0, "
        "a free control variate. The price is a bias: episode i's own return enters its baseline, "
        "which shrinks the mean-baseline gradient by the factor 1 − 1/B (here "
        f"{1 / max(1, info.get('batch_size', 16)):.3f} of ‖∇J‖), and the optimal baselines weight an "
        "episode's return by its own score. Bias statistics of the in-batch rows: "
        + ", ".join(f"z = {z:.1f}" for z in zs)
        + (" (detected where z > 3; with 16 rows tested, a z just above 3 is weak evidence)."
           if max(zs) > 3 else " (none detected at this sample size).")
    )

    gae = [r for r in result.rows if r.family == FAMILY_GAE]
    steps = [c for c in result.claims if c.text.startswith("extra: GAE")]
    biased = [r for r in gae if r.bias_z > 3]
    parts.append(
        "- **GAE** (002, 'Generalized Advantage Estimator'). Variance relative to R(τ) without a "
        "baseline, and bias: "
        + "; ".join(f"{r.name.replace('GAE ', '')}: {r.variance_ratio:.3f}, ‖bias‖/‖∇J‖ "
                    f"{r.bias / ref:.3f} (z {r.bias_z:.1f})" for r in gae)
        + f". {sum(c.verdict == 'holds' for c in steps)} of {len(steps)} steps down in λ lower the "
        "variance resolvably. Smaller λ trusts the critic more: "
        + (f"the bias is detected for {', '.join(r.name for r in biased)}, " if biased else
           "no bias is detected at this sample size, ")
        + f"from a critic that explains {info['critic_explained_variance']:.0%} of the held-out "
        "variance of G_t. With λ = 1 GAE is G_t − V(s_t) exactly (the same numbers), unbiased for "
        "any V: the bias/variance trade-off of λ."
    )

    reinforce = [r for r in result.rows if r.family != FAMILY_GAE]
    worst = max(reinforce, key=lambda r: abs(r.bias_z))
    fixed_rows = [r for r in reinforce if "(batch)" not in r.name]
    worst_fixed = max(fixed_rows, key=lambda r: abs(r.bias_z))
    parts.append(
        f"- **Sanity check.** The REINFORCE rows without in-batch baselines are unbiased by "
        f"construction; their largest bias statistic is z = {worst_fixed.bias_z:.1f} "
        f"({worst_fixed.name}){' — unexpected, check the setup' if abs(worst_fixed.bias_z) > 3 else ', consistent with zero'}"
        f" (largest over all REINFORCE rows: {worst.bias_z:.1f}, {worst.name}). Reference gradient: "
        f"‖∇J‖ = {ref:.4g}, standard error {info['reference_se']:.3g} (square root of the trace of "
        f"its covariance); the same episodes with the learned-V baseline give a gradient "
        f"{info['reference_v_distance']:.3g} away (standard error {info['reference_v_se']:.3g})."
    )
    return "\n".join(parts)


def write_markdown(result: Result, settings: Settings, path, *, command: str, seed: int, png_name: str) -> None:
    info = result.info
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
    fields = "\n".join(f"| {f.name} | {getattr(settings, f.name)} |" for f in dataclasses.fields(settings))
    text = f"""# Variance and bias of policy-gradient estimators (CartPole-v1)

Generated by `{command}` on {date} (seed {seed}; jax {jax.__version__}, {jax.default_backend()},
{os.cpu_count()} cpus, {platform.machine()}; {info['seconds'] / 60:.1f} min). Re-running the
command with the same seed reproduces the numbers up to floating-point summation order.

The question (issue 5): for **one fixed policy** θ, how noisy and how biased is the
policy-gradient estimate of a batch of B = {settings.batch_size} episodes under each
return/baseline choice of REINFORCE and under GAE(λ)? The lecture notes (001, "Reducing variance -
Causality", "Reducing variance - Baselines", "Analyzing the variance") predict: reward-to-go below
whole-trajectory, every baseline below none, and the optimal baseline b = E[g²r]/E[g²] lowest of
the constant baselines.

![variance and bias per estimator]({png_name})

## Results

Snapshot: mean return {info['mean_return']:.1f} (sd {info['sd_return']:.1f}, min
{info['min_return']:.0f}, max {info['max_return']:.0f}) over the {info['reference_episodes']}
reference episodes; {info['num_parameters']} policy parameters.
`tr Cov(ĝ_B)` is the total variance of the batch estimate over {settings.num_batches} independent
batches (± bootstrap standard error); "ratio to R(τ)" divides by the whole-trajectory estimator
without a baseline; ‖bias‖ is the estimated distance between the estimator's mean and the
reference gradient beyond what sampling noise explains (0 where nothing is left), relative to
‖∇J‖; "bias z" is that excess squared distance over its bootstrap standard error (|z| < 3:
no bias detected).

{_md_table(result)}

### The predictions, tested

Each line compares two estimators on the same batches (paired bootstrap over batches,
{settings.bootstrap} resamples): "holds" when the whole 95% interval of the variance ratio is
below 1, "reversed" when it is above 1, "not resolved" otherwise.

{_md_claims(result)}

### Interpretation against the seed notes

{_interpretation(result)}

## Method

- **Snapshot.** `pgkit.experiment.train('ppo', env='CartPole-v1', seeds=1, seed={seed},
  config={{total_steps: {4 * 128 * settings.snapshot_updates}, num_envs: 4, num_steps: 128,
  hidden_sizes: {settings.hidden_sizes}}})`, i.e. {settings.snapshot_updates} PPO updates, and its
  actor `result.state.networks.actor` (member 0): a partially trained policy whose episodes have
  varied lengths. Nothing is saved; the snapshot is retrained (deterministically) on each run.
- **Episodes.** `pgkit.rollout.rollout` over `pgkit.envs.make('CartPole-v1')` from fresh resets for
  the env's step limit ({int(make_env(settings, 1).env_params.max_steps_in_episode)}), keeping the
  first episode of every environment (steps after its end are masked), so every episode is
  complete. Objective: the undiscounted return, with `discounts = 1 − done` (γ = 1; the time limit
  ends the episode, so nothing is bootstrapped after it).
- **Estimators.** Per-episode gradients `jax.jacrev` of the masked, time-summed surrogates
  `pgkit.reinforce_loss(causal=False)` (R(τ)), `pgkit.reinforce_loss(causal=True)` (G_t),
  `pgkit.reinforce_loss(causal=True, baselines=V(s_t))` and `pgkit.score_function_loss(log π,
  pgkit.gae(..., lambda_=λ).advantages)`, flattened with `jax.flatten_util.ravel_pytree`;
  with the episode score g = ∇log π(τ) (`pgkit.score_function_loss` with weight 1) the constant
  baselines follow linearly: `pgkit.mean_baseline(R)`, `pgkit.optimal_baseline(g, R,
  per_parameter=False)` (b* = Σ‖g‖²R/Σ‖g‖²) and `pgkit.optimal_baseline(g, R)` (one b*_k per
  parameter). "batch": computed from the batch's own B episodes (the notes' b = (1/N) Σ r(τ));
  "fixed": computed once on the independent reference sample (mean return
  {info['fixed_mean']:.2f}, scalar optimum {info['fixed_optimal']:.2f}, mean reward-to-go
  {info['fixed_rtg_mean']:.2f}). The reward-to-go "mean" baseline is the mean G_t over the steps
  of the batch (or of the reference sample).
- **Critic.** A `pgkit.nn.ValueCritic` {settings.critic_hidden_sizes} on standardised
  observations, fitted with Adam ({settings.critic_steps} steps of {settings.critic_batch} states)
  to `pgkit.value_loss` against Monte-Carlo returns G_t of {settings.pilot_episodes} pilot
  episodes (10% held out: explained variance {info['critic_explained_variance']:.3f}). It is the
  learned V of G_t − V(s_t) and the critic of GAE.
- **Variance.** tr Cov(ĝ_B) = (1/(M−1)) Σ_m ‖ĝ_m − ĝ̄‖² over M = {settings.num_batches} independent
  batches; standard errors and ratio intervals from {settings.bootstrap} paired bootstrap
  resamples of the batches.
- **Bias.** Reference ∇J: the mean of the reward-to-go estimator (no baseline, unbiased) over
  {info['reference_episodes']} further episodes, standard error {info['reference_se']:.3g}
  (the square root of the trace of its covariance), against ‖∇J‖ = {info['reference_norm']:.4g}.
  For each estimator, ‖ĝ̄ − ∇J_ref‖² minus its expectation if unbiased (tr Cov(ĝ_B)/M +
  the reference's variance) estimates ‖bias‖²; its standard error is bootstrapped over both samples.

## Configuration

| setting | value |
|---|---|
{fields}
"""
    with open(path, "w") as f:
        f.write(text)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small samples; prints only unless --out is given")
    parser.add_argument("--seed", type=int, default=0, help="master seed (snapshot and sampling)")
    parser.add_argument("--out", help="folder for variance_study.md and .png (default: docs/ for the full study)")
    args = parser.parse_args(argv)
    settings = QUICK if args.quick else FULL
    out = args.out if args.out is not None else (None if args.quick else os.path.join(
        os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs"))
    print(f"# variance study | {settings.env} | jax {jax.__version__} | {jax.default_backend()} | "
          f"{os.cpu_count()} cpus | {'quick' if args.quick else 'full'} | seed {args.seed}", flush=True)
    t0 = time.perf_counter()
    policy = train_snapshot(settings, args.seed)
    print(f"snapshot: {settings.snapshot_updates} PPO updates [{time.perf_counter() - t0:.0f} s]", flush=True)
    result = run_study(policy, jax.random.PRNGKey(args.seed), settings,
                       log=lambda line: print(line, flush=True))
    result.info["seconds"] = time.perf_counter() - t0
    result.info["env"] = settings.env
    print()
    print(format_table(result))
    print()
    print(format_claims(result))
    if out:
        os.makedirs(out, exist_ok=True)
        command = "python bench/variance_study.py" + (" --quick" if args.quick else "") + (
            f" --seed {args.seed}" if args.seed else "")
        plot(result, os.path.join(out, "variance_study.png"))
        write_markdown(result, settings, os.path.join(out, "variance_study.md"), command=command,
                       seed=args.seed, png_name="variance_study.png")
        print(f"\nwrote {out}/variance_study.md and variance_study.png")


if __name__ == "__main__":
    sys.exit(main())
