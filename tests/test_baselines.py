"""pgkit.baselines: NumPy oracles, variance reduction, unbiasedness, value loss gradients."""

import functools

import distrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pgkit
import reference as ref
from pgkit import baselines

# Jitted aliases for the oracle and statistical tests (eager dispatch compiles every primitive
# separately and is slower); the un-jitted functions are exercised by the invariance test.
mean_baseline = jax.jit(pgkit.mean_baseline, static_argnames="axis")
leave_one_out_baseline = jax.jit(pgkit.leave_one_out_baseline, static_argnames="axis")
optimal_baseline = jax.jit(pgkit.optimal_baseline, static_argnames="per_parameter")
per_step_optimal_baseline = jax.jit(pgkit.per_step_optimal_baseline, static_argnames="cross_terms")
value_loss = jax.jit(pgkit.value_loss, static_argnames="stop_target_gradients")


# ----------------------------------------------------------------------------------------------
# NumPy oracles (explicit loops).
# ----------------------------------------------------------------------------------------------


def np_leave_one_out(returns, axis):
    returns = np.moveaxis(np.asarray(returns, np.float64), axis, 0)
    out = np.zeros_like(returns)
    n = returns.shape[0]
    for i in range(n):
        others = [returns[j] for j in range(n) if j != i]
        out[i] = sum(others) / len(others)
    return np.moveaxis(out, 0, axis)


def np_optimal_baseline(scores, returns, per_parameter):
    scores, returns = np.asarray(scores, np.float64), np.asarray(returns, np.float64)
    n = scores.shape[0]
    flat = scores.reshape(n, -1)
    if not per_parameter:
        num = sum(np.dot(flat[i], flat[i]) * returns[i] for i in range(n))
        den = sum(np.dot(flat[i], flat[i]) for i in range(n))
        return num / den
    out = np.zeros(flat.shape[1])
    for k in range(flat.shape[1]):
        num = sum(flat[i, k] ** 2 * returns[i] for i in range(n))
        den = sum(flat[i, k] ** 2 for i in range(n))
        out[k] = num / den if den > 0 else returns.mean()
    return out.reshape(scores.shape[1:])


def np_per_step_optimal_baseline(step_scores, returns, cross_terms=True):
    g, r = np.asarray(step_scores, np.float64), np.asarray(returns, np.float64)
    t_len, n = g.shape[:2]
    g = g.reshape(t_len, n, -1)
    out = np.zeros((t_len, g.shape[2]))
    for k in range(g.shape[2]):
        totals = [sum(g[t, i, k] * r[t, i] for t in range(t_len)) for i in range(n)]  # Y_{i,k}
        for t in range(t_len):
            if cross_terms:
                num = sum(g[t, i, k] * totals[i] for i in range(n))
            else:
                num = sum(g[t, i, k] ** 2 * r[t, i] for i in range(n))
            den = sum(g[t, i, k] ** 2 for i in range(n))
            out[t, k] = num / den if den > 0 else r[t].mean()
    return out.reshape((t_len,) + np.shape(step_scores)[2:])


# ----------------------------------------------------------------------------------------------
# Oracles.
# ----------------------------------------------------------------------------------------------


def test_mean_baseline_matches_numpy():
    returns = np.asarray(jax.random.normal(jax.random.key(0), (4, 3, 2)))
    for axis in (None, 0, 1, -1, (0, 2)):
        got = mean_baseline(returns, axis=axis)
        assert got.shape == returns.shape
        expected = np.broadcast_to(np.mean(returns, axis=axis, keepdims=True), returns.shape)
        np.testing.assert_allclose(got, expected, rtol=1e-6)
    assert float(mean_baseline(jnp.array([1, 2, 6]))[0]) == 3.0  # integer returns become floats


