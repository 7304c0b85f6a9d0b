"""pgkit.divergences: analytic KL / entropy against NumPy and distrax, sample KL estimators."""

import distrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pgkit
from pgkit import divergences

import reference as ref

# ----------------------------------------------------------------------------------------------
# NumPy oracles (float64, explicit loops).
# ----------------------------------------------------------------------------------------------


def np_log_softmax(logits):
    logits = np.asarray(logits, np.float64)
    finite_max = np.max(logits)
    shifted = logits - finite_max
    return shifted - np.log(np.sum(np.exp(shifted)))


def np_categorical_kl(logits_p, logits_q):
    logits_p, logits_q = np.asarray(logits_p, np.float64), np.asarray(logits_q, np.float64)
    out = np.zeros(logits_p.shape[:-1])
    for idx in np.ndindex(*logits_p.shape[:-1]):
        log_p, log_q = np_log_softmax(logits_p[idx]), np_log_softmax(logits_q[idx])
        total = 0.0
        for a in range(logits_p.shape[-1]):
            if np.exp(log_p[a]) > 0:
                total += np.exp(log_p[a]) * (log_p[a] - log_q[a])
        out[idx] = total
    return out


def np_categorical_entropy(logits):
    logits = np.asarray(logits, np.float64)
    out = np.zeros(logits.shape[:-1])
    for idx in np.ndindex(*logits.shape[:-1]):
        log_p = np_log_softmax(logits[idx])
        out[idx] = -sum(np.exp(lp) * lp for lp in log_p if np.exp(lp) > 0)
    return out


def np_gaussian_kl(mean_p, log_std_p, mean_q, log_std_q):
    """Matrix form 0.5 [tr(Σq⁻¹Σp) + (μq−μp)ᵀΣq⁻¹(μq−μp) − k + log det Σq − log det Σp]."""
    arrays = np.broadcast_arrays(*(np.asarray(x, np.float64) for x in (mean_p, log_std_p, mean_q, log_std_q)))
    mp, sp, mq, sq = arrays
    out = np.zeros(mp.shape[:-1])
    for idx in np.ndindex(*mp.shape[:-1]):
        cov_p = np.diag(np.exp(2 * sp[idx]))
        cov_q = np.diag(np.exp(2 * sq[idx]))
        inv_q = np.linalg.inv(cov_q)
        gap = mq[idx] - mp[idx]
        k = mp.shape[-1]
        out[idx] = 0.5 * (
            np.trace(inv_q @ cov_p)
            + gap @ inv_q @ gap
            - k
            + np.log(np.linalg.det(cov_q))
            - np.log(np.linalg.det(cov_p))
        )
    return out


def finite_difference_grad(fn, x, eps=1e-2):
    """Central differences of a scalar-per-row function, all coordinates in one batched call."""
    x = np.asarray(x, np.float32)
    n = x.size
    basis = np.eye(n, dtype=np.float32).reshape((n,) + x.shape) * eps
    plus = np.asarray(fn(jnp.asarray(x[None] + basis)), np.float64)
    minus = np.asarray(fn(jnp.asarray(x[None] - basis)), np.float64)
    return ((plus - minus) / (2 * eps)).reshape(x.shape)


def random_logits(key, shape, scale=1.5):
    return scale * jax.random.normal(key, shape)


# ----------------------------------------------------------------------------------------------
# Categorical.
# ----------------------------------------------------------------------------------------------


def test_categorical_kl_and_entropy_match_numpy_with_masks():
    kp, kq = jax.random.split(jax.random.key(0))
    logits_p = np.array(random_logits(kp, (3, 4, 5)))
    logits_q = np.array(random_logits(kq, (3, 4, 5)))
    logits_p[0, :, 1] = -np.inf  # masked in p only: those actions contribute nothing
    logits_p[1, :, 2] = -np.inf  # masked in both
    logits_q[1, :, 2] = -np.inf
    kl = jax.jit(pgkit.categorical_kl)(jnp.asarray(logits_p), jnp.asarray(logits_q))
    assert kl.shape == (3, 4)
    np.testing.assert_allclose(kl, np_categorical_kl(logits_p, logits_q), rtol=1e-5, atol=1e-6)
    entropy = jax.jit(pgkit.categorical_entropy)(jnp.asarray(logits_p))
    np.testing.assert_allclose(entropy, np_categorical_entropy(logits_p), rtol=1e-5, atol=1e-6)
    assert np.all(np.isfinite(kl)) and np.all(np.asarray(kl) >= 0)


