"""Smoke and identity tests for bench/variance_study.py on a tiny setting (random policy, short episodes)."""

import dataclasses
import importlib.util
import math
import pathlib
import sys

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import pytest

import pgkit

_PATH = pathlib.Path(__file__).resolve().parents[1] / "bench" / "variance_study.py"
_spec = importlib.util.spec_from_file_location("variance_study", _PATH)
vs = importlib.util.module_from_spec(_spec)
sys.modules.setdefault("variance_study", vs)  # dataclasses look their module up there
_spec.loader.exec_module(vs)

# Episodes of at most 64 steps (the env's own limit, so every episode is complete) and one padded
# length, so that each jitted function compiles once.
TINY = dataclasses.replace(
    vs.FULL,
    max_steps=64,
    min_bucket=64,
    pilot_episodes=64,
    critic_steps=50,
    critic_hidden_sizes=(32, 32),
    critic_batch=64,
    reference_episodes=128,
    batch_size=8,
    num_batches=24,
    bootstrap=100,
    rollout_envs=64,
    grad_chunk=64,
)


@pytest.fixture(scope="module")
def policy():
    return vs.random_policy(TINY, jax.random.PRNGKey(0))


@pytest.fixture(scope="module")
def result(policy):
    return vs.run_study(policy, jax.random.PRNGKey(1), TINY, log=None)


def test_table_has_every_estimator_and_is_finite(result):
    names = vs.estimator_names(TINY.lambdas)
    assert [(r.family, r.name) for r in result.rows] == names
    assert len({n for _, n in names}) == len(names)
    assert sum(r.family == vs.FAMILY_GAE for r in result.rows) == len(TINY.lambdas)
    for r in result.rows:
        values = [r.variance, r.variance_se, r.variance_ratio, r.bias, r.bias_sq_excess, r.bias_sq_se]
        assert all(math.isfinite(v) for v in values), r
        assert r.variance > 0 and r.variance_se > 0 and r.bias >= 0
    assert result.rows[0].variance_ratio == pytest.approx(1.0)
    # GAE(λ=1) is G_t − V(s_t) exactly (nothing is bootstrapped past an episode's end)
    rows = {r.name: r for r in result.rows}
    assert rows["GAE λ=1"].variance == pytest.approx(rows["G_t − V(s_t) (learned)"].variance, rel=1e-3)
    for c in result.claims:
        assert c.verdict in ("holds", "reversed", "not resolved")
        assert 0 < c.ci[0] < c.ci[1] and math.isfinite(c.ci[1])
    table = vs.format_table(result)
    assert all(name in table for _, name in names)


def test_reward_to_go_below_whole_trajectory(result):
    # 5x apart at this size; the paired 95% interval is well below 1 for this fixed key
    causal = result.claims[0]
    assert causal.lower == "G_t, no baseline" and causal.higher == "R(τ), no baseline"
    assert causal.ratio < 0.5
    assert causal.verdict == "holds"


def test_episodes_are_complete_and_masked(policy):
    episodes = vs.collect(jax.random.PRNGKey(2), policy, TINY, 70)  # not a multiple of rollout_envs
    assert episodes.lengths.shape == (70,)
    assert episodes.obs.shape[0] == 64 >= episodes.lengths.max()
    np.testing.assert_array_equal(episodes.mask.sum(0), episodes.lengths)
    last = episodes.lengths - 1
    assert episodes.dones[last, np.arange(70)].all()
    for i in range(70):  # no done before the episode's last step, rewards zero after it
        assert not episodes.dones[: last[i], i].any()
        assert not episodes.rewards[last[i] + 1 :, i].any()
    np.testing.assert_array_equal(episodes.rewards.sum(0), episodes.lengths)  # CartPole: 1 per step