def test_masked_mean_baseline_matches_a_loop():
    kr, km = jax.random.split(jax.random.key(11))
    returns = jax.random.normal(kr, (6, 4))
    mask = jax.random.bernoulli(km, 0.6, (6, 4)).at[:, 2].set(False)  # column 2: no valid sample
    got = jax.jit(lambda r, m: pgkit.mean_baseline(r, axis=0, where=m))(returns, mask)
    r, m = np.asarray(returns, np.float64), np.asarray(mask)
    for e in range(4):
        valid = [r[t, e] for t in range(6) if m[t, e]]
        expected = sum(valid) / len(valid) if valid else 0.0
        np.testing.assert_allclose(got[:, e], expected, rtol=1e-5, atol=1e-6)
    # an all-True mask is the plain mean; a [T, 1] mask broadcasts
    np.testing.assert_allclose(pgkit.mean_baseline(returns, where=True), pgkit.mean_baseline(returns), rtol=1e-6)
    np.testing.assert_allclose(
        pgkit.mean_baseline(returns, axis=1, where=mask[:, :1]), np.broadcast_to(r.mean(1, keepdims=True) * m[:, :1], r.shape),
        rtol=1e-5, atol=1e-6,
    )
    with pytest.raises(ValueError, match="where"):
        pgkit.mean_baseline(returns, where=jnp.ones((3,), bool))


def test_normalized_advantages_match_a_loop_and_stop_gradients():
    advantages = jax.random.normal(jax.random.key(5), (7, 3)) * 3.0 + 1.5
    got = jax.jit(pgkit.normalized_advantages)(advantages)
    a = np.asarray(advantages, np.float64).ravel()
    mean = sum(a) / len(a)
    std = (sum((x - mean) ** 2 for x in a) / len(a)) ** 0.5
    np.testing.assert_allclose(got, ((np.asarray(advantages, np.float64) - mean) / (std + 1e-8)), rtol=1e-5, atol=1e-6)
    assert abs(float(got.mean())) < 1e-6 and abs(float(got.std()) - 1.0) < 1e-5
    # a constant batch: zeros, not NaN
    np.testing.assert_array_equal(pgkit.normalized_advantages(jnp.full((4,), 2.0)), np.zeros(4))
    # vmap over independent batches equals one call per batch
    batched = jax.vmap(pgkit.normalized_advantages)(advantages.T)
    for e in range(3):
        np.testing.assert_allclose(batched[e], pgkit.normalized_advantages(advantages[:, e]), rtol=1e-6)
    loss = lambda x, stop: (pgkit.normalized_advantages(x, stop_target_gradients=stop) * jnp.arange(21.0).reshape(7, 3)).sum()
    assert float(jnp.abs(jax.grad(loss)(advantages, True)).max()) == 0.0
    grad = jax.grad(loss)(advantages, False)
    h = 1e-2
    bump = jnp.zeros_like(advantages).at[2, 1].set(h)
    fd = (loss(advantages + bump, False) - loss(advantages - bump, False)) / (2 * h)
    np.testing.assert_allclose(grad[2, 1], fd, rtol=2e-2)
    with pytest.raises(ValueError, match="advantages"):
        pgkit.normalized_advantages(jnp.zeros((0,)))


def test_leave_one_out_matches_a_loop():
    returns = np.asarray(jax.random.normal(jax.random.key(1), (4, 3)))
    for axis in (0, 1, -1):
        np.testing.assert_allclose(
            leave_one_out_baseline(returns, axis=axis), np_leave_one_out(returns, axis), rtol=1e-5, atol=1e-6
        )
    flat = returns.reshape(-1)
    np.testing.assert_allclose(
        leave_one_out_baseline(returns, axis=None),
        np_leave_one_out(flat, 0).reshape(returns.shape),
        rtol=1e-5,
        atol=1e-6,
    )


def test_leave_one_out_gradient_is_the_leave_one_out_matrix():
    n = 4
    jac = jax.jacobian(leave_one_out_baseline)(jnp.arange(n, dtype=jnp.float32))
    np.testing.assert_allclose(jac, (np.ones((n, n)) - np.eye(n)) / (n - 1), rtol=1e-6)
    jac_mean = jax.jacobian(mean_baseline)(jnp.arange(n, dtype=jnp.float32))
    np.testing.assert_allclose(jac_mean, np.full((n, n), 1 / n), rtol=1e-6)


