"""Tests for pgkit.actions: categorical samples, squashed Gaussian log-densities, exploration noise, target smoothing."""

import math

import distrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pgkit

LOW = np.array([-2.0, 0.0, -1.0])
HIGH = np.array([1.0, 5.0, 1.0])


def _squash_np(u, low, high):
    return 0.5 * (high + low) + 0.5 * (high - low) * np.tanh(u)


def _log_det_np(u, low, high):
    """Independent float64 oracle: log|d a/du| = log((high-low)/2) + log sech^2(u), sech^2 via logaddexp."""
    return np.sum(np.log(0.5 * (high - low)) + math.log(4.0) - 2.0 * np.logaddexp(u, -u), axis=-1)


def _gauss_log_prob_np(u, mean, log_std):
    z = (u - mean) / np.exp(log_std)
    return np.sum(-0.5 * z**2 - log_std - 0.5 * math.log(2 * math.pi), axis=-1)


# ----------------------------------------------------------------------------- categorical


def test_categorical_sample_is_distraxs_draw_and_log_prob():
    # Identity oracle: the same key gives distrax's action and log-probability, bit for bit.
    logits = 3.0 * jax.random.normal(jax.random.key(3), (2, 3, 5))
    for i in range(4):
        key = jax.random.key(i)
        action, log_prob = pgkit.categorical_sample_and_log_prob(logits, key=key)
        expected_action, expected_log_prob = distrax.Categorical(logits=logits).sample_and_log_prob(seed=key)
        assert action.shape == log_prob.shape == (2, 3) and action.dtype == jnp.int32
        np.testing.assert_array_equal(action, expected_action)
        np.testing.assert_array_equal(log_prob, expected_log_prob)


def test_categorical_sample_frequencies_and_log_prob_match_softmax():
    logits = np.array([0.5, -1.0, 2.0, 0.0], np.float32)
    probs = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    n = 40_000
    action, log_prob = pgkit.categorical_sample_and_log_prob(jnp.broadcast_to(logits, (n, 4)), key=jax.random.key(7))
    counts = np.bincount(np.asarray(action), minlength=4)
    standard_errors = np.sqrt(probs * (1 - probs) / n)
    assert np.all(np.abs(counts / n - probs) < 4 * standard_errors)
    np.testing.assert_allclose(log_prob, np.log(probs)[np.asarray(action)], rtol=1e-5)


def test_categorical_log_prob_gradient_is_the_score_function():
    logits = jnp.array([0.3, -0.2, 1.1])
    key = jax.random.key(1)
    action = pgkit.categorical_sample_and_log_prob(logits, key=key).action
    grad = jax.grad(lambda z: pgkit.categorical_sample_and_log_prob(z, key=key).log_prob)(logits)
    probs = np.exp(np.asarray(logits, np.float64)) / np.exp(np.asarray(logits, np.float64)).sum()
    np.testing.assert_allclose(grad, np.eye(3)[int(action)] - probs, atol=1e-6)


def test_categorical_sample_jit_and_vmap_invariance():
    logits = jax.random.normal(jax.random.key(4), (6, 3))
    keys = jax.random.split(jax.random.key(5), 4)
    sample = pgkit.categorical_sample_and_log_prob
    eager = [sample(logits, key=k) for k in keys]
    jitted = jax.jit(lambda z, k: sample(z, key=k))
    batched = jax.vmap(lambda k: sample(logits, key=k))(keys)
    for i, k in enumerate(keys):
        for got in (jitted(logits, k), jax.tree.map(lambda x: x[i], batched)):
            np.testing.assert_array_equal(got.action, eager[i].action)
            np.testing.assert_allclose(got.log_prob, eager[i].log_prob, rtol=1e-6)


def test_categorical_sample_bad_input():
    with pytest.raises(ValueError, match=r"logits must have a category axis.*shape \(\)"):
        pgkit.categorical_sample_and_log_prob(jnp.float32(1.0), key=jax.random.key(0))
    with pytest.raises(ValueError, match="logits must be floating point.*int32"):
        pgkit.categorical_sample_and_log_prob(jnp.array([1, 2], jnp.int32), key=jax.random.key(0))


# ----------------------------------------------------------------------------- squashed Gaussian