def test_per_episode_gradients_match_pgkit_losses(policy):
    """Rows of the per-episode Jacobian against jax.grad of the pgkit losses, baselines linear."""
    episodes = vs.collect(jax.random.PRNGKey(3), policy, TINY, 64)
    critic = vs.Critic(
        net=pgkit.nn.ValueCritic(4, hidden_sizes=TINY.critic_hidden_sizes, key=jax.random.PRNGKey(4)),
        obs_mean=jnp.zeros(4), obs_std=jnp.ones(4), offset=jnp.float32(10.0), scale=jnp.float32(5.0),
    )
    out = vs.per_episode(policy, critic, episodes, TINY)
    i = int(np.argmax(episodes.lengths))  # the longest episode, whatever its position
    steps = int(episodes.lengths[i])
    obs, actions = jnp.asarray(episodes.obs[:steps, i]), jnp.asarray(episodes.actions[:steps, i])
    rewards, dones = jnp.asarray(episodes.rewards[:steps, i]), jnp.asarray(episodes.dones[:steps, i])
    discounts = 1.0 - dones.astype(jnp.float32)
    values = jax.vmap(critic)(obs)

    def objective(policy, causal, baselines):
        log_probs = jax.nn.log_softmax(jax.vmap(policy)(obs))[jnp.arange(steps), actions]
        loss = pgkit.reinforce_loss(log_probs, rewards, discounts, dones, causal=causal, baselines=baselines)
        return -jnp.sum(loss)

    @jax.jit
    def all_grads(policy):  # one compilation for the five reference gradients
        flat = lambda causal, b: jax.flatten_util.ravel_pytree(jax.grad(objective)(policy, causal, b))[0]  # noqa: E731
        return (flat(False, None), flat(True, None), flat(True, values),
                flat(False, jnp.float32(7.5)), flat(True, jnp.float32(3.0)))

    whole, rtg, rtg_v, whole_b, rtg_b = (np.asarray(g) for g in all_grads(policy))

    jac = out.jacobian[i]
    score = jac[vs.SCORE]
    tol = dict(rtol=2e-4, atol=2e-4 * np.abs(jac).max())
    np.testing.assert_allclose(jac[vs.WHOLE], whole, **tol)
    np.testing.assert_allclose(jac[vs.RTG], rtg, **tol)
    np.testing.assert_allclose(jac[vs.RTG_V], rtg_v, **tol)
    # constant baselines enter linearly through the episode score: the study's shortcut
    np.testing.assert_allclose(jac[vs.WHOLE] - 7.5 * score, whole_b, **tol)
    np.testing.assert_allclose(jac[vs.RTG] - 3.0 * score, rtg_b, **tol)
    # whole-trajectory REINFORCE is R(τ) times the episode score; R(τ) is the episode length here
    assert out.returns[i] == steps
    np.testing.assert_allclose(jac[vs.WHOLE], steps * score, **tol)
    np.testing.assert_allclose(jac[vs.GAE0 + TINY.lambdas.index(1.0)], jac[vs.RTG_V], **tol)


def test_analyse_recovers_known_variances_and_bias():
    """Synthetic batch estimates with known covariance and bias: the statistics find them."""
    rng = np.random.default_rng(0)
    m, p = 400, 50
    settings = dataclasses.replace(TINY, lambdas=(0.0, 1.0), bootstrap=200)
    names = vs.estimator_names(settings.lambdas)
    truth = rng.normal(size=p)
    sigmas = np.linspace(2.0, 0.5, len(names))  # variance σ² p, decreasing down the table
    bias = np.zeros((len(names), p))
    bias[-2] = 0.5 * truth / np.linalg.norm(truth)  # "GAE λ=0" biased by 0.5 in norm
    estimates = truth + bias + sigmas[None, :, None] * rng.normal(size=(m, len(names), p))
    reference = truth + 0.5 * rng.normal(size=(800, p))
    rows, claims, info = vs.analyse(estimates, reference, settings)
    for r, s in zip(rows, sigmas):
        assert abs(r.variance - s**2 * p) < 4 * r.variance_se
    assert info["reference_se"] == pytest.approx(0.5 * math.sqrt(p / 800), rel=0.1)
    biased = rows[-2]
    assert biased.bias_z > 3 and biased.bias == pytest.approx(0.5, abs=0.15)
    assert all(abs(r.bias_z) < 4 for k, r in enumerate(rows) if k != len(rows) - 2)
    causal = claims[0]  # σ(G_t) < σ(R(τ)) by construction
    assert causal.verdict == "holds" and causal.ratio == pytest.approx((sigmas[7] / sigmas[0]) ** 2, rel=0.2)
