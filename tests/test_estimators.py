"""pgkit.estimators: score-function and pathwise surrogates against closed forms and NumPy loops."""

import functools

import distrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pgkit
from pgkit import estimators


def assert_within_4_se(per_sample, analytic, factor=1.0):
    """Monte-Carlo mean of per-sample estimates [N, *P] within 4 standard errors of ``analytic``."""
    per_sample = np.asarray(per_sample, np.float64)
    mean = per_sample.mean(0)
    se = per_sample.std(0, ddof=1) / np.sqrt(per_sample.shape[0])
    assert np.all(np.abs(mean - factor * np.asarray(analytic)) <= 4 * se), (mean, analytic, se)
    return mean, se


# ----------------------------------------------------------------------------------------------
# score_function_loss
# ----------------------------------------------------------------------------------------------


def test_score_function_loss_values_broadcasting_and_stop_gradient():
    log_probs = jnp.log(jnp.array([[0.2, 0.5], [0.9, 0.1], [0.3, 0.3]]))  # [T=3, B=2]
    weights = jnp.array([[1.0, -2.0], [0.5, 3.0], [0.0, 1.0]])
    expected = -np.asarray(log_probs) * np.asarray(weights)
    np.testing.assert_allclose(pgkit.score_function_loss(log_probs, weights), expected, rtol=1e-6)
    per_episode = jnp.array([2.0, -1.0])  # [B] weights broadcast over time
    np.testing.assert_allclose(
        pgkit.score_function_loss(log_probs, per_episode),
        pgkit.score_function_loss(log_probs, jnp.broadcast_to(per_episode, (3, 2))),
        rtol=1e-6,
    )

    total = lambda lp, w, **kw: pgkit.score_function_loss(lp, w, **kw).sum()  # noqa: E731
    grad_lp, grad_w = jax.grad(total, argnums=(0, 1))(log_probs, weights)
    np.testing.assert_allclose(grad_lp, -weights, rtol=1e-6)
    assert np.all(np.asarray(grad_w) == 0.0)
    grad_w_open = jax.grad(functools.partial(total, stop_target_gradients=False), argnums=1)(log_probs, weights)
    np.testing.assert_allclose(grad_w_open, -log_probs, rtol=1e-6)


THETA = jnp.array([0.5, -0.3, 0.1, -1.0])
F = jnp.array([1.0, -2.0, 3.0, 0.5])
N = 20_000


@functools.partial(jax.jit, static_argnames="n")
def categorical_estimates(key, theta, f, baseline, n):
    """Per-sample gradients of −score_function_loss for a ~ softmax(θ), weights f(a) − b."""
    actions = jax.random.categorical(key, theta, shape=(n,))

    def surrogate(th, a):
        return -pgkit.score_function_loss(jax.nn.log_softmax(th)[a], f[a] - baseline)

    return jax.vmap(jax.grad(surrogate), in_axes=(None, 0))(theta, actions)


def test_categorical_score_function_gradient_matches_analytic_and_baseline_keeps_the_mean():
    p = np.asarray(jax.nn.softmax(THETA), np.float64)
    f = np.asarray(F, np.float64)
    analytic = p * (f - p @ f)  # ∂/∂θ_j Σ_a softmax(θ)_a f_a
    key = jax.random.key(0)
    _, se_none = assert_within_4_se(categorical_estimates(key, THETA, F, 0.0, N), analytic)
    # A constant baseline (here a large one) leaves the expectation unchanged ...
    assert_within_4_se(categorical_estimates(key, THETA, F, 25.0, N), analytic)
    # ... and so does another on fresh samples (the variance ordering is tested in test_baselines).
    assert_within_4_se(categorical_estimates(jax.random.key(1), THETA, F, -4.0, N), analytic)
    # The test has power: a zero or sign-flipped gradient would be many standard errors away.
    assert np.max(np.abs(analytic) / se_none) > 8


def test_gaussian_score_function_gradient_matches_analytic():
    """a ~ N(θ, σ²), f(a) = −(a − c)²: ∇_θ E f = −2 (θ − c), also with a constant baseline."""
    theta, sigma, c = jnp.array(0.7), 0.8, 2.0

    @jax.jit
    def estimates(key, baseline):
        actions = jax.lax.stop_gradient(distrax.Normal(theta, sigma).sample(seed=key, sample_shape=N))

        def surrogate(th, a):
            return -pgkit.score_function_loss(distrax.Normal(th, sigma).log_prob(a), -((a - c) ** 2) - baseline)

        return jax.vmap(jax.grad(surrogate), in_axes=(None, 0))(theta, actions)

    analytic = -2.0 * (theta - c)
    assert_within_4_se(estimates(jax.random.key(2), 0.0), analytic)
    assert_within_4_se(estimates(jax.random.key(2), -3.0), analytic)