def test_categorical_kl_is_infinite_where_q_excludes_an_action_of_p():
    logits_p = jnp.array([[0.0, 0.0, 0.0], [0.0, 0.0, -jnp.inf]])
    logits_q = jnp.array([[0.0, 0.0, -jnp.inf], [0.0, 0.0, -jnp.inf]])
    kl = np.asarray(pgkit.categorical_kl(logits_p, logits_q))
    assert np.isinf(kl[0]) and kl[0] > 0
    assert kl[1] == pytest.approx(0.0, abs=1e-7)


def test_categorical_masked_gradients_are_finite_and_zero_on_masked_actions():
    logits_p = jnp.array([[0.3, -0.2, -jnp.inf, 1.0]])
    logits_q = jnp.array([[0.1, 0.4, -jnp.inf, -0.5]])
    kl_grads = jax.jit(jax.grad(lambda p, q: pgkit.categorical_kl(p, q).sum(), argnums=(0, 1)))
    grad_p, grad_q = kl_grads(logits_p, logits_q)
    grad_h = jax.jit(jax.grad(lambda p: pgkit.categorical_entropy(p).sum()))(logits_p)
    for g in (grad_p, grad_q, grad_h):
        assert np.all(np.isfinite(g))
        assert g[0, 2] == 0.0
    # The masked problem equals the problem on the unmasked actions alone.
    keep = jnp.array([0, 1, 3])
    grad_p_small, grad_q_small = kl_grads(logits_p[:, keep], logits_q[:, keep])
    np.testing.assert_allclose(grad_p[:, keep], grad_p_small, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(grad_q[:, keep], grad_q_small, rtol=1e-5, atol=1e-7)


def test_categorical_matches_distrax():
    kp, kq = jax.random.split(jax.random.key(1))
    logits_p, logits_q = random_logits(kp, (6, 4)), random_logits(kq, (6, 4))

    @jax.jit
    def both(logits_p, logits_q):
        dist_p, dist_q = distrax.Categorical(logits=logits_p), distrax.Categorical(logits=logits_q)
        return (
            (pgkit.categorical_kl(logits_p, logits_q), dist_p.kl_divergence(dist_q)),
            (pgkit.categorical_entropy(logits_p), dist_p.entropy()),
        )

    for ours, theirs in both(logits_p, logits_q):
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)


def test_categorical_identities():
    logits = random_logits(jax.random.key(2), (5, 3))
    kl = jax.jit(pgkit.categorical_kl)
    np.testing.assert_allclose(kl(logits, logits), 0.0, atol=1e-6)
    # Invariant to a per-state shift of the logits (log_softmax normalisation).
    np.testing.assert_allclose(kl(logits + 7.0, logits - 3.0), 0.0, atol=1e-5)
    uniform = jnp.zeros((2, 6))
    np.testing.assert_allclose(jax.jit(pgkit.categorical_entropy)(uniform), np.log(6.0), rtol=1e-6)


def test_categorical_kl_finite_differences():
    kp, kq = jax.random.split(jax.random.key(3))
    logits_p, logits_q = random_logits(kp, (4,)), random_logits(kq, (4,))
    grad_p, grad_q = jax.jit(jax.grad(pgkit.categorical_kl, argnums=(0, 1)))(logits_p, logits_q)
    kl = jax.jit(pgkit.categorical_kl)
    fd_p = finite_difference_grad(lambda p: kl(p, jnp.broadcast_to(logits_q, p.shape)), logits_p)
    fd_q = finite_difference_grad(lambda q: kl(jnp.broadcast_to(logits_p, q.shape), q), logits_q)
    fd_h = finite_difference_grad(jax.jit(pgkit.categorical_entropy), logits_p)
    np.testing.assert_allclose(grad_p, fd_p, atol=2e-3)
    np.testing.assert_allclose(grad_q, fd_q, atol=2e-3)
    np.testing.assert_allclose(jax.jit(jax.grad(pgkit.categorical_entropy))(logits_p), fd_h, atol=2e-3)


# ----------------------------------------------------------------------------------------------
# Gaussian.
# ----------------------------------------------------------------------------------------------