def test_log_prob_equals_change_of_variables_with_autodiff_jacobian():
    """log π(a) = log N(u) − log|det ∂a/∂u|, with the Jacobian of the squash map from jax.jacfwd (float64)."""
    rng = np.random.default_rng(0)
    mean = rng.normal(size=(4, 3)) * 2
    log_std = rng.uniform(-2, 1, size=(4, 3))
    u = mean + np.exp(log_std) * rng.normal(size=(4, 3))
    u[0] = [4.0, -5.0, 0.5]  # towards the bounds, where tanh' is still representable in float64

    with jax.enable_x64(True):
        low, high = jnp.asarray(LOW), jnp.asarray(HIGH)

        def squash(x):
            return 0.5 * (high + low) + 0.5 * (high - low) * jnp.tanh(x)

        def oracle(u_row, mean_row, log_std_row):
            _, log_abs_det = jnp.linalg.slogdet(jax.jacfwd(squash)(u_row))
            base = jax.scipy.stats.norm.logpdf(u_row, mean_row, jnp.exp(log_std_row)).sum()
            return base - log_abs_det

        @jax.jit
        def both(u, mean, log_std):
            return jax.vmap(oracle)(u, mean, log_std), pgkit.tanh_gaussian_log_prob(u, mean, log_std, low=low, high=high)

        expected, got64 = both(jnp.asarray(u), jnp.asarray(mean), jnp.asarray(log_std))
        assert got64.dtype == jnp.float64 and expected.dtype == jnp.float64
        expected = np.asarray(expected)
        np.testing.assert_allclose(np.asarray(got64), expected, rtol=1e-12, atol=1e-10)

    got32 = pgkit.tanh_gaussian_log_prob(
        u.astype(np.float32), mean.astype(np.float32), log_std.astype(np.float32), low=LOW, high=HIGH
    )
    assert got32.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(got32), expected, rtol=1e-5, atol=1e-4)


STDS = np.array([1e-4, 1e-2, 1.0, 1e2])  # one row per scale


def test_log_prob_finite_and_accurate_at_extremes():
    """Pre-squash |u| = 20 (tanh(u) == ±1 in float32) and σ from 1e-4 to 1e2: finite, and equal to a float64 oracle."""
    u = np.array([[20.0, -20.0, 0.0], [19.5, 3.0, -20.0], [-20.0, 20.0, 20.0], [20.0, -1.0, -20.0]])
    mean = u + np.array([[1.0, -1.0, 0.5], [0.0, 0.5, -1.0], [2.0, 0.1, -0.3], [-1.0, 1.0, 0.0]]) * STDS[:, None]
    log_std = np.log(STDS)[:, None] * np.ones((1, 3))
    # the oracle sees exactly the float32 inputs, promoted to float64
    u, mean, log_std = (x.astype(np.float32).astype(np.float64) for x in (u, mean, log_std))
    expected = _gauss_log_prob_np(u, mean, log_std) - _log_det_np(u, LOW, HIGH)
    got = pgkit.tanh_gaussian_log_prob(
        u.astype(np.float32), mean.astype(np.float32), log_std.astype(np.float32), low=LOW, high=HIGH
    )
    assert np.all(np.isfinite(np.asarray(got)))
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-5, atol=1e-3)
    # float32 really saturates here, so the naive log(1 - tanh(u)^2) would be -inf:
    assert np.tanh(np.float32(20.0)) == np.float32(1.0)