# ----------------------------------------------------------------------------------------------
# reinforce_loss against a NumPy loop on a tiny tabular policy.
# ----------------------------------------------------------------------------------------------

S, A, T, B, GAMMA = 3, 2, 9, 2, 0.9
STATES = np.array([[0, 1], [1, 2], [2, 0], [0, 0], [1, 1], [2, 2], [0, 1], [1, 0], [2, 1]])
ACTIONS = np.array([[0, 1], [1, 1], [0, 0], [1, 0], [0, 1], [1, 1], [0, 0], [1, 0], [0, 1]])
TERMINATED = np.zeros((T, B), bool)
TRUNCATED = np.zeros((T, B), bool)
TERMINATED[2, 0] = TERMINATED[6, 0] = TERMINATED[4, 1] = True
TRUNCATED[4, 0] = TRUNCATED[1, 1] = True
DISCOUNTS = GAMMA * (1.0 - TERMINATED)
DONES = TERMINATED | TRUNCATED
REWARDS = np.asarray(jax.random.normal(jax.random.key(3), (T, B)))
TABLE = np.asarray(jax.random.normal(jax.random.key(4), (S, A)))


def np_reinforce_gradient(table, rewards, discounts, dones, baselines, causal):
    """Gradient of Σ_t loss_t = −Σ_t w_t ∇ log π(a_t|s_t), with w_t from explicit loops."""
    table = np.asarray(table, np.float64)
    probs = np.exp(table) / np.exp(table).sum(-1, keepdims=True)
    baselines = np.broadcast_to(np.asarray(baselines, np.float64), rewards.shape)

    def return_from(start, b):
        total, scale = 0.0, 1.0
        for k in range(start, T):
            total += scale * rewards[k, b]
            if dones[k, b]:
                break
            scale *= discounts[k, b]
        return total

    grad = np.zeros_like(table)
    for b in range(B):
        for t in range(T):
            start = t
            if not causal:  # walk back to the episode's first step in the rollout
                while start > 0 and not dones[start - 1, b]:
                    start -= 1
            weight = return_from(start, b) - baselines[t, b]
            s, a = STATES[t, b], ACTIONS[t, b]
            grad[s] += weight * (np.eye(A)[a] - probs[s])
    return -grad


def reinforce_total(table, rewards, baselines, causal, stop_target_gradients=True):
    log_probs = jax.nn.log_softmax(table)[STATES, ACTIONS]
    return pgkit.reinforce_loss(
        log_probs,
        rewards,
        jnp.asarray(DISCOUNTS),
        jnp.asarray(DONES),
        baselines=baselines,
        causal=causal,
        stop_target_gradients=stop_target_gradients,
    ).sum()


reinforce_grad = jax.jit(jax.grad(reinforce_total, argnums=(0, 1, 2)), static_argnums=(3, 4))


@pytest.mark.parametrize("causal", [True, False])
def test_reinforce_gradient_matches_numpy_loop(causal):
    baseline_arrays = (None, 0.7, np.asarray(jax.random.normal(jax.random.key(5), (T, B))), np.array([0.3, -0.4]))
    for baselines in baseline_arrays:
        got, _, _ = reinforce_grad(jnp.asarray(TABLE), jnp.asarray(REWARDS), baselines, causal, True)
        b = 0.0 if baselines is None else baselines
        expected = np_reinforce_gradient(TABLE, REWARDS, DISCOUNTS, DONES, b, causal)
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_reinforce_causal_and_whole_trajectory_weights():
    log_probs = jnp.zeros((T, B)) - 1.0  # loss_t = weight_t
    causal = pgkit.reinforce_loss(log_probs, REWARDS, DISCOUNTS, DONES)
    whole = pgkit.reinforce_loss(log_probs, REWARDS, DISCOUNTS, DONES, causal=False)
    np.testing.assert_allclose(causal, pgkit.reward_to_go(REWARDS, DISCOUNTS, DONES), rtol=1e-6)
    np.testing.assert_allclose(whole, pgkit.episode_returns(REWARDS, DISCOUNTS, DONES), rtol=1e-6)
    # At each episode's first step the two weights agree; elsewhere they differ.
    first = np.concatenate([np.ones((1, B), bool), DONES[:-1]], axis=0)
    np.testing.assert_allclose(np.asarray(causal)[first], np.asarray(whole)[first], rtol=1e-6)
    assert not np.allclose(np.asarray(causal)[~first], np.asarray(whole)[~first])