def gaussian_params(key, shape):
    k1, k2, k3, k4 = jax.random.split(key, 4)
    return (
        jax.random.normal(k1, shape),
        0.4 * jax.random.normal(k2, shape),
        jax.random.normal(k3, shape),
        0.4 * jax.random.normal(k4, shape),
    )


def test_gaussian_kl_matches_numpy_matrix_form_and_distrax():
    mean_p, log_std_p, mean_q, log_std_q = gaussian_params(jax.random.key(4), (3, 2, 4))

    @jax.jit
    def both(mean_p, log_std_p, mean_q, log_std_q):
        dist_p = distrax.MultivariateNormalDiag(mean_p, jnp.exp(log_std_p))
        dist_q = distrax.MultivariateNormalDiag(mean_q, jnp.exp(log_std_q))
        return pgkit.gaussian_kl(mean_p, log_std_p, mean_q, log_std_q), dist_p.kl_divergence(dist_q)

    kl, kl_distrax = both(mean_p, log_std_p, mean_q, log_std_q)
    assert kl.shape == (3, 2)
    np.testing.assert_allclose(kl, np_gaussian_kl(mean_p, log_std_p, mean_q, log_std_q), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(kl, kl_distrax, rtol=1e-5, atol=1e-5)


def test_gaussian_kl_broadcasts_a_state_independent_log_std():
    mean_p, _, mean_q, _ = gaussian_params(jax.random.key(5), (5, 3))
    log_std_p, log_std_q = jnp.array([0.1, -0.3, 0.2]), jnp.array([-0.2, 0.0, 0.4])
    kl_fn = jax.jit(pgkit.gaussian_kl)
    kl = kl_fn(mean_p, log_std_p, mean_q, log_std_q)
    assert kl.shape == (5,)
    np.testing.assert_allclose(kl, np_gaussian_kl(mean_p, log_std_p, mean_q, log_std_q), rtol=1e-5, atol=1e-6)
    full = kl_fn(mean_p, jnp.broadcast_to(log_std_p, (5, 3)), mean_q, jnp.broadcast_to(log_std_q, (5, 3)))
    np.testing.assert_allclose(kl, full, rtol=1e-6)
    np.testing.assert_allclose(kl_fn(mean_p, log_std_p, mean_p, log_std_p), 0.0, atol=1e-6)


def test_gaussian_entropy_matches_distrax():
    log_std = 0.5 * jax.random.normal(jax.random.key(6), (4, 3))

    @jax.jit
    def pairs(log_std):
        diag = distrax.MultivariateNormalDiag(jnp.zeros_like(log_std), jnp.exp(log_std))
        normal = distrax.Normal(0.0, jnp.exp(log_std[:, 0]))
        return (
            (pgkit.gaussian_entropy(log_std), diag.entropy()),
            (pgkit.gaussian_entropy(log_std[..., :1]), normal.entropy()),
        )

    for ours, theirs in pairs(log_std):
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)


def test_gaussian_kl_finite_differences():
    params = jnp.stack(gaussian_params(jax.random.key(7), (3,)))  # [4 params, A=3]

    def kl_of_stacked(stacked):  # [..., 4, 3] -> [...]
        return pgkit.gaussian_kl(stacked[..., 0, :], stacked[..., 1, :], stacked[..., 2, :], stacked[..., 3, :])

    grad = jax.jit(jax.grad(kl_of_stacked))(params)
    fd = finite_difference_grad(jax.jit(kl_of_stacked), params)
    np.testing.assert_allclose(grad, fd, atol=2e-3, rtol=2e-3)
    np.testing.assert_allclose(jax.jit(jax.grad(pgkit.gaussian_entropy))(params[1]), 1.0, rtol=1e-6)


# ----------------------------------------------------------------------------------------------
# Sample estimators k1, k2, k3 (x ~ q, log_ratios = log p(x) − log q(x), estimate KL(q ‖ p)).
# ----------------------------------------------------------------------------------------------

N_SAMPLES = 20_000


def assert_mean_within(samples, expected, n_se=4.0, rel=0.0):
    samples = np.asarray(samples, np.float64)
    mean = samples.mean()
    se = samples.std(ddof=1) / np.sqrt(samples.size)
    assert abs(mean - expected) <= n_se * se + rel * abs(expected), (mean, expected, se)
    return mean, se