def test_optimal_baseline_matches_numpy_formula():
    ks, kr = jax.random.split(jax.random.key(2))
    scores = np.array(jax.random.normal(ks, (7, 2, 3)))
    returns = np.array(jax.random.normal(kr, (7,))) + 3.0
    scores[:, 1, 2] = 0.0  # a component that never moves: falls back to the mean return
    got = optimal_baseline(scores, returns)
    assert got.shape == (2, 3)
    np.testing.assert_allclose(got, np_optimal_baseline(scores, returns, True), rtol=1e-5)
    assert float(got[1, 2]) == pytest.approx(returns.mean(), rel=1e-6)
    scalar = optimal_baseline(scores, returns, per_parameter=False)
    assert scalar.shape == ()
    np.testing.assert_allclose(scalar, np_optimal_baseline(scores, returns, False), rtol=1e-5)
    # With one parameter component both variants agree.
    np.testing.assert_allclose(
        optimal_baseline(scores[:, :1, 0], returns),
        optimal_baseline(scores[:, :1, 0], returns, per_parameter=False)[None],
        rtol=1e-6,
    )


def test_per_step_optimal_baseline_matches_a_loop_with_padding_and_reduces_to_optimal_baseline():
    ks, kr, km = jax.random.split(jax.random.key(12), 3)
    scores = np.array(jax.random.normal(ks, (6, 5, 2, 3)))  # [T, N, *P]
    returns = np.array(jax.random.normal(kr, (6, 5))) + 2.0
    lengths = np.array(jax.random.randint(km, (5,), 1, 7))
    lengths[lengths == 6] = 5  # step 5 is padding in every episode: the mean of returns[5]
    for i, length in enumerate(lengths):
        scores[length:, i] = 0.0  # padding after the episode's end
        returns[length:, i] = 123.0  # values on padding must not matter
    scores[:, :, 1, 2] = 0.0  # a component that never moves: the mean of returns[t]
    got = per_step_optimal_baseline(scores, returns)
    assert got.shape == (6, 2, 3)
    np.testing.assert_allclose(got, np_per_step_optimal_baseline(scores, returns), rtol=2e-5, atol=1e-5)
    without = per_step_optimal_baseline(scores, returns, cross_terms=False)
    np.testing.assert_allclose(without, np_per_step_optimal_baseline(scores, returns, False), rtol=2e-5, atol=1e-5)
    alive = scores[:5, :, 0, :2] != 0.0  # a weighted mean of the returns of step t: within their range
    assert np.all(without[:5, 0, :2] <= np.where(alive, returns[:5, :, None], -np.inf).max(1) + 1e-5)
    assert np.all(without[:5, 0, :2] >= np.where(alive, returns[:5, :, None], np.inf).min(1) - 1e-5)
    np.testing.assert_allclose(got[:, 1, 2], returns.mean(1), rtol=1e-6)
    np.testing.assert_allclose(got[5], returns[5].mean(), rtol=1e-6)
    padded = returns.copy()
    padded[scores[:, :, 0, 0] == 0.0] = -7.0  # other values on the padding steps: nothing changes
    np.testing.assert_allclose(per_step_optimal_baseline(scores, padded)[:5, 0, :2], got[:5, 0, :2], rtol=1e-5)
    # one step: the per-parameter optimal baseline of the samples
    for cross_terms in (True, False):
        np.testing.assert_allclose(
            per_step_optimal_baseline(scores[:1], returns[:1], cross_terms=cross_terms)[0],
            optimal_baseline(scores[0], returns[0]), rtol=1e-5,
        )


