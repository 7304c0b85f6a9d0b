"""Tests for pgkit.cem: elite selection, Gaussian refit, tabular update and episode replays, approximated-CEM loss."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pgkit


def _np_elites(scores, m):
    """Oracle: stable sort by decreasing score (lower index first among ties), NaN last."""
    scores = np.where(np.isnan(scores), -np.inf, scores)
    return np.argsort(-scores, kind="stable")[:m]


def _np_tabular(states, actions, weights, old, lambda_, smoothing):
    counts = np.zeros(old.shape)
    for s, a, w in zip(states.ravel(), actions.ravel(), weights.ravel()):
        counts[s, a] += w
    new = old.astype(np.float64).copy()
    for s in range(old.shape[0]):
        n = counts[s].sum()
        if n > 0:
            for a in range(old.shape[1]):
                new[s, a] = (counts[s, a] + lambda_) / (n + lambda_ * old.shape[1])
    return smoothing * new + (1 - smoothing) * old


# ----------------------------------------------------------------------------- elite selection


def test_elite_indices_tie_breaking_is_deterministic():
    scores = jnp.array([1.0, 5.0, 3.0, 5.0, 3.0, 3.0, -1.0])
    np.testing.assert_array_equal(np.asarray(pgkit.elite_indices(scores, num_elites=3)), [1, 3, 2])  # tie at the cut: 2 < 4 < 5
    np.testing.assert_array_equal(np.asarray(pgkit.elite_indices(scores, num_elites=4)), [1, 3, 2, 4])
    np.testing.assert_array_equal(
        np.asarray(pgkit.elite_mask(scores, num_elites=4)), [False, True, True, True, True, False, False]
    )
    # all equal: the first M
    np.testing.assert_array_equal(np.asarray(pgkit.elite_indices(jnp.zeros(6), num_elites=2)), [0, 1])
    # NaN ranks below everything
    np.testing.assert_array_equal(np.asarray(pgkit.elite_indices(jnp.array([jnp.nan, -5.0, 2.0]), num_elites=2)), [2, 1])


def test_elite_indices_vs_numpy_on_many_ties_jit_and_vmap():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 4, size=(6, 20)).astype(np.float32)  # many ties
    select = jax.jit(jax.vmap(lambda s: (pgkit.elite_indices(s, num_elites=7), pgkit.elite_mask(s, num_elites=7))))
    idx, mask = select(scores)
    for i in range(6):
        expected = _np_elites(scores[i], 7)
        np.testing.assert_array_equal(np.asarray(idx[i]), expected)
        np.testing.assert_array_equal(np.asarray(mask[i]), np.isin(np.arange(20), expected))
        np.testing.assert_array_equal(np.asarray(pgkit.elite_indices(scores[i], num_elites=7)), expected)
    again, _ = select(scores)  # deterministic
    np.testing.assert_array_equal(np.asarray(again), np.asarray(idx))
    assert idx.dtype == jnp.int32
    # integer scores work too
    np.testing.assert_array_equal(np.asarray(pgkit.elite_indices(jnp.array([2, 7, 7, 1]), num_elites=2)), [1, 2])


def test_elite_bad_input():
    with pytest.raises(ValueError, match="num_elites"):
        pgkit.elite_indices(jnp.zeros(4), num_elites=5)
    with pytest.raises(ValueError, match="num_elites"):
        pgkit.elite_indices(jnp.zeros(4), num_elites=0)
    with pytest.raises(ValueError, match="scores"):
        pgkit.elite_mask(jnp.zeros((2, 4)), num_elites=1)


# ----------------------------------------------------------------------------- Gaussian refit


def test_gaussian_refit_vs_numpy():
    rng = np.random.default_rng(1)
    samples = rng.normal(size=(12, 4)).astype(np.float32)
    old_mean = rng.normal(size=4).astype(np.float32)
    old_std = rng.uniform(0.5, 2, size=4).astype(np.float32)
    idx = np.array([3, 7, 0, 11, 5])
    elites = samples[idx].astype(np.float64)
    for smoothing, min_std in [(1.0, 0.0), (0.7, 0.0), (0.5, 0.9)]:
        got = pgkit.gaussian_refit(samples, jnp.asarray(idx), old_mean, old_std, smoothing=smoothing, min_std=min_std)
        mean = smoothing * elites.mean(0) + (1 - smoothing) * old_mean
        std = np.maximum(smoothing * elites.std(0) + (1 - smoothing) * old_std, min_std)
        np.testing.assert_allclose(np.asarray(got.mean), mean, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(np.asarray(got.std), std, rtol=1e-5, atol=1e-6)
    assert np.all(np.asarray(got.std) >= 0.9)
    with pytest.raises(ValueError, match="old_std"):
        pgkit.gaussian_refit(samples, jnp.asarray(idx), old_mean, old_std[:3])
    with pytest.raises(ValueError, match="elite_idx"):
        pgkit.gaussian_refit(samples, jnp.asarray(idx, jnp.float32), old_mean, old_std)


def test_cem_finds_the_optimum_of_a_quadratic_under_jit():
    """5-d quadratic, optimum at a known point: 20 iterations of N=100, M=10 reach it, for 8 seeds at once."""
    optimum = jnp.array([1.0, -2.0, 0.5, 3.0, -1.5])
    n, m, iterations = 100, 10, 20

    @jax.jit
    def run(keys, smoothing):
        def one(key):
            def body(carry, k):
                mean, std = carry
                x = mean + std * jax.random.normal(k, (n, 5))
                scores = -jnp.sum((x - optimum) ** 2, axis=1)
                fit = pgkit.gaussian_refit(
                    x, pgkit.elite_indices(scores, num_elites=m), mean, std, smoothing=smoothing, min_std=1e-2
                )
                return tuple(fit), jnp.linalg.norm(fit.mean - optimum)

            return jax.lax.scan(body, (jnp.zeros(5), jnp.full(5, 3.0)), jax.random.split(key, iterations))[1]

        return jax.vmap(one)(keys)

    errors = np.asarray(run(jax.random.split(jax.random.key(0), 8), 0.8))
    assert errors[:, 0].min() > 0.3  # it starts far away
    assert np.all(errors[:, -1] < 0.02), errors[:, -1]


# ----------------------------------------------------------------------------- tabular CEM


def test_tabular_update_hand_computed():
    # 3 rollouts of length 4 over S = 4 states, A = 3 actions; rollouts 0 and 2 are the elite;
    # rollout 2 ends after 3 steps (its last step is padding, weight 0).
    states = jnp.array([[0, 1, 0], [1, 1, 1], [0, 2, 0], [1, 2, 2]])  # [T=4, N=3]
    actions = jnp.array([[2, 0, 2], [0, 1, 0], [2, 1, 1], [1, 0, 0]])
    weights = jnp.array([[1, 0, 1], [1, 0, 1], [1, 0, 1], [1, 0, 0]], jnp.float32)
    old = jnp.array([[0.2, 0.3, 0.5], [0.1, 0.1, 0.8], [0.3, 0.3, 0.4], [0.6, 0.2, 0.2]])
    # elite counts: state 0: a1 ×1, a2 ×3; state 1: a0 ×2, a1 ×1; states 2, 3: none (state 2 only in
    # the non-elite rollout 1 and in rollout 2's padding)
    plain = np.asarray(pgkit.tabular_cem_update(states, actions, weights, old))
    np.testing.assert_allclose(plain[0], [0.0, 0.25, 0.75], atol=1e-7)
    np.testing.assert_allclose(plain[1], [2 / 3, 1 / 3, 0.0], atol=1e-6)
    np.testing.assert_array_equal(plain[2:], np.asarray(old)[2:])  # unvisited rows kept
    smoothed = np.asarray(pgkit.tabular_cem_update(states, actions, weights, old, lambda_=0.5))
    np.testing.assert_allclose(smoothed[0], [0.5 / 5.5, 1.5 / 5.5, 3.5 / 5.5], rtol=1e-6)
    np.testing.assert_allclose(smoothed[1], [2.5 / 4.5, 1.5 / 4.5, 0.5 / 4.5], rtol=1e-6)
    np.testing.assert_array_equal(smoothed[2:], np.asarray(old)[2:])
    mixed = np.asarray(pgkit.tabular_cem_update(states, actions, weights, old, lambda_=0.5, smoothing=0.25))
    np.testing.assert_allclose(mixed, 0.25 * smoothed + 0.75 * np.asarray(old), rtol=1e-6)
    np.testing.assert_allclose(mixed.sum(1), 1.0, rtol=1e-6)


def test_tabular_update_vs_numpy_jit_vmap():
    rng = np.random.default_rng(2)
    s_count, a_count, t, n = 5, 3, 6, 8
    states = rng.integers(0, s_count, size=(2, t, n))
    actions = rng.integers(0, a_count, size=(2, t, n))
    returns = rng.normal(size=(2, n))
    old = rng.dirichlet(np.ones(a_count), size=(2, s_count)).astype(np.float32)

    def update(states, actions, returns, old, lambda_):
        weights = pgkit.elite_mask(returns, num_elites=3)[None, :] * jnp.ones((t, 1))
        return pgkit.tabular_cem_update(states, actions, weights, old, lambda_=lambda_, smoothing=0.9)

    got = jax.jit(jax.vmap(update, in_axes=(0, 0, 0, 0, None)))(states, actions, returns, old, 0.3)
    for i in range(2):
        weights = np.isin(np.arange(n), _np_elites(returns[i], 3))[None, :] * np.ones((t, 1))
        expected = _np_tabular(states[i], actions[i], weights, old[i], 0.3, 0.9)
        np.testing.assert_allclose(np.asarray(got[i]), expected, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(np.asarray(update(states[i], actions[i], returns[i], old[i], 0.3)), expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="actions"):
        pgkit.tabular_cem_update(states[0], actions[0, :, :2], np.ones((t, n)), old[0])
    with pytest.raises(ValueError, match="states"):
        pgkit.tabular_cem_update(states[0].astype(np.float32), actions[0], np.ones((t, n)), old[0])


def _np_episode_policies(states, actions, valid, old):
    """Oracle: for each rollout (column), its own action frequencies in the states it acted in, old rows elsewhere."""
    t_count, n_count = states.shape
    tables = np.repeat(old[None].astype(np.float64), n_count, axis=0)
    for n in range(n_count):
        counts = np.zeros(old.shape)
        for t in range(t_count):
            counts[states[t, n], actions[t, n]] += valid[t, n]
        for s in range(old.shape[0]):
            if counts[s].sum() > 0:
                tables[n, s] = counts[s] / counts[s].sum()
    return tables


def test_tabular_episode_policies_hand_computed_and_vs_numpy():
    # rollout 0 acts in states 0, 1, 0 (actions 2, 0, 1): state 0 is replayed half 2, half 1;
    # rollout 1's last step is padding (weight 0): its action there is not replayed
    states = jnp.array([[0, 2], [1, 2], [0, 3]])  # [T=3, N=2]
    actions = jnp.array([[2, 1], [0, 1], [1, 0]])
    valid = jnp.array([[1, 1], [1, 1], [1, 0]], jnp.float32)
    old = jnp.array([[0.2, 0.3, 0.5], [0.1, 0.1, 0.8], [0.3, 0.3, 0.4], [0.6, 0.2, 0.2]])
    tables = np.asarray(pgkit.tabular_episode_policies(states, actions, valid, old))
    assert tables.shape == (2, 4, 3)
    np.testing.assert_allclose(tables[0], [[0, 0.5, 0.5], [1, 0, 0], old[2], old[3]], atol=1e-7)
    np.testing.assert_allclose(tables[1], [old[0], old[1], [0, 1, 0], old[3]], atol=1e-7)

    rng = np.random.default_rng(4)
    s_count, a_count, t, n = 6, 4, 9, 7
    states = rng.integers(0, s_count, size=(t, n))
    actions = rng.integers(0, a_count, size=(t, n))
    valid = (rng.uniform(size=(t, n)) < 0.7).astype(np.float32)
    old = rng.dirichlet(np.ones(a_count), size=s_count).astype(np.float32)
    expected = _np_episode_policies(states, actions, valid, old)
    got = jax.jit(pgkit.tabular_episode_policies)(states, actions, valid, old)
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(np.asarray(got).sum(-1), 1.0, rtol=1e-6)
    batched = jax.vmap(pgkit.tabular_episode_policies, in_axes=(0, 0, 0, None))(
        np.stack([states, states[::-1]]), np.stack([actions, actions[::-1]]), np.stack([valid, valid[::-1]]), old
    )
    np.testing.assert_allclose(np.asarray(batched[0]), expected, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(
        np.asarray(batched[1]), _np_episode_policies(states[::-1], actions[::-1], valid[::-1], old), rtol=1e-6, atol=1e-7
    )
    with pytest.raises(ValueError, match="valid"):
        pgkit.tabular_episode_policies(states, actions, valid[:, :3], old)
    with pytest.raises(ValueError, match="states"):
        pgkit.tabular_episode_policies(states[:, 0], actions[:, 0], valid[:, 0], old)


# ----------------------------------------------------------------------------- approximated CEM


def test_approximate_cem_loss_values_gradient_and_tabular_special_case():
    rng = np.random.default_rng(3)
    log_probs = np.log(rng.uniform(0.05, 1, size=(4, 5))).astype(np.float32)
    mask = np.array([True, False, True, False, False])
    got = pgkit.approximate_cem_loss(log_probs, mask[None, :])
    np.testing.assert_allclose(np.asarray(got), np.where(mask[None, :], -log_probs, 0.0), rtol=1e-6)
    g_lp, g_mask = jax.grad(lambda lp, m: jnp.sum(pgkit.approximate_cem_loss(lp, m)), argnums=(0, 1))(
        log_probs, mask[None, :].astype(np.float32) * np.ones((4, 1), np.float32)
    )
    np.testing.assert_allclose(np.asarray(g_lp), -np.broadcast_to(mask, (4, 5)).astype(np.float32))
    assert np.all(np.asarray(g_mask) == 0)
    # a log-prob of -inf outside the elite gives 0, not NaN
    assert np.asarray(pgkit.approximate_cem_loss(jnp.array([-jnp.inf, -1.0]), jnp.array([0.0, 1.0]))).tolist() == [0.0, 1.0]
    with pytest.raises(ValueError, match="elite_mask"):
        pgkit.approximate_cem_loss(log_probs, np.ones(4))
    vmapped = jax.jit(jax.vmap(pgkit.approximate_cem_loss, in_axes=(1, 0), out_axes=1))(log_probs, mask)
    np.testing.assert_allclose(np.asarray(vmapped), np.asarray(got), rtol=1e-6)

    # Tabular softmax policy: the maximum-likelihood fit (zero gradient of the summed loss on visited
    # states) is the λ = 0 tabular CEM table.
    states = jnp.array([[0, 1, 0], [1, 1, 2], [0, 2, 0]])
    actions = jnp.array([[2, 0, 1], [0, 1, 0], [2, 1, 1]])
    weights = jnp.array([[1, 0, 1], [1, 0, 1], [1, 0, 1]], jnp.float32)
    table = pgkit.tabular_cem_update(states, actions, weights, jnp.full((3, 3), 1 / 3), lambda_=0.0)

    def total_loss(logits):
        log_pi = jax.nn.log_softmax(logits)[states, actions]
        return jnp.sum(pgkit.approximate_cem_loss(log_pi, weights))

    safe_logits = jnp.log(jnp.maximum(table, 1e-30))
    grad = np.asarray(jax.grad(total_loss)(safe_logits))
    np.testing.assert_allclose(grad, 0.0, atol=1e-5)
    assert np.abs(np.asarray(jax.grad(total_loss)(jnp.zeros((3, 3))))).max() > 0.1  # not zero elsewhere