@jax.jit
def gaussian_log_ratios(key, mean_q, log_std_q, mean_p, log_std_p):
    """x ~ q = N(mean_q, σ_q²) (one dimension), log p(x) − log q(x)."""
    q = distrax.Normal(mean_q[0], jnp.exp(log_std_q[0]))
    p = distrax.Normal(mean_p[0], jnp.exp(log_std_p[0]))
    x = q.sample(seed=key, sample_shape=N_SAMPLES)
    return p.log_prob(x) - q.log_prob(x)


@jax.jit
def sample_estimators(log_ratios):
    return pgkit.kl_k1(log_ratios), pgkit.kl_k2(log_ratios), pgkit.kl_k3(log_ratios)


def test_sample_estimators_on_gaussians_match_analytic_kl():
    q_params = (jnp.array([0.0]), jnp.array([0.0]))
    p_params = (jnp.array([0.6]), jnp.array([-0.3]))
    log_ratios = gaussian_log_ratios(jax.random.key(8), *q_params, *p_params)
    kl_fn = jax.jit(pgkit.gaussian_kl)
    kl_qp, kl_pq = float(kl_fn(*q_params, *p_params)), float(kl_fn(*p_params, *q_params))
    k1, _, k3 = sample_estimators(log_ratios)
    _, se1 = assert_mean_within(k1, kl_qp)
    _, se3 = assert_mean_within(k3, kl_qp)
    assert np.all(np.asarray(k3) >= 0)
    assert se3 < se1  # the control variate lowers the variance here
    # Direction: these are estimates of KL(q ‖ p), clearly not of KL(p ‖ q).
    assert abs(float(np.mean(k3)) - kl_pq) > 8 * se3


def test_k2_is_nearly_unbiased_for_close_distributions():
    q_params = (jnp.zeros(1), jnp.zeros(1))
    p_params = (jnp.full(1, 0.1), jnp.zeros(1))
    _, k2, _ = sample_estimators(gaussian_log_ratios(jax.random.key(9), *q_params, *p_params))
    assert np.all(np.asarray(k2) >= 0)
    kl = float(jax.jit(pgkit.gaussian_kl)(*q_params, *p_params))
    assert kl == pytest.approx(0.005, rel=1e-4)
    assert_mean_within(k2, kl, rel=0.01)


def test_sample_estimators_on_categoricals_match_categorical_kl():
    logits_q = jnp.array([2.0, 0.5, 0.0, -1.0, -3.0])
    logits_p = jnp.array([-1.0, 0.0, 1.0, 0.5, 0.0])

    @jax.jit
    def log_ratios_and_kls(key):
        actions = jax.random.categorical(key, logits_q, shape=(N_SAMPLES,))
        log_ratios = jax.nn.log_softmax(logits_p)[actions] - jax.nn.log_softmax(logits_q)[actions]
        return log_ratios, pgkit.categorical_kl(logits_q, logits_p), pgkit.categorical_kl(logits_p, logits_q)

    log_ratios, kl_qp, kl_pq = log_ratios_and_kls(jax.random.key(10))
    k1, _, k3 = sample_estimators(log_ratios)
    assert_mean_within(k1, float(kl_qp))
    _, se3 = assert_mean_within(k3, float(kl_qp))
    assert np.all(np.asarray(k3) >= 0)
    assert abs(float(np.mean(k3)) - float(kl_pq)) > 8 * se3


def test_sample_estimators_match_numpy_and_vanish_at_equality():
    log_ratios = np.array([-2.0, -0.5, -0.1, -0.0999, -1e-4, 0.0, 1e-4, 0.05, 0.0999, 0.1, 0.7, 3.0], np.float32)
    lr64 = log_ratios.astype(np.float64)
    k1, k2, k3 = sample_estimators(jnp.asarray(log_ratios))
    np.testing.assert_allclose(k1, -lr64, rtol=1e-6)
    np.testing.assert_allclose(k2, 0.5 * lr64**2, rtol=1e-6)
    np.testing.assert_allclose(k3, np.expm1(lr64) - lr64, rtol=2e-5, atol=1e-14)
    assert np.asarray(k1)[5] == np.asarray(k2)[5] == np.asarray(k3)[5] == 0.0  # log r = 0
    # Gradients: d k1 = -1, d k2 = log r, d k3 = r - 1.
    per_estimator = jax.jit(
        lambda x: [jax.grad(lambda v, i=i: sample_estimators(v)[i].sum())(x) for i in range(3)]
    )(jnp.asarray(log_ratios))
    np.testing.assert_allclose(per_estimator[0], -1.0)
    np.testing.assert_allclose(per_estimator[1], lr64, rtol=1e-6)
    np.testing.assert_allclose(per_estimator[2], np.expm1(lr64), rtol=1e-5, atol=1e-8)