def two_step_problem():
    """Every episode of a 2-step problem, repeated in proportion to its probability (16 in all).

    Both steps draw a ~ softmax(θ) = (1/2, 1/4, 1/4) (no state); r_0 = f(a_0), r_1 = h(a_0, a_1):
    the second reward depends on the first action, so the cross terms E[g_0 g_1 G_1] do not
    vanish. Returns scores [T=2, N=16, P=3], reward-to-go [2, 16] (γ = 1).
    """
    p = np.array([0.5, 0.25, 0.25])
    f = np.array([1.0, 4.0, -2.0])
    h = np.array([[0.0, 3.0, 1.0], [5.0, -1.0, 2.0], [2.0, 6.0, -3.0]]) + 2.0
    scores, rtg = [], []
    for a0 in range(3):
        for a1 in range(3):
            for _ in range(int(round(16 * p[a0] * p[a1]))):
                scores.append([np.eye(3)[a0] - p, np.eye(3)[a1] - p])
                rtg.append([f[a0] + h[a0, a1], h[a0, a1]])
    return np.transpose(np.array(scores), (1, 0, 2)), np.array(rtg).T


def exact_rtg_variances(scores, rtg, b):
    """Per-component variance of X_k = Σ_t g_{t,k} (G_t − b_{t,k}) over the (equally weighted) episodes."""
    x = np.einsum("tnk,tnk->nk", scores, rtg[..., None] - np.broadcast_to(b, (2, 3))[:, None, :])
    return x.mean(0), x.var(0)


def test_per_step_optimal_baseline_minimises_the_exact_variance_of_the_reward_to_go_estimate():
    scores, rtg = two_step_problem()
    assert scores.shape == (2, 16, 3) and np.allclose(scores.mean(1), 0.0)  # E[g_t] = 0
    b_opt = np.asarray(per_step_optimal_baseline(jnp.asarray(scores), jnp.asarray(rtg)), np.float64)
    mean_opt, var_opt = exact_rtg_variances(scores, rtg, b_opt)
    # a deterministic baseline leaves the mean unchanged, whatever it is
    for b in (0.0, rtg.mean(1)[:, None], b_opt + 1.0):
        np.testing.assert_allclose(exact_rtg_variances(scores, rtg, b)[0], mean_opt, atol=1e-5)
    # the minimum: any perturbation of any b_{t,k} raises Var X_k (a quadratic with curvature E[g²])
    for t in range(2):
        for k in range(3):
            for delta in (-0.3, 0.3):
                b = b_opt.copy()
                b[t, k] += delta
                var = exact_rtg_variances(scores, rtg, b)[1]
                assert var[k] > var_opt[k] + 0.5 * delta**2 * (scores[t, :, k] ** 2).mean(), (t, k, delta)
    # below the time-dependent mean baseline b_t = E[G_t], and below the per-step transcription
    # E[g_t² G_t] / E[g_t²] that drops the cross terms (strictly: they matter in this problem)
    b_mean = rtg.mean(1)[:, None]
    w = scores**2
    b_drop = (w * rtg[..., None]).sum(1) / w.sum(1)
    np.testing.assert_allclose(
        per_step_optimal_baseline(jnp.asarray(scores), jnp.asarray(rtg), cross_terms=False), b_drop, rtol=1e-5
    )
    var_mean = exact_rtg_variances(scores, rtg, b_mean)[1]
    var_drop = exact_rtg_variances(scores, rtg, b_drop)[1]
    assert np.all(var_opt <= var_mean + 1e-6) and np.all(var_opt <= var_drop + 1e-6)
    assert var_opt.sum() < 0.95 * var_drop.sum(), (var_opt.sum(), var_drop.sum(), var_mean.sum())


# ----------------------------------------------------------------------------------------------
# Statistics: variance ordering optimal <= mean <= none, unbiasedness of leave-one-out.
# ----------------------------------------------------------------------------------------------

THETA = jnp.array([1.0, 0.0, -1.0])
F = jnp.array([0.0, 1.0, 8.0]) + 10.0  # a large common offset: no baseline is far from optimal