def test_reinforce_stop_gradients():
    table, rewards, baselines = jnp.asarray(TABLE), jnp.asarray(REWARDS), jnp.full((T, B), 0.5)
    for causal in (True, False):
        _, grad_r, grad_b = reinforce_grad(table, rewards, baselines, causal, True)
        assert np.all(np.asarray(grad_r) == 0.0) and np.all(np.asarray(grad_b) == 0.0)
        _, grad_r, grad_b = reinforce_grad(table, rewards, baselines, causal, False)
        log_probs = np.asarray(jax.nn.log_softmax(table)[STATES, ACTIONS])
        np.testing.assert_allclose(grad_b, log_probs, rtol=1e-6)  # ∂/∂b_t of −log π (G − b)
        assert np.any(np.asarray(grad_r) != 0.0)
    # With open gradients, d loss / d rewards is −Σ_t log π_t ∂G_t/∂r_k: check by finite differences.
    eps = 1e-2
    basis = np.eye(T * B, dtype=np.float32).reshape(T * B, T, B) * eps
    fd_total = jax.jit(jax.vmap(lambda d: reinforce_total(table, rewards + d, baselines, True, False)))
    fd = (fd_total(basis) - fd_total(-basis)) / (2 * eps)
    _, grad_r, _ = reinforce_grad(table, rewards, baselines, True, False)
    np.testing.assert_allclose(np.asarray(fd).reshape(T, B), grad_r, atol=5e-3)


def test_reinforce_jit_vmap_and_batch_invariance():
    log_probs = jnp.asarray(jax.nn.log_softmax(TABLE)[STATES, ACTIONS])
    args = (log_probs, jnp.asarray(REWARDS), jnp.asarray(DISCOUNTS), jnp.asarray(DONES))
    baselines = jnp.asarray(jax.random.normal(jax.random.key(6), (T, B)))
    for causal in (True, False):
        fn = functools.partial(pgkit.reinforce_loss, causal=causal)
        direct = fn(*args, baselines=baselines)
        np.testing.assert_allclose(jax.jit(fn)(*args, baselines=baselines), direct, rtol=1e-6, atol=1e-6)
        per_column = lambda lp, r, d, e, b: fn(lp, r, d, e, baselines=b)  # noqa: E731
        vmapped = jax.vmap(per_column, in_axes=1, out_axes=1)(*args, baselines)
        np.testing.assert_allclose(vmapped, direct, rtol=1e-6, atol=1e-6)
    column = pgkit.reinforce_loss(*(a[:, 1] for a in args), baselines=baselines[:, 1])
    np.testing.assert_allclose(column, pgkit.reinforce_loss(*args, baselines=baselines)[:, 1], rtol=1e-6)


# ----------------------------------------------------------------------------------------------
# pathwise_loss and score_function_multiplier
# ----------------------------------------------------------------------------------------------


def test_pathwise_gradient_matches_analytic_and_finite_differences():
    """a = θ + σ ε (distrax sample, reparameterised), f(a) = −(a − c)²: per-sample −2(a − c)."""
    sigma, c = 0.8, 2.0

    def per_sample_loss(theta, key):
        actions = distrax.Normal(theta, sigma).sample(seed=key, sample_shape=N)
        return pgkit.pathwise_loss(-((actions - c) ** 2))

    theta = jnp.array(0.7)
    per_sample = jax.jit(jax.jacfwd(lambda th: -per_sample_loss(th, jax.random.key(7))))(theta)
    _, se = assert_within_4_se(per_sample, -2.0 * (theta - c))
    assert se < 0.05  # pathwise is far less noisy than the score function here

    mean_loss = jax.jit(lambda th: per_sample_loss(th, jax.random.key(8)).mean())
    eps = 1e-2
    fd = (mean_loss(theta + eps) - mean_loss(theta - eps)) / (2 * eps)
    np.testing.assert_allclose(jax.jit(jax.grad(mean_loss))(theta), fd, rtol=1e-3)

    # The gradient lives in the sample: a stop-gradient'ed action carries none.
    def stopped(th):
        actions = jax.lax.stop_gradient(distrax.Normal(th, sigma).sample(seed=jax.random.key(8)))
        return pgkit.pathwise_loss(-((actions - c) ** 2))

    assert float(jax.jit(jax.grad(stopped))(theta)) == 0.0
    np.testing.assert_allclose(pgkit.pathwise_loss(jnp.array([1.0, -2.0])), [-1.0, 2.0])