# ----------------------------------------------------------------------------------------------
# jit / vmap invariance, bad input.
# ----------------------------------------------------------------------------------------------


def _cases():
    kp, kq, kg = jax.random.split(jax.random.key(11), 3)
    logits_p, logits_q = random_logits(kp, (3, 2, 4)), random_logits(kq, (3, 2, 4))
    gauss = gaussian_params(kg, (3, 2, 4))
    log_ratios = jax.random.normal(kp, (3, 2))
    return {
        "categorical_kl": (pgkit.categorical_kl, (logits_p, logits_q)),
        "categorical_entropy": (pgkit.categorical_entropy, (logits_p,)),
        "gaussian_kl": (pgkit.gaussian_kl, gauss),
        "gaussian_entropy": (pgkit.gaussian_entropy, (gauss[1],)),
        "kl_k1": (pgkit.kl_k1, (log_ratios,)),
        "kl_k2": (pgkit.kl_k2, (log_ratios,)),
        "kl_k3": (pgkit.kl_k3, (log_ratios,)),
    }


CASES = _cases()


def test_every_public_name_is_covered():
    assert sorted(CASES) == sorted(divergences.__all__)


@pytest.mark.parametrize("name", sorted(CASES))
def test_jit_vmap_and_batch_invariance(name):
    """Inputs are [T, E, ...] (action axis last). A direct call, jit, vmap over a leading axis of
    the E independent streams ([E, T, ...]), vmap over the steps, and one stream or one step on
    its own all give bit-identical numbers."""
    fn, args = CASES[name]
    direct = fn(*args)  # [T, E]
    assert direct.shape == (3, 2)
    jitted = jax.jit(fn)(*args)
    ref.assert_equal_up_to_rounding(jitted, direct, ulps=8)  # XLA may contract to FMAs
    per_stream = tuple(jnp.swapaxes(a, 0, 1) for a in args)  # [E, T, ...]
    np.testing.assert_array_equal(jax.vmap(fn)(*per_stream).T, direct)
    np.testing.assert_array_equal(jax.jit(jax.vmap(fn))(*per_stream).T, jitted)
    np.testing.assert_array_equal(jax.vmap(fn)(*args), direct)  # over the steps
    np.testing.assert_array_equal(fn(*(a[:, 1] for a in args)), direct[:, 1])
    per_row = np.stack([np.asarray(fn(*(a[i] for a in args))) for i in range(args[0].shape[0])])
    np.testing.assert_array_equal(per_row, direct)


def test_bad_shapes_raise_value_errors_naming_the_argument():
    with pytest.raises(ValueError, match="logits_q"):
        pgkit.categorical_kl(jnp.zeros((2, 3)), jnp.zeros((2, 4)))
    with pytest.raises(ValueError, match="logits_p"):
        pgkit.categorical_kl(jnp.zeros(()), jnp.zeros(()))
    with pytest.raises(ValueError, match="logits"):
        pgkit.categorical_entropy(jnp.zeros(()))
    with pytest.raises(ValueError, match="mean_q"):
        pgkit.gaussian_kl(jnp.zeros((2, 3)), jnp.zeros(3), jnp.zeros((2, 4)), jnp.zeros(3))
    with pytest.raises(ValueError, match="log_std_p"):
        pgkit.gaussian_kl(jnp.zeros((2, 3)), jnp.zeros(2), jnp.zeros((2, 3)), jnp.zeros(3))
    with pytest.raises(ValueError, match="log_std_q"):
        pgkit.gaussian_kl(jnp.zeros((2, 3)), jnp.zeros(3), jnp.zeros((2, 3)), jnp.zeros((3, 3)))
    with pytest.raises(ValueError, match="log_std"):
        pgkit.gaussian_entropy(jnp.zeros(()))
    with pytest.raises(ValueError, match="logits_q"):  # also under jit (trace-time check)
        jax.jit(pgkit.categorical_kl)(jnp.zeros((2, 3)), jnp.zeros((3, 3)))