@jax.jit
def categorical_scores(theta, actions):
    return jax.vmap(jax.grad(lambda th, a: jax.nn.log_softmax(th)[a]), in_axes=(None, 0))(theta, actions)


def exact_categorical_variances(theta, f, b):
    """Per-component variance of g_k (f(a) − b_k), a ~ softmax(theta), by enumeration."""
    p = np.asarray(jax.nn.softmax(theta), np.float64)
    f = np.asarray(f, np.float64)
    g = np.eye(p.size) - p  # row a: score of action a
    b = np.broadcast_to(np.asarray(b, np.float64), p.shape)
    mean = (p[:, None] * g * (f[:, None] - b)).sum(0)
    return (p[:, None] * g**2 * (f[:, None] - b) ** 2).sum(0) - mean**2


def test_categorical_variance_ordering_per_component_and_total():
    actions = jax.random.categorical(jax.random.key(3), THETA, shape=(4000,))
    scores, returns = categorical_scores(THETA, actions), F[actions]
    per_component = np.asarray(optimal_baseline(scores, returns))
    scalar = float(optimal_baseline(scores, returns, per_parameter=False))
    mean = float(mean_baseline(returns)[0])

    # The sampled optimal baselines are close to the population ones (ratio-estimator s.e.).
    p = np.asarray(jax.nn.softmax(THETA), np.float64)
    g = np.eye(3) - p
    w_pop = p[:, None] * g**2
    exact = (w_pop * np.asarray(F)[:, None]).sum(0) / w_pop.sum(0)
    w = np.asarray(scores, np.float64) ** 2
    r = np.asarray(returns, np.float64)
    se = np.sqrt((w**2 * (r[:, None] - per_component) ** 2).sum(0)) / w.sum(0)
    assert np.all(np.abs(per_component - exact) <= 4 * se), (per_component, exact, se)

    var_opt = exact_categorical_variances(THETA, F, per_component)
    var_scalar = exact_categorical_variances(THETA, F, scalar)
    var_mean = exact_categorical_variances(THETA, F, mean)
    var_none = exact_categorical_variances(THETA, F, 0.0)
    assert np.all(var_opt <= var_mean) and np.all(var_mean <= var_none), (var_opt, var_mean, var_none)
    assert var_opt.sum() <= var_scalar.sum() <= var_mean.sum() <= var_none.sum()


def test_gaussian_variance_ordering_matches_closed_form():
    """a ~ N(θ, 1), f(a) = −a², θ = 1: g = a − θ, Var(b) = 14 + (b + 4)²; b* = −4, E f = −2."""
    theta = jnp.array(1.0)
    policy = distrax.Normal(theta, 1.0)
    score = jax.jit(jax.vmap(jax.grad(lambda th, a: distrax.Normal(th, 1.0).log_prob(a)), in_axes=(None, 0)))

    sample = jax.jit(lambda key, n: policy.sample(seed=key, sample_shape=n), static_argnums=1)
    fit_actions = sample(jax.random.key(4), 4000)
    fit_scores, fit_returns = score(theta, fit_actions), -(fit_actions**2)
    b_opt = float(optimal_baseline(fit_scores[:, None], fit_returns)[0])
    b_mean = float(mean_baseline(fit_returns)[0])
    assert abs(b_opt + 4.0) < 0.5 and abs(b_mean + 2.0) < 0.2

    actions = sample(jax.random.key(5), 20_000)
    scores, returns = np.asarray(score(theta, actions), np.float64), -np.asarray(actions, np.float64) ** 2
    variances = {}
    for name, b in (("optimal", b_opt), ("mean", b_mean), ("none", 0.0)):
        x = scores * (returns - b)
        centred = (x - x.mean()) ** 2
        variance, se = centred.mean(), centred.std(ddof=1) / np.sqrt(x.size)
        assert abs(variance - (14.0 + (b + 4.0) ** 2)) <= 4 * se, (name, variance, se)
        variances[name] = variance
    assert variances["optimal"] <= variances["mean"] <= variances["none"]


