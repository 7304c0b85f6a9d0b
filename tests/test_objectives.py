"""Tests for pgkit.objectives: PPO clip / KL-penalty surrogates, value clipping, KL diagnostics."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pgkit
import reference as ref

T, E = 7, 3
EPS = 0.2


def _inputs(key, shape=(T, E), spread=0.6):
    k1, k2, k3, k4 = jax.random.split(key, 4)
    log_probs = jax.random.normal(k1, shape) - 1.0
    old_log_probs = log_probs + spread * jax.random.normal(k2, shape)
    advantages = jax.random.normal(k3, shape)
    kls = jnp.abs(jax.random.normal(k4, shape))
    return log_probs, old_log_probs, advantages, kls


# --------------------------------------------------------------------------- NumPy oracles


def _np_ppo_clip(log_probs, old_log_probs, advantages, eps):
    lp, olp, adv = (np.asarray(x, np.float64) for x in (log_probs, old_log_probs, advantages))
    out = np.empty_like(lp)
    for idx in np.ndindex(lp.shape):
        r = np.exp(lp[idx] - olp[idx])
        clipped = min(max(r, 1.0 - eps), 1.0 + eps)
        out[idx] = -min(r * adv[idx], clipped * adv[idx])
    return out


def _np_clipped_value(values, old_values, targets, eps):
    v, ov, t = (np.asarray(x, np.float64) for x in (values, old_values, targets))
    out = np.empty_like(v)
    for idx in np.ndindex(v.shape):
        delta = min(max(v[idx] - ov[idx], -eps), eps)
        out[idx] = 0.5 * max((v[idx] - t[idx]) ** 2, (ov[idx] + delta - t[idx]) ** 2)
    return out


# --------------------------------------------------------------------------- values vs oracle


def test_ppo_clip_loss_matches_numpy():
    lp, olp, adv, _ = _inputs(jax.random.PRNGKey(0))
    got = pgkit.ppo_clip_loss(lp, olp, adv, clip_eps=EPS)
    np.testing.assert_allclose(got, _np_ppo_clip(lp, olp, adv, EPS), rtol=1e-5, atol=1e-6)
    # The spread makes both clip regions appear, so the oracle comparison is not vacuous.
    ratio = np.exp(np.asarray(lp - olp))
    assert np.any(ratio > 1 + EPS) and np.any(ratio < 1 - EPS)
    assert np.any(np.abs(ratio - 1) < EPS)


def test_clipped_value_loss_matches_numpy():
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(1), 3)
    values = jax.random.normal(k1, (T, E))
    old_values = values + 0.5 * jax.random.normal(k2, (T, E))
    targets = jax.random.normal(k3, (T, E))
    got = pgkit.clipped_value_loss(values, old_values, targets, clip_eps=EPS)
    np.testing.assert_allclose(
        got, _np_clipped_value(values, old_values, targets, EPS), rtol=1e-5, atol=1e-6
    )
    # Unclipped squared error is a lower bound, and with a huge clip it is exact.
    assert np.all(np.asarray(got) >= 0.5 * np.asarray((values - targets) ** 2) - 1e-6)
    wide = pgkit.clipped_value_loss(values, old_values, targets, clip_eps=100.0)
    np.testing.assert_allclose(wide, 0.5 * (values - targets) ** 2, rtol=1e-6)


def test_kl_penalty_loss_matches_closed_form():
    lp, olp, adv, kls = _inputs(jax.random.PRNGKey(2))
    got = pgkit.kl_penalty_loss(lp, olp, adv, kls, beta=0.7)
    expected = -np.exp(np.asarray(lp - olp, np.float64)) * np.asarray(adv) + 0.7 * np.asarray(kls)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_approx_kl_and_clip_fraction_match_numpy():
    lp, olp, _, _ = _inputs(jax.random.PRNGKey(3))
    log_ratio = np.asarray(lp - olp, np.float64)
    k3 = pgkit.approx_kl(lp, olp)
    np.testing.assert_allclose(k3, np.exp(log_ratio) - 1 - log_ratio, rtol=1e-4, atol=1e-6)
    assert np.all(np.asarray(k3) >= 0)
    frac = pgkit.clip_fraction(lp, olp, clip_eps=EPS)
    assert frac.dtype == lp.dtype
    np.testing.assert_array_equal(frac, (np.abs(np.exp(log_ratio) - 1) > EPS).astype(np.float32))


def test_adaptive_kl_coefficient_table():
    target = 0.01
    kl = jnp.array([0.0, 0.005, 0.0066, 0.0067, 0.01, 0.014, 0.0151, 0.1])
    # target/1.5 = 0.00667, 1.5*target = 0.015.
    expected = [0.5, 0.5, 0.5, 1.0, 1.0, 1.0, 2.0, 2.0]
    got = pgkit.adaptive_kl_coefficient(jnp.ones_like(kl), kl, target_kl=target)
    np.testing.assert_allclose(got, expected)
    # Traced inside jit with traced float hyperparameters, and composes over iterations.
    update = jax.jit(lambda b, k, t: pgkit.adaptive_kl_coefficient(b, k, target_kl=t))
    beta = jnp.asarray(1.0)
    for k, factor in [(0.1, 2.0), (0.1, 2.0), (0.0, 0.5), (0.01, 1.0)]:
        new_beta = update(beta, jnp.asarray(k), jnp.asarray(target))
        np.testing.assert_allclose(new_beta, beta * factor)
        beta = new_beta


def test_adaptive_kl_coefficient_under_vmap_over_seeds():
    """One coefficient per seed (a leading [S] axis, as when training seeds under vmap), each with
    its own KL and target: vmap gives, bit for bit, the loop over seeds and the direct batch call,
    with each seed on its own branch of the rule."""
    beta = jnp.array([1.0, 0.5, 2.0, 1e-6, 1e6, 0.0])
    kl = jnp.array([0.1, 0.001, 0.01, 0.0, 1.0, 0.02])
    target = jnp.array([0.01, 0.01, 0.01, 0.01, 0.01, 0.02])
    update = lambda b, k, t: pgkit.adaptive_kl_coefficient(b, k, target_kl=t)  # noqa: E731
    expected = [2.0, 0.25, 2.0, 1e-6, 1e6, 1e-6]  # double, halve, keep, floor, ceiling, 0 → floor
    looped = jnp.stack([update(b, k, t) for b, k, t in zip(beta, kl, target)])
    np.testing.assert_allclose(looped, expected, rtol=1e-6)
    for vmapped in (jax.vmap(update)(beta, kl, target), jax.jit(jax.vmap(update))(beta, kl, target)):
        np.testing.assert_array_equal(vmapped, looped)
    np.testing.assert_array_equal(update(beta, kl, target), looped)
    # A shared target (in_axes None) and a [S, 2] stack of seeds × coefficients also map cleanly.
    shared = jax.vmap(update, in_axes=(0, 0, None))(beta, kl, jnp.float32(0.01))
    np.testing.assert_array_equal(shared[:5], looped[:5])
    grid = jax.vmap(update, in_axes=(0, 0, None))(jnp.stack([beta, beta]).T, jnp.stack([kl, kl]).T, 0.01)
    np.testing.assert_array_equal(grid, jnp.stack([shared, shared]).T)


def test_adaptive_kl_coefficient_stays_in_bounds_and_recovers():
    # Hundreds of undershooting updates would halve beta to float32 zero, where doubling can
    # never bring it back; the floor keeps it recoverable (and the ceiling bounds it).
    halve = jax.jit(lambda b: pgkit.adaptive_kl_coefficient(b, 0.0, target_kl=0.01))
    double = jax.jit(lambda b: pgkit.adaptive_kl_coefficient(b, 1.0, target_kl=0.01))
    beta = jnp.asarray(1.0)
    for _ in range(300):
        beta = halve(beta)
    np.testing.assert_allclose(beta, 1e-6)
    np.testing.assert_allclose(double(beta), 2e-6)
    for _ in range(300):
        beta = double(beta)
    np.testing.assert_allclose(beta, 1e6)
    custom = pgkit.adaptive_kl_coefficient(0.1, 0.0, target_kl=0.01, min_beta=0.1)
    np.testing.assert_allclose(custom, 0.1)


# --------------------------------------------------------------------------- gradients


def test_ppo_clip_gradient_regions():
    # One entry per case: (ratio, advantage, expected d loss / d log_prob).
    cases = [
        (1.5, 1.0, 0.0),      # A > 0, r > 1 + eps: clipped, no gradient
        (0.5, -1.0, 0.0),     # A < 0, r < 1 - eps: clipped, no gradient
        (1.1, 1.0, -1.1),     # inside: -A r
        (0.9, -2.0, 1.8),     # inside: -A r
        (0.5, 1.0, -0.5),     # A > 0, r < 1 - eps: min keeps the unclipped term, -A r
        (1.5, -1.0, 1.5),     # A < 0, r > 1 + eps: unclipped term, -A r
    ]
    ratio = jnp.array([c[0] for c in cases])
    adv = jnp.array([c[1] for c in cases])
    expected = np.array([c[2] for c in cases])
    old = jnp.full_like(ratio, -1.3)
    lp = old + jnp.log(ratio)
    grad = jax.grad(lambda x: jnp.sum(pgkit.ppo_clip_loss(x, old, adv, clip_eps=EPS)))(lp)
    np.testing.assert_allclose(grad, expected, rtol=1e-5, atol=1e-7)
    # Central finite differences agree (no kink at these points).
    h = 1e-3
    for i in range(len(cases)):
        bump = jnp.zeros_like(lp).at[i].set(h)
        f = lambda x: float(pgkit.ppo_clip_loss(x, old, adv, clip_eps=EPS)[i])
        fd = (f(lp + bump) - f(lp - bump)) / (2 * h)
        np.testing.assert_allclose(fd, expected[i], rtol=2e-2, atol=2e-3)


def test_no_gradient_into_targets():
    lp, olp, adv, kls = _inputs(jax.random.PRNGKey(4))

    def grads(fn, argnums, **kw):
        return jax.grad(lambda *a: jnp.sum(fn(*a, **kw)), argnums=argnums)

    g_old, g_adv = grads(pgkit.ppo_clip_loss, (1, 2), clip_eps=EPS)(lp, olp, adv)
    assert np.all(np.asarray(g_old) == 0) and np.all(np.asarray(g_adv) == 0)
    g_old, g_adv = grads(pgkit.ppo_clip_loss, (1, 2), clip_eps=EPS, stop_target_gradients=False)(
        lp, olp, adv
    )
    assert np.any(np.asarray(g_old) != 0) and np.any(np.asarray(g_adv) != 0)

    g_old, g_adv, g_kl = grads(pgkit.kl_penalty_loss, (1, 2, 3), beta=0.5)(lp, olp, adv, kls)
    assert np.all(np.asarray(g_old) == 0) and np.all(np.asarray(g_adv) == 0)
    np.testing.assert_allclose(g_kl, 0.5 * np.ones((T, E)))  # the KL carries gradient
    g_lp = grads(pgkit.kl_penalty_loss, 0, beta=0.5)(lp, olp, adv, kls)
    np.testing.assert_allclose(g_lp, -np.exp(np.asarray(lp - olp)) * np.asarray(adv), rtol=1e-5)
    g_old, g_adv = grads(pgkit.kl_penalty_loss, (1, 2), beta=0.5, stop_target_gradients=False)(
        lp, olp, adv, kls
    )
    assert np.any(np.asarray(g_old) != 0) and np.any(np.asarray(g_adv) != 0)

    values, old_values, targets = lp, olp, adv
    g_v, g_ov, g_t = grads(pgkit.clipped_value_loss, (0, 1, 2), clip_eps=EPS)(
        values, old_values, targets
    )
    assert np.all(np.asarray(g_ov) == 0) and np.all(np.asarray(g_t) == 0)
    assert np.any(np.asarray(g_v) != 0)
    _, g_ov, g_t = grads(
        pgkit.clipped_value_loss, (0, 1, 2), clip_eps=EPS, stop_target_gradients=False
    )(values, old_values, targets)
    assert np.any(np.asarray(g_ov) != 0) and np.any(np.asarray(g_t) != 0)

    g_clip = jax.grad(lambda x: jnp.sum(pgkit.clip_fraction(x, olp, clip_eps=EPS)))(lp)
    assert np.all(np.asarray(g_clip) == 0)


def test_clipped_value_loss_gradient_matches_finite_differences():
    values = jnp.array([1.0, 0.5, -0.3, 0.05])
    old_values = jnp.array([0.0, 0.0, 0.0, 0.0])
    targets = jnp.array([2.0, 0.0, -1.0, 1.0])
    # Case 0: max picks the clipped term (3.24 > 1), frozen by the clip -> gradient 0.
    # Case 1: unclipped term larger -> v - t. Case 2: clipped term (0.8)^2/2 > (0.7)^2/2 -> 0.
    # Case 3: inside the clip range, both equal -> v - t.
    expected = np.array([0.0, 0.5, 0.0, -0.95])
    grad = jax.grad(lambda v: jnp.sum(pgkit.clipped_value_loss(v, old_values, targets,
                                                               clip_eps=EPS)))(values)
    np.testing.assert_allclose(grad, expected, rtol=1e-5, atol=1e-6)
    h = 1e-3
    for i in range(4):
        bump = jnp.zeros(4).at[i].set(h)
        f = lambda v: float(jnp.sum(pgkit.clipped_value_loss(v, old_values, targets,
                                                             clip_eps=EPS)))
        np.testing.assert_allclose((f(values + bump) - f(values - bump)) / (2 * h), expected[i],
                                   atol=2e-3)


# --------------------------------------------------------------------------- statistics


def test_approx_kl_mean_matches_analytic_kl():
    num_states, num_actions, samples_per_state = 4, 5, 4000
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(5), 3)
    old_logits = jax.random.normal(k1, (num_states, num_actions))
    new_logits = old_logits + 0.15 * jax.random.normal(k2, (num_states, num_actions))
    old_logp = jax.nn.log_softmax(old_logits)
    new_logp = jax.nn.log_softmax(new_logits)
    analytic = np.sum(np.exp(old_logp) * (old_logp - new_logp), axis=-1)  # [S]
    actions = jax.random.categorical(k3, old_logits, shape=(samples_per_state, num_states))
    take = lambda lp: jnp.take_along_axis(lp[None].repeat(samples_per_state, 0),
                                          actions[..., None], -1)[..., 0]
    k3_samples = np.asarray(pgkit.approx_kl(take(new_logp), take(old_logp)))  # [N, S]
    assert np.all(k3_samples >= 0)
    mean = k3_samples.mean(0)
    stderr = k3_samples.std(0, ddof=1) / np.sqrt(samples_per_state)
    assert np.all(np.abs(mean - analytic) < 4 * stderr), (mean, analytic, stderr)
    assert np.all(analytic > 5e-4)  # a real policy change, not a trivial zero


# --------------------------------------------------------------------------- invariance




@pytest.mark.parametrize(
    "name",
    ["ppo_clip_loss", "clipped_value_loss", "kl_penalty_loss", "approx_kl", "clip_fraction"],
)
def test_jit_vmap_batch_invariance(name):
    lp, olp, adv, kls = _inputs(jax.random.PRNGKey(6))
    fns = {
        "ppo_clip_loss": lambda a, b, c, d, h: pgkit.ppo_clip_loss(a, b, c, clip_eps=h),
        "clipped_value_loss": lambda a, b, c, d, h: pgkit.clipped_value_loss(a, b, c, clip_eps=h),
        "kl_penalty_loss": lambda a, b, c, d, h: pgkit.kl_penalty_loss(a, b, c, d, beta=h),
        "approx_kl": lambda a, b, c, d, h: pgkit.approx_kl(a, b),
        "clip_fraction": lambda a, b, c, d, h: pgkit.clip_fraction(a, b, clip_eps=h),
    }
    fn = fns[name]
    h = jnp.asarray(EPS)
    direct = fn(lp, olp, adv, kls, h)
    assert direct.shape == (T, E)
    jitted = jax.jit(fn)(lp, olp, adv, kls, h)
    # vmap over a leading axis of E independent streams [E, T], each stream [T] on its own and
    # the direct [T, E] call: bit-identical, eager or jitted.
    per_stream = (lp.T, olp.T, adv.T, kls.T)  # [E, T]
    vmapped = jax.vmap(fn, in_axes=(0, 0, 0, 0, None))
    np.testing.assert_array_equal(vmapped(*per_stream, h).T, direct)
    np.testing.assert_array_equal(jax.jit(vmapped)(*per_stream, h).T, jitted)
    for e in range(E):
        np.testing.assert_array_equal(fn(lp[:, e], olp[:, e], adv[:, e], kls[:, e], h), direct[:, e])
    ref.assert_equal_up_to_rounding(jitted, direct, ulps=8)  # jit vs eager: XLA may contract to FMAs


def test_new_float_hyperparameter_does_not_retrace():
    lp, olp, adv, _ = _inputs(jax.random.PRNGKey(7))
    traces = []

    @jax.jit
    def loss(eps):
        traces.append(None)
        return pgkit.ppo_clip_loss(lp, olp, adv, clip_eps=eps)

    small = loss(jnp.asarray(0.1))
    large = loss(jnp.asarray(0.3))
    assert len(traces) == 1
    np.testing.assert_allclose(large, _np_ppo_clip(lp, olp, adv, 0.3), rtol=1e-5, atol=1e-6)
    assert not np.allclose(small, large)
    # vmap over a sweep of clip values.
    sweep = jax.vmap(loss)(jnp.array([0.1, 0.3]))
    np.testing.assert_array_equal(sweep[1], large)


# --------------------------------------------------------------------------- bad input


def test_shape_mismatch_raises():
    x = jnp.zeros((T, E))
    with pytest.raises(ValueError, match="advantages"):
        pgkit.ppo_clip_loss(x, x, jnp.zeros((T,)), clip_eps=EPS)
    with pytest.raises(ValueError, match="targets"):
        pgkit.clipped_value_loss(x, x, jnp.zeros((E, T)), clip_eps=EPS)
    with pytest.raises(ValueError, match="kls"):
        pgkit.kl_penalty_loss(x, x, x, jnp.zeros((T, 1)), beta=1.0)
    with pytest.raises(ValueError, match="old_log_probs"):
        pgkit.approx_kl(x, jnp.zeros((T,)))
    with pytest.raises(ValueError, match="old_log_probs"):
        pgkit.clip_fraction(x, jnp.zeros((T,)), clip_eps=EPS)