def test_sample_log_prob_finite_accurate_and_in_bounds_at_extremes():
    """Sampling with |μ| = 20 and σ ∈ {1e-4, 1e-2, 1, 1e2}: finite log-probs equal to a float64 oracle built from ε."""
    mean = np.array([[20.0, -20.0, 20.0], [-20.0, 20.0, 0.0], [20.0, 20.0, -20.0], [-20.0, -20.0, 20.0]])
    log_std = np.log(STDS)[:, None] * np.ones((1, 3))
    key = jax.random.key(3)
    action, log_prob = pgkit.tanh_gaussian_sample_and_log_prob(
        mean.astype(np.float32), log_std.astype(np.float32), key=key, low=LOW, high=HIGH
    )
    action, log_prob = np.asarray(action), np.asarray(log_prob)
    assert action.shape == (4, 3) and log_prob.shape == (4,)
    assert np.all(np.isfinite(log_prob)) and np.all(np.isfinite(action))
    assert np.all(action >= LOW) and np.all(action <= HIGH)
    # Oracle: the documented draw ε = normal(key, mean.shape); density from ε in float64.
    eps = np.asarray(jax.random.normal(key, mean.shape, jnp.float32), np.float64)
    log_std = log_std.astype(np.float32).astype(np.float64)
    u = mean + np.exp(log_std) * eps
    expected = np.sum(-0.5 * eps**2 - log_std - 0.5 * math.log(2 * math.pi), axis=-1) - _log_det_np(u, LOW, HIGH)
    np.testing.assert_allclose(log_prob, expected, rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(action, _squash_np(u, LOW, HIGH), atol=1e-5)


def test_sample_distribution_matches_quadrature_and_log_prob_of_pre_tanh():
    """E[a] within 4 standard errors of Gauss–Hermite quadrature; samples in bounds; and the sampler's
    log-prob equals tanh_gaussian_log_prob at u = atanh of the unsquashed action (identity)."""
    mean = np.array([0.3, -1.0, 2.0], np.float32)
    log_std = np.log(np.array([0.5, 1.0, 0.2], np.float32))
    n = 20000
    means, log_stds = np.broadcast_to(mean, (n, 3)), np.broadcast_to(log_std, (n, 3))
    action, log_prob = pgkit.tanh_gaussian_sample_and_log_prob(means, log_stds, key=jax.random.key(11), low=LOW, high=HIGH)
    action = np.asarray(action, np.float64)
    assert np.all(action >= LOW) and np.all(action <= HIGH)
    nodes, weights = np.polynomial.hermite_e.hermegauss(80)
    weights = weights / weights.sum()
    expected = np.array(
        [np.sum(weights * _squash_np(mean[i] + np.exp(log_std[i]) * nodes, LOW[i], HIGH[i])) for i in range(3)]
    )
    se = action.std(axis=0) / np.sqrt(n)
    assert np.all(np.abs(action.mean(axis=0) - expected) < 4 * se), (action.mean(axis=0), expected, se)

    u = np.arctanh((action - 0.5 * (HIGH + LOW)) / (0.5 * (HIGH - LOW)))
    oracle = _gauss_log_prob_np(u, means, log_stds) - _log_det_np(u, LOW, HIGH)
    np.testing.assert_allclose(np.asarray(log_prob), oracle, rtol=1e-4, atol=2e-3)


def test_reparameterisation_gradient_matches_finite_differences():
    rng = np.random.default_rng(2)
    with jax.enable_x64(True):
        mean = jnp.asarray(rng.normal(size=(4, 3)))
        log_std = jnp.asarray(rng.uniform(-1, 0.5, size=(4, 3)))
        w = jnp.asarray(rng.normal(size=(4, 3)))
        key = jax.random.key(5)

        def objective(mean, log_std):
            a, logp = pgkit.tanh_gaussian_sample_and_log_prob(mean, log_std, key=key, low=LOW, high=HIGH)
            return jnp.sum(w * a) + 0.3 * jnp.sum(logp)

        g_mean, g_log_std = jax.jit(jax.grad(objective, argnums=(0, 1)))(mean, log_std)
        objective = jax.jit(objective)
        h = 1e-6
        for arg, grad in ((0, g_mean), (1, g_log_std)):
            for i, j in [(0, 0), (1, 2), (3, 1)]:
                args = [mean, log_std]
                plus, minus = list(args), list(args)
                plus[arg] = args[arg].at[i, j].add(h)
                minus[arg] = args[arg].at[i, j].add(-h)
                fd = (objective(*plus) - objective(*minus)) / (2 * h)
                np.testing.assert_allclose(float(grad[i, j]), float(fd), rtol=1e-6, atol=1e-8)


def test_mode_and_default_bounds():
    mean = np.array([[-30.0, 0.0, 0.7], [1.0, -2.0, 30.0], [0.1, 0.2, 0.3], [5.0, -5.0, 0.0]], np.float32)
    np.testing.assert_allclose(np.asarray(pgkit.tanh_gaussian_mode(mean)), np.tanh(mean), atol=1e-7)
    np.testing.assert_allclose(
        np.asarray(pgkit.tanh_gaussian_mode(mean, low=LOW, high=HIGH)), _squash_np(mean, LOW, HIGH), atol=1e-6
    )
    a, _ = pgkit.tanh_gaussian_sample_and_log_prob(mean * 10, np.zeros((4, 3), np.float32), key=jax.random.key(0))
    assert np.all(np.abs(np.asarray(a)) <= 1.0)


def test_squashed_gaussian_jit_vmap_batch_invariance_and_no_retrace():
    rng = np.random.default_rng(4)
    mean = rng.normal(size=(4, 3)).astype(np.float32)
    log_std = rng.uniform(-1, 0, size=(4, 3)).astype(np.float32)
    u = rng.normal(size=(4, 3)).astype(np.float32)
    key = jax.random.key(9)
    traces = []

    def sample(mean, log_std, low, high):
        traces.append(None)
        return pgkit.tanh_gaussian_sample_and_log_prob(mean, log_std, key=key, low=low, high=high)

    direct = pgkit.tanh_gaussian_sample_and_log_prob(mean, log_std, key=key, low=LOW, high=HIGH)
    jitted = jax.jit(sample)
    out = jitted(mean, log_std, LOW, HIGH)
    for d, o in zip(direct, out):
        np.testing.assert_allclose(np.asarray(d), np.asarray(o), rtol=1e-6, atol=1e-6)
    jitted(mean, log_std, LOW - 1.0, HIGH + 1.0)  # new traced bounds: no retrace
    assert len(traces) == 1

    # log-prob: direct [B, A] call == vmap over the leading axis; sampling: vmap over keys == separate calls.
    keys = jax.random.split(key, 4)

    @jax.jit
    def vmapped(u, mean, log_std, keys):
        lp = jax.vmap(lambda a, b, c: pgkit.tanh_gaussian_log_prob(a, b, c, low=LOW, high=HIGH))(u, mean, log_std)
        samples = jax.vmap(lambda k, m, s: pgkit.tanh_gaussian_sample_and_log_prob(m, s, key=k))(keys, mean, log_std)
        mode = jax.vmap(lambda m: pgkit.tanh_gaussian_mode(m, low=LOW, high=HIGH))(mean)
        return lp, samples, mode

    lp_vmap, batched, mode = vmapped(u, mean, log_std, keys)
    np.testing.assert_allclose(np.asarray(mode), np.asarray(pgkit.tanh_gaussian_mode(mean, low=LOW, high=HIGH)), rtol=1e-6, atol=1e-6)
    lp_direct = pgkit.tanh_gaussian_log_prob(u, mean, log_std, low=LOW, high=HIGH)
    np.testing.assert_allclose(np.asarray(lp_direct), np.asarray(lp_vmap), rtol=1e-6, atol=1e-6)
    single = pgkit.tanh_gaussian_sample_and_log_prob(mean[2], log_std[2], key=keys[2])
    np.testing.assert_allclose(np.asarray(batched.action[2]), np.asarray(single.action), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(np.asarray(batched.log_prob[2]), np.asarray(single.log_prob), rtol=1e-6, atol=1e-5)


def test_squashed_gaussian_bad_input():
    with pytest.raises(ValueError, match="log_std"):
        pgkit.tanh_gaussian_sample_and_log_prob(jnp.zeros((2, 3)), jnp.zeros((2, 2)), key=jax.random.key(0))
    with pytest.raises(ValueError, match="mean"):
        pgkit.tanh_gaussian_sample_and_log_prob(jnp.zeros(()), jnp.zeros(()), key=jax.random.key(0))
    with pytest.raises(ValueError, match="low"):
        pgkit.tanh_gaussian_log_prob(jnp.zeros((2, 3)), jnp.zeros((2, 3)), jnp.zeros((2, 3)), low=jnp.zeros(2))
    with pytest.raises(ValueError, match="high"):
        pgkit.tanh_gaussian_mode(jnp.zeros((2, 3)), high=jnp.ones((2, 3)))


# ----------------------------------------------------------------------------- exploration noise


def test_ornstein_uhlenbeck_stationary_variance():
    """Many chains run far past the correlation time 1/(θ dt): variance σ²/(2θ) within 4 standard errors."""
    theta, sigma, dt = 0.15, 0.2, 1e-2
    chains, steps = 4096, 6000  # (1 − θ dt)^(2·steps) = e^{-18}: the start at 0 is forgotten

    @jax.jit
    def run(key):
        def step(x, k):
            return pgkit.ornstein_uhlenbeck_noise(x, key=k, theta=theta, sigma=sigma, dt=dt), None

        x, _ = jax.lax.scan(step, jnp.zeros((chains, 1)), jax.random.split(key, steps))
        return x[:, 0]

    x = np.asarray(run(jax.random.key(0)), np.float64)
    stationary = sigma**2 / (2 * theta)
    # the exact discrete-chain value σ²/(2θ − θ²dt) differs by 0.08%, far below the tolerance
    assert abs(stationary - sigma**2 / (2 * theta - theta**2 * dt)) < 1e-3 * stationary
    se_var = stationary * math.sqrt(2.0 / chains)
    assert abs(x.var() - stationary) < 4 * se_var, (x.var(), stationary, se_var)
    assert abs(x.mean()) < 4 * math.sqrt(stationary / chains)


def test_ornstein_uhlenbeck_one_step_and_reset():
    x = jnp.array([[1.0, -2.0, 0.0], [0.5, 0.0, 3.0], [0.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    key = jax.random.key(1)
    eps = np.asarray(jax.random.normal(key, (4, 3)))
    got = pgkit.ornstein_uhlenbeck_noise(x, key=key, theta=0.5, sigma=0.3, dt=0.1)
    np.testing.assert_allclose(np.asarray(got), np.asarray(x) * (1 - 0.05) + 0.3 * math.sqrt(0.1) * eps, rtol=1e-6)
    # documented reset at episode ends: multiply by (1 - done) over the action axis
    dones = jnp.array([1.0, 0.0, 0.0, 0.0])
    reset = got * (1 - dones)[:, None]
    assert np.all(np.asarray(reset[0]) == 0) and np.all(np.asarray(reset[1]) == np.asarray(got[1]))


def test_gaussian_exploration_statistics_and_clipping():
    key = jax.random.key(2)
    n = 20000
    actions = jnp.broadcast_to(jnp.array([0.0, 1.0, -1.0]), (n, 3))
    wide = np.asarray(pgkit.gaussian_exploration(actions, key=key, scale=jnp.array([0.1, 0.3, 2.0]), low=-100.0, high=100.0))
    noise = wide - np.asarray(actions)
    for i, s in enumerate([0.1, 0.3, 2.0]):
        assert abs(noise[:, i].mean()) < 4 * s / math.sqrt(n)
        assert abs(noise[:, i].var() - s**2) < 4 * s**2 * math.sqrt(2.0 / n)
    high = np.array([0.5, 1.2, 0.0], np.float32)
    clipped = np.asarray(pgkit.gaussian_exploration(actions, key=key, scale=1.0, low=-0.5, high=high))
    assert np.all(clipped >= -0.5) and np.all(clipped <= high)
    np.testing.assert_allclose(
        clipped, np.clip(np.asarray(actions) + np.asarray(jax.random.normal(key, (n, 3))), -0.5, high), atol=1e-6
    )
    assert np.any(clipped == -0.5) and np.any(clipped[:, 1] == 1.2)


def test_target_policy_smoothing_noise_within_clip():
    key = jax.random.key(3)
    target = jnp.broadcast_to(jnp.array([0.0, 0.9, -0.2]), (20000, 3))
    wide = np.asarray(pgkit.target_policy_smoothing(target, key=key, noise_scale=0.4, noise_clip=0.5, low=-10.0, high=10.0))
    noise = wide - np.asarray(target)
    assert np.all(np.abs(noise) <= 0.5 + 1e-6)
    assert np.any(np.abs(noise) > 0.499)  # the clip is active (0.5 is 1.25 σ)
    eps = 0.4 * np.asarray(jax.random.normal(key, (20000, 3)))
    np.testing.assert_allclose(noise, np.clip(eps, -0.5, 0.5), atol=1e-6)
    bounded = np.asarray(pgkit.target_policy_smoothing(target, key=key, noise_scale=0.4, noise_clip=0.5))
    assert np.all(np.abs(bounded) <= 1.0) and np.any(bounded == 1.0)
    np.testing.assert_allclose(bounded, np.clip(np.asarray(target) + np.clip(eps, -0.5, 0.5), -1, 1), atol=1e-6)


def test_noise_functions_jit_and_vmap():
    key = jax.random.key(4)
    actions = jnp.linspace(-1, 1, 12).reshape(4, 3)

    def all_noise(key, actions, scale):
        k1, k2, k3 = jax.random.split(key, 3)
        return (
            pgkit.gaussian_exploration(actions, key=k1, scale=scale),
            pgkit.ornstein_uhlenbeck_noise(actions, key=k2, sigma=scale),
            pgkit.target_policy_smoothing(actions, key=k3, noise_scale=scale),
        )

    direct = all_noise(key, actions, 0.3)
    jitted = jax.jit(all_noise)(key, actions, 0.3)
    keys = jax.random.split(key, 4)
    vmapped = jax.jit(jax.vmap(all_noise, in_axes=(0, 0, None)))(keys, actions, 0.3)
    for d, j in zip(direct, jitted):
        np.testing.assert_allclose(np.asarray(d), np.asarray(j), rtol=1e-6, atol=1e-6)
    single = all_noise(keys[1], actions[1], 0.3)
    for v, s in zip(vmapped, single):
        np.testing.assert_allclose(np.asarray(v[1]), np.asarray(s), rtol=1e-6, atol=1e-6)


def test_noise_bad_input():
    with pytest.raises(ValueError, match="scale"):
        pgkit.gaussian_exploration(jnp.zeros((2, 3)), key=jax.random.key(0), scale=jnp.ones(2))
    with pytest.raises(ValueError, match="noise_clip"):
        pgkit.target_policy_smoothing(jnp.zeros((2, 3)), key=jax.random.key(0), noise_clip=jnp.ones(4))