def test_leave_one_out_keeps_the_estimate_unbiased_and_the_self_inclusive_mean_does_not():
    """K samples per group: E[g_i (f_i − b_i)] = ∇J for leave-one-out, (1 − 1/K) ∇J for the mean."""
    k, groups = 4, 5000
    actions = jax.random.categorical(jax.random.key(6), THETA, shape=(groups, k))
    scores = categorical_scores(THETA, actions.reshape(-1)).reshape(groups, k, 3)
    returns = F[actions]
    p = np.asarray(jax.nn.softmax(THETA), np.float64)
    analytic = p * (np.asarray(F) - p @ np.asarray(F))
    for baseline, factor in (
        (leave_one_out_baseline(returns, axis=1), 1.0),
        (mean_baseline(returns, axis=1), 1.0 - 1.0 / k),
    ):
        per_group = np.asarray((scores * (returns - baseline)[..., None]).mean(axis=1), np.float64)
        mean = per_group.mean(0)
        se = per_group.std(0, ddof=1) / np.sqrt(groups)
        assert np.all(np.abs(mean - factor * analytic) <= 4 * se), (factor, mean, analytic, se)
        if factor != 1.0:  # the bias of the self-inclusive mean is visible at this sample size
            assert np.any(np.abs(mean - analytic) > 4 * se)


# ----------------------------------------------------------------------------------------------
# expected_q_baseline.
# ----------------------------------------------------------------------------------------------