def test_score_function_multiplier_reproduces_the_score_function_surrogate():
    log_probs = jnp.log(jnp.array([0.2, 0.5, 0.9]))
    weights = jnp.array([1.0, -2.0, 3.0])
    np.testing.assert_allclose(pgkit.score_function_multiplier(log_probs), 1.0)
    surrogate = lambda lp: pgkit.pathwise_loss(pgkit.score_function_multiplier(lp) * weights)  # noqa: E731
    via_multiplier = jax.grad(lambda lp: surrogate(lp).sum())(log_probs)
    via_score = jax.grad(lambda lp: pgkit.score_function_loss(lp, weights).sum())(log_probs)
    np.testing.assert_allclose(via_multiplier, via_score, rtol=1e-6)


def test_score_function_multiplier_mixes_score_function_and_pathwise_gradients():
    """a ~ softmax(θ) (score function), x = θ_0 + ε (pathwise), f = x · v_a.

    J(θ) = θ_0 Σ_a p_a v_a, so ∇_j J = θ_0 p_j (v_j − p·v) + [j = 0] p·v.
    """
    theta = jnp.array([0.8, -0.4, 0.3])
    v = jnp.array([1.0, -1.0, 2.0])

    @jax.jit
    def estimates(key):
        ka, kx = jax.random.split(key)
        actions = jax.random.categorical(ka, theta, shape=(N,))
        noise = jax.random.normal(kx, (N,))

        def surrogate(th, a, e):
            x = th[0] + e
            return -pgkit.pathwise_loss(pgkit.score_function_multiplier(jax.nn.log_softmax(th)[a]) * x * v[a])

        return jax.vmap(jax.grad(surrogate), in_axes=(None, 0, 0))(theta, actions, noise)

    p = np.asarray(jax.nn.softmax(theta), np.float64)
    pv = p @ np.asarray(v)
    analytic = float(theta[0]) * p * (np.asarray(v) - pv) + np.array([pv, 0.0, 0.0])
    assert_within_4_se(estimates(jax.random.key(9)), analytic)


def test_simple_functions_are_jit_and_vmap_invariant():
    key_a, key_b = jax.random.split(jax.random.key(10))
    log_probs = -jnp.abs(jax.random.normal(key_a, (4, 3)))
    weights = jax.random.normal(key_b, (4, 3))
    for fn, args in (
        (pgkit.score_function_loss, (log_probs, weights)),
        (pgkit.pathwise_loss, (weights,)),
        (pgkit.score_function_multiplier, (log_probs,)),
    ):
        direct = fn(*args)
        assert direct.shape == (4, 3)
        np.testing.assert_allclose(jax.jit(fn)(*args), direct, rtol=1e-6)
        np.testing.assert_allclose(jax.vmap(fn, in_axes=1, out_axes=1)(*args), direct, rtol=1e-6)


def test_every_public_name_is_covered():
    assert sorted(estimators.__all__) == [
        "pathwise_loss",
        "reinforce_loss",
        "score_function_loss",
        "score_function_multiplier",
    ]


def test_bad_input_raises_value_errors_naming_the_argument():
    z = jnp.zeros((4, 2))
    with pytest.raises(ValueError, match="weights"):
        pgkit.score_function_loss(z, jnp.zeros((4, 3)))
    with pytest.raises(ValueError, match="weights"):  # weights may not enlarge the loss's shape
        pgkit.score_function_loss(jnp.zeros(2), jnp.zeros((4, 2)))
    with pytest.raises(ValueError, match="rewards"):
        pgkit.reinforce_loss(z, jnp.zeros((3, 2)), z, z)
    with pytest.raises(ValueError, match="discounts"):
        pgkit.reinforce_loss(z, z, jnp.zeros(4), z)
    with pytest.raises(ValueError, match="dones"):
        pgkit.reinforce_loss(z, z, z, jnp.zeros((2, 4)))
    with pytest.raises(ValueError, match="baselines"):
        pgkit.reinforce_loss(z, z, z, z, baselines=jnp.zeros(4))
    with pytest.raises(ValueError, match="log_probs"):
        pgkit.reinforce_loss(jnp.zeros(()), jnp.zeros(()), jnp.zeros(()), jnp.zeros(()))
    with pytest.raises(ValueError, match="rewards"):  # also under jit (trace-time check)
        jax.jit(pgkit.reinforce_loss)(z, jnp.zeros(4), z, z)