def test_expected_q_baseline_matches_a_loop_under_jit_and_vmap():
    kp, kq = jax.random.split(jax.random.key(9))
    probs = jax.nn.softmax(jax.random.normal(kp, (3, 4, 5)))
    q = jax.random.normal(kq, (3, 4, 5)) * 10
    expected = np.zeros((3, 4))
    for i in range(3):
        for j in range(4):
            expected[i, j] = sum(float(probs[i, j, a]) * float(q[i, j, a]) for a in range(5))
    np.testing.assert_allclose(pgkit.expected_q_baseline(probs, q), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(jax.jit(pgkit.expected_q_baseline)(probs, q), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(jax.vmap(pgkit.expected_q_baseline)(probs, q), expected, rtol=1e-5, atol=1e-5)
    # Q − b is an advantage: its π-weighted mean is zero in every state.
    advantage = q - pgkit.expected_q_baseline(probs, q)[..., None]
    np.testing.assert_allclose(jnp.sum(probs * advantage, axis=-1), 0.0, atol=1e-5)


def test_expected_q_baseline_keeps_the_gradient_and_lowers_its_variance():
    """Categorical π = softmax(θ), f = Q(a) all large and positive (as CartPole's Q's are):
    the Q − b weighted score estimate keeps the analytic mean and has a far smaller variance."""
    q = jnp.asarray(F) + 50.0
    n = 20_000
    actions = jax.random.categorical(jax.random.key(10), THETA, shape=(n,))
    scores = np.asarray(categorical_scores(THETA, actions), np.float64)
    p = jax.nn.softmax(THETA)
    b = float(pgkit.expected_q_baseline(p, q))
    p64, q64 = np.asarray(p, np.float64), np.asarray(q, np.float64)
    analytic = p64 * (q64 - p64 @ q64)
    variances = []
    for weights in (np.asarray(q[actions], np.float64), np.asarray(q[actions], np.float64) - b):
        samples = scores * weights[:, None]
        mean, se = samples.mean(0), samples.std(0, ddof=1) / np.sqrt(n)
        assert np.all(np.abs(mean - analytic) <= 4 * se), (mean, analytic, se)
        variances.append(samples.var(0).sum())
    assert variances[1] < 0.05 * variances[0], variances


# ----------------------------------------------------------------------------------------------
# value_loss.
# ----------------------------------------------------------------------------------------------


def test_value_loss_values_and_gradients():
    kv, kt = jax.random.split(jax.random.key(7))
    values, targets = jax.random.normal(kv, (5, 2)), jax.random.normal(kt, (5, 2))
    np.testing.assert_allclose(
        value_loss(values, targets), 0.5 * (np.asarray(values) - np.asarray(targets)) ** 2, rtol=1e-6
    )
    total = lambda v, t, **kw: value_loss(v, t, **kw).sum()  # noqa: E731
    grad_v, grad_t = jax.jit(jax.grad(total, argnums=(0, 1)))(values, targets)
    np.testing.assert_allclose(grad_v, values - targets, rtol=1e-6)
    assert np.all(np.asarray(grad_t) == 0.0)
    grad_t_open = jax.jit(jax.grad(functools.partial(total, stop_target_gradients=False), argnums=1))(values, targets)
    np.testing.assert_allclose(grad_t_open, targets - values, rtol=1e-6)
    # Finite differences in the values.
    eps = 1e-2
    basis = np.eye(values.size, dtype=np.float32).reshape((values.size,) + values.shape) * eps
    totals = jax.jit(jax.vmap(lambda d: total(values + d, targets)))
    plus, minus = totals(basis), totals(-basis)
    np.testing.assert_allclose(((plus - minus) / (2 * eps)).reshape(values.shape), grad_v, atol=2e-3)


# ----------------------------------------------------------------------------------------------
# jit / vmap / batch invariance, bad input.
# ----------------------------------------------------------------------------------------------


def test_every_public_name_is_covered():
    assert sorted(baselines.__all__) == [
        "expected_q_baseline", "leave_one_out_baseline", "mean_baseline", "normalized_advantages",
        "optimal_baseline", "per_step_optimal_baseline", "value_loss",
    ]




def _invariance_cases():
    key_a, key_b = jax.random.split(jax.random.key(8))
    returns = jax.random.normal(key_a, (3, 5))  # [M groups, N samples]
    scores = jax.random.normal(key_b, (3, 5, 2))
    step_scores = jax.random.normal(key_a, (3, 4, 5, 2))  # [M, T, N, P]
    step_returns = jax.random.normal(key_b, (3, 4, 5))  # [M, T, N]
    # name: (fn on one group's samples [N] (and scores [N, P]), its arguments with a leading [M]
    # axis, the same numbers from one call on the whole batch where the API allows it, an oracle)
    return {
        "mean_baseline": (
            pgkit.mean_baseline, (returns,), lambda r: pgkit.mean_baseline(r, axis=1),
            np.broadcast_to(np.asarray(returns).mean(1, keepdims=True), returns.shape),
        ),
        "leave_one_out_baseline": (
            pgkit.leave_one_out_baseline, (returns,), lambda r: pgkit.leave_one_out_baseline(r, axis=1),
            np_leave_one_out(returns, 1),
        ),
        "optimal_baseline": (
            pgkit.optimal_baseline, (scores, returns), None,
            np.stack([np_optimal_baseline(s, r, True) for s, r in zip(scores, returns)]),
        ),
        "per_step_optimal_baseline": (
            pgkit.per_step_optimal_baseline, (step_scores, step_returns), None,
            np.stack([np_per_step_optimal_baseline(s, r) for s, r in zip(step_scores, step_returns)]),
        ),
        "optimal_baseline_scalar": (
            functools.partial(pgkit.optimal_baseline, per_parameter=False), (scores, returns), None,
            [np_optimal_baseline(s, r, False) for s, r in zip(scores, returns)],
        ),
        "value_loss": (
            pgkit.value_loss, (returns, returns[::-1]), pgkit.value_loss,
            0.5 * (np.asarray(returns) - np.asarray(returns[::-1])) ** 2,
        ),
        "expected_q_baseline": (
            pgkit.expected_q_baseline, (jax.nn.softmax(scores), scores), pgkit.expected_q_baseline, None,
        ),
    }


INVARIANCE_NAMES = (
    "mean_baseline", "leave_one_out_baseline", "optimal_baseline", "optimal_baseline_scalar",
    "per_step_optimal_baseline", "value_loss", "expected_q_baseline",
)


@pytest.mark.parametrize("name", INVARIANCE_NAMES)
def test_jit_vmap_and_batch_invariance(name):
    """vmap over a leading axis of M independent groups, a loop over the groups and one direct
    call on the whole [M, N] batch give bit-identical numbers, eager or jitted; jit against eager
    is bit-identical too except for the weighted sums (see above)."""
    cases = _invariance_cases()
    assert sorted(cases) == sorted(INVARIANCE_NAMES)
    fn, args, whole_batch, oracle = cases[name]
    looped = jnp.stack([fn(*(a[i] for a in args)) for i in range(3)])  # eager, group by group
    jitted = jax.jit(fn)
    jit_looped = jnp.stack([jitted(*(a[i] for a in args)) for i in range(3)])
    np.testing.assert_array_equal(jax.vmap(fn)(*args), looped)
    np.testing.assert_array_equal(jax.jit(jax.vmap(fn))(*args), jit_looped)
    if whole_batch is not None:
        np.testing.assert_array_equal(whole_batch(*args), looped)
        np.testing.assert_array_equal(jax.jit(whole_batch)(*args), jit_looped)
    ref.assert_equal_up_to_rounding(jit_looped, looped, ulps=8)  # jit vs eager: XLA may contract to FMAs
    if oracle is not None:
        np.testing.assert_allclose(looped, oracle, rtol=1e-5, atol=1e-6)


def test_bad_input_raises_value_errors_naming_the_argument():
    with pytest.raises(ValueError, match="returns"):
        pgkit.optimal_baseline(jnp.zeros((4, 2)), jnp.zeros(3))
    with pytest.raises(ValueError, match="returns"):
        pgkit.optimal_baseline(jnp.zeros((4, 2)), jnp.zeros((4, 1)))
    with pytest.raises(ValueError, match="score_vectors"):
        pgkit.optimal_baseline(jnp.zeros(()), jnp.zeros(()))
    with pytest.raises(ValueError, match="returns"):
        pgkit.per_step_optimal_baseline(jnp.zeros((4, 3, 2)), jnp.zeros((4, 2)))
    with pytest.raises(ValueError, match="step_scores"):
        pgkit.per_step_optimal_baseline(jnp.zeros((4,)), jnp.zeros((4,)))
    with pytest.raises(ValueError, match="returns"):
        pgkit.leave_one_out_baseline(jnp.zeros((1, 3)))
    with pytest.raises(ValueError, match="axis"):
        pgkit.leave_one_out_baseline(jnp.zeros((2, 3)), axis=2)
    with pytest.raises(ValueError, match="axis"):
        pgkit.mean_baseline(jnp.zeros((2, 3)), axis=(0, -2))
    with pytest.raises(ValueError, match="returns"):
        pgkit.mean_baseline(jnp.zeros((0, 3)))
    with pytest.raises(ValueError, match="targets"):
        pgkit.value_loss(jnp.zeros((3, 2)), jnp.zeros((2, 3)))
    with pytest.raises(ValueError, match="q_values"):
        pgkit.expected_q_baseline(jnp.full((4, 2), 0.5), jnp.zeros((4, 3)))
    with pytest.raises(ValueError, match="probs"):
        pgkit.expected_q_baseline(jnp.asarray(1.0), jnp.asarray(1.0))
    with pytest.raises(ValueError, match="targets"):
        jax.jit(pgkit.value_loss)(jnp.zeros((3, 2)), jnp.zeros(3))


def test_normalized_advantages_over_a_named_axis_equal_the_union_of_the_shards():
    advantages = jax.random.normal(jax.random.key(6), (4, 6)) * 2.0 - 0.5  # 4 shards of 6
    sharded = jax.vmap(lambda a: pgkit.normalized_advantages(a, axis_name="shards"), axis_name="shards")(advantages)
    np.testing.assert_allclose(sharded.ravel(), pgkit.normalized_advantages(advantages.ravel()), rtol=1e-5, atol=1e-6)
