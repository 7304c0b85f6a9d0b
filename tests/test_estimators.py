"""pgkit.estimators: score-function and pathwise surrogates against closed forms and NumPy loops."""

import functools

import distrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pgkit
import reference as ref
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
    """a ~ N(μ, diag σ²) in 2-D, σ = exp(s), f(a) = −‖a − c‖², so E f = −Σ_i ((μ_i − c_i)² + σ_i²):
    ∇_μ E f = −2 (μ − c) and ∇_s E f = −2 σ², both estimated from the score of the log-density
    (also with a constant baseline)."""
    mean, log_std = jnp.array([0.7, -0.4]), jnp.log(jnp.array([0.8, 1.3]))
    c = jnp.array([2.0, -1.0])

    @jax.jit
    def estimates(key, baseline):
        dist = distrax.MultivariateNormalDiag(mean, jnp.exp(log_std))
        actions = jax.lax.stop_gradient(dist.sample(seed=key, sample_shape=N))  # [N, 2]

        def surrogate(params, a):
            m, s = params
            log_prob = distrax.MultivariateNormalDiag(m, jnp.exp(s)).log_prob(a)
            return -pgkit.score_function_loss(log_prob, -jnp.sum((a - c) ** 2) - baseline)

        grad_mean, grad_log_std = jax.vmap(jax.grad(surrogate), in_axes=(None, 0))((mean, log_std), actions)
        return jnp.concatenate([grad_mean, grad_log_std], axis=-1)  # [N, 4]: (∂μ₁, ∂μ₂, ∂s₁, ∂s₂)

    analytic = np.concatenate([-2.0 * (mean - c), -2.0 * jnp.exp(2.0 * log_std)])
    _, se = assert_within_4_se(estimates(jax.random.key(2), 0.0), analytic)
    assert_within_4_se(estimates(jax.random.key(2), -3.0), analytic)
    # Power: every component, the log-std ones included, is many standard errors from zero, and
    # a gradient that ignored the log-std (the 1-D fixed-σ test's blind spot) would fail.
    assert np.min(np.abs(analytic) / se) > 8, (analytic, se)


# ----------------------------------------------------------------------------------------------
# reinforce_loss against the NumPy loop oracles (tests/reference.py): loss values on random
# rollouts, gradients on a tiny tabular policy.
# ----------------------------------------------------------------------------------------------

ROLLOUTS = {
    "T16_B3": dict(seed=40, T=16, batch_shape=(3,)),
    "T12_B2x2": dict(seed=41, T=12, batch_shape=(2, 2)),
}

# Compiled once per shape and baseline kind (an eager call re-traces the scan every time).
reinforce_jit = jax.jit(pgkit.reinforce_loss, static_argnames=("causal", "stop_target_gradients"))


def _baseline_kinds(shape, seed):
    rng = np.random.default_rng(seed)
    return {
        "none": None,
        "scalar": np.float32(0.7),
        "per_step": rng.normal(size=shape).astype(np.float32),  # [T, *B], e.g. V(s_t)
        "per_stream": rng.normal(size=shape[1:]).astype(np.float32),  # [*B]
    }


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "whole"])
@pytest.mark.parametrize("name", list(ROLLOUTS))
def test_reinforce_loss_matches_oracle(name, causal):
    data = ref.random_rollout(**ROLLOUTS[name])
    # Both kinds of boundary, several per rollout (random_rollout puts ≥ 1 of each per stream).
    assert data["terminated"].sum() >= 2 and data["truncated"].sum() >= 2
    shape = data["rewards"].shape
    log_probs = -np.abs(np.random.default_rng(42).normal(size=shape)).astype(np.float32)
    r, d, dn = data["rewards"], data["discounts"], data["dones"]
    for kind, baselines in _baseline_kinds(shape, 43).items():
        expected = ref.reinforce_loss(log_probs, r, d, dn, baselines, causal)
        for stop in (True, False):  # the keyword changes gradients, never values
            got = reinforce_jit(log_probs, r, d, dn, baselines=baselines, causal=causal,
                                stop_target_gradients=stop)
            np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5, err_msg=kind)
    # The rollout is not degenerate: cutting at dones matters (summing across them would not match).
    no_cut = ref.reinforce_loss(log_probs, r, d, np.zeros_like(dn), None, causal)
    assert not np.allclose(reinforce_jit(log_probs, r, d, dn, causal=causal), no_cut, atol=1e-3)


def test_reinforce_oracle_hand_made_boundaries():
    """The oracle itself on a stream worked by hand: γ = 0.5, r = 1, step 1 terminates, step 3 is
    truncated (no bootstrap either way), step 4 runs off the rollout's end; log π = −1."""
    r, lp = np.ones(5), -np.ones(5)
    d = np.array([0.5, 0.0, 0.5, 0.5, 0.5])
    dn = np.array([0, 1, 0, 1, 0])
    np.testing.assert_allclose(ref.reinforce_loss(lp, r, d, dn), [1.5, 1.0, 1.5, 1.0, 1.0])
    np.testing.assert_allclose(ref.reinforce_loss(lp, r, d, dn, causal=False), [1.5, 1.5, 1.5, 1.5, 1.0])
    np.testing.assert_allclose(ref.reinforce_loss(lp, r, d, dn, 1.0), [0.5, 0.0, 0.5, 0.0, 0.0])
    np.testing.assert_allclose(pgkit.reinforce_loss(lp, r, d, dn), [1.5, 1.0, 1.5, 1.0, 1.0])


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
        expected = ref.reinforce_tabular_gradient(TABLE, STATES, ACTIONS, REWARDS, DISCOUNTS, DONES, baselines, causal)
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


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "whole"])
def test_reinforce_jit_vmap_and_batch_invariance(causal):
    """Identical numbers (bit for bit) eager and under jit, for a direct [T, E] call, for vmap over
    a leading axis of E independent streams [E, T], and for one stream [T] on its own."""
    data = ref.random_rollout(44, T=12, batch_shape=(4,))
    log_probs = -jnp.abs(jnp.asarray(np.random.default_rng(45).normal(size=(12, 4)), jnp.float32))
    args = (log_probs, *(jnp.asarray(data[k]) for k in ("rewards", "discounts", "dones", "values")))

    def fn(lp, r, d, dn, b):
        return pgkit.reinforce_loss(lp, r, d, dn, baselines=b, causal=causal)

    direct = fn(*args)  # [T, E]
    per_stream = tuple(a.T for a in args)  # [E, T]: a leading batch axis of single streams
    jitted = jax.jit(fn)(*args)
    ref.assert_equal_up_to_rounding(jitted, direct, ulps=8)  # XLA may contract to FMAs
    np.testing.assert_array_equal(jax.vmap(fn)(*per_stream).T, direct)
    np.testing.assert_array_equal(jax.jit(jax.vmap(fn))(*per_stream).T, jitted)
    np.testing.assert_array_equal(fn(*(a[:, 1] for a in args)), direct[:, 1])


# ----------------------------------------------------------------------------------------------
# per_trajectory_importance_loss and per_decision_importance_loss: NumPy loop oracles, the
# gradient (through log π only), unbiasedness for the target policy's ∇J on a 2-step problem
# with a closed form, and jit / vmap invariance.
# ----------------------------------------------------------------------------------------------


def _off_policy_rollout(seed, T=16, batch_shape=(3,)):
    """A random rollout (both kinds of boundary) with target and behaviour log-probabilities."""
    data = ref.random_rollout(seed, T=T, batch_shape=batch_shape)
    rng = np.random.default_rng(seed + 100)
    log_probs = -np.abs(rng.normal(size=data["rewards"].shape)).astype(np.float32) - 0.1
    data["log_probs"] = log_probs
    data["behaviour_log_probs"] = (log_probs - data["log_ratios"]).astype(np.float32)
    return data


IMPORTANCE_CASES = {  # name: (importance keyword arguments, use next_values)
    "plain": ({}, False),
    "capped": ({"max_weight": 1.5}, False),
    "baselines_bootstrap": ({"baselines": "values"}, True),
    "capped_per_stream_baseline": ({"max_weight": 2.0, "baselines": "per_stream"}, True),
}


def _importance_arguments(data, case):
    kwargs, bootstrap = IMPORTANCE_CASES[case]
    kwargs = dict(kwargs)
    if kwargs.get("baselines") == "values":
        kwargs["baselines"] = data["values"]
    elif kwargs.get("baselines") == "per_stream":
        kwargs["baselines"] = data["values"][0]  # [*B]
    return kwargs, (data["next_values"] if bootstrap else None)


@pytest.mark.parametrize("case", list(IMPORTANCE_CASES))
@pytest.mark.parametrize("name", list(ROLLOUTS))
def test_importance_losses_match_oracle(name, case):
    data = _off_policy_rollout(ROLLOUTS[name]["seed"], ROLLOUTS[name]["T"], ROLLOUTS[name]["batch_shape"])
    kwargs, next_values = _importance_arguments(data, case)
    lp, mu = data["log_probs"], data["behaviour_log_probs"]
    r, d, dn = data["rewards"], data["discounts"], data["dones"]

    out = pgkit.per_decision_importance_loss(lp, mu, r, d, dn, next_values, **kwargs)
    expected = ref.per_decision_importance_loss(lp, mu, r, d, dn, next_values, kwargs.get("baselines"),
                                                kwargs.get("max_weight"))
    np.testing.assert_allclose(out.losses, expected, rtol=2e-5, atol=2e-5)
    np.testing.assert_allclose(out.weights, -expected / lp, rtol=2e-5, atol=2e-5)
    weights = ref.per_decision_weights(ref.log_ratios(lp, mu), dn)
    np.testing.assert_allclose(out.importance_weights, np.minimum(weights, kwargs.get("max_weight", np.inf)),
                               rtol=2e-5)

    # Per trajectory, with the causal bootstrapped return minus the baseline as ψ_t.
    baselines = 0.0 if kwargs.get("baselines") is None else kwargs["baselines"]
    psi = ref.reward_to_go(r, d, dn, next_values) - baselines
    out = pgkit.per_trajectory_importance_loss(lp, mu, psi.astype(np.float32), dn,
                                               max_weight=kwargs.get("max_weight"))
    expected = ref.per_trajectory_importance_loss(lp, mu, psi, dn, kwargs.get("max_weight"))
    np.testing.assert_allclose(out.losses, expected, rtol=2e-5, atol=2e-5)
    np.testing.assert_allclose(out.weights, -expected / lp, rtol=2e-5, atol=2e-5)
    weights = ref.per_trajectory_weights(ref.log_ratios(lp, mu), dn)
    np.testing.assert_allclose(out.importance_weights, np.minimum(weights, kwargs.get("max_weight", np.inf)),
                               rtol=2e-5)
    if "max_weight" in kwargs:  # the cap binds somewhere, so it is tested
        assert np.any(weights > kwargs["max_weight"])


def test_importance_losses_on_policy_are_reinforce_loss():
    """With μ = π every weight is 1: per decision is the causal REINFORCE loss, bit for bit; per
    trajectory with ψ = G_t − b_t (or R(τ)) is too. Single-step episodes: both forms agree."""
    data = _off_policy_rollout(47)
    lp, r, d, dn, b = (data[k] for k in ("log_probs", "rewards", "discounts", "dones", "values"))
    for baselines in (None, b):
        causal = pgkit.reinforce_loss(lp, r, d, dn, baselines=baselines)
        decision = pgkit.per_decision_importance_loss(lp, lp, r, d, dn, baselines=baselines)
        np.testing.assert_array_equal(decision.losses, causal)
        np.testing.assert_array_equal(decision.importance_weights, np.ones_like(lp))
        psi = pgkit.reward_to_go(r, d, dn) - (0.0 if baselines is None else baselines)
        np.testing.assert_array_equal(pgkit.per_trajectory_importance_loss(lp, lp, psi, dn).losses, causal)
    whole = pgkit.reinforce_loss(lp, r, d, dn, causal=False)
    psi = pgkit.episode_returns(r, d, dn)
    np.testing.assert_array_equal(pgkit.per_trajectory_importance_loss(lp, lp, psi, dn).losses, whole)
    # Every step its own episode: the product over the episode is the product up to the step.
    mu, ones = data["behaviour_log_probs"], np.ones_like(dn)
    decision = pgkit.per_decision_importance_loss(lp, mu, r, d, ones)
    trajectory = pgkit.per_trajectory_importance_loss(lp, mu, r, ones)
    np.testing.assert_allclose(decision.losses, trajectory.losses, rtol=1e-6)


def _importance_total(table, behaviour_log_probs, rewards, baselines, form, stop_target_gradients=True):
    log_probs = jax.nn.log_softmax(table)[STATES, ACTIONS]
    if form == "per_decision":
        out = pgkit.per_decision_importance_loss(
            log_probs, behaviour_log_probs, rewards, jnp.asarray(DISCOUNTS), jnp.asarray(DONES),
            baselines=baselines, stop_target_gradients=stop_target_gradients,
        )
    else:
        psi = pgkit.reward_to_go(rewards, jnp.asarray(DISCOUNTS), jnp.asarray(DONES),
                                 stop_target_gradients=stop_target_gradients) - baselines
        out = pgkit.per_trajectory_importance_loss(
            log_probs, behaviour_log_probs, psi, jnp.asarray(DONES), stop_target_gradients=stop_target_gradients
        )
    return out.losses.sum()


importance_grad = jax.jit(jax.grad(_importance_total, argnums=(0, 1, 2, 3)), static_argnums=(4, 5))
BEHAVIOUR_LOG_PROBS = np.log(np.asarray(jax.random.uniform(jax.random.key(6), (T, B), minval=0.2, maxval=0.6)))


@pytest.mark.parametrize("form", ["per_decision", "per_trajectory"])
def test_importance_gradient_is_the_score_times_the_oracle_weights(form):
    """∂/∂table = −Σ_t weights_t (onehot(a_t) − π(·|s_t)) at row s_t, with the oracle's weights
    held constant: no gradient reaches the behaviour log-probabilities, and none comes through
    the importance weights' own dependence on the target log-probabilities."""
    table, mu, rewards = jnp.asarray(TABLE), jnp.asarray(BEHAVIOUR_LOG_PROBS, jnp.float32), jnp.asarray(REWARDS)
    baselines = jnp.asarray(jax.random.normal(jax.random.key(7), (T, B)))
    log_probs = np.asarray(jax.nn.log_softmax(table)[STATES, ACTIONS], np.float64)
    if form == "per_decision":
        losses = ref.per_decision_importance_loss(log_probs, BEHAVIOUR_LOG_PROBS, REWARDS, DISCOUNTS, DONES,
                                                  baselines=baselines)
    else:
        psi = ref.reward_to_go(REWARDS, DISCOUNTS, DONES) - np.asarray(baselines)
        losses = ref.per_trajectory_importance_loss(log_probs, BEHAVIOUR_LOG_PROBS, psi, DONES)
    weights = -losses / log_probs
    probs = np.asarray(jax.nn.softmax(np.asarray(TABLE, np.float64)))
    expected = np.zeros_like(probs)
    for idx in np.ndindex(T, B):
        expected[STATES[idx]] -= weights[idx] * (np.eye(A)[ACTIONS[idx]] - probs[STATES[idx]])
    grad_table, grad_mu, grad_r, grad_b = importance_grad(table, mu, rewards, baselines, form, True)
    np.testing.assert_allclose(grad_table, expected, rtol=1e-4, atol=1e-5)
    for g in (grad_mu, grad_r, grad_b):
        assert np.all(np.asarray(g) == 0.0)
    # Opening the target gradients lets them into rewards and baselines, never into μ or the weights.
    _, grad_mu, grad_r, grad_b = importance_grad(table, mu, rewards, baselines, form, False)
    assert np.all(np.asarray(grad_mu) == 0.0)
    assert np.any(np.asarray(grad_r) != 0.0) and np.any(np.asarray(grad_b) != 0.0)
    # d loss / d rewards by finite differences (the loss is linear in the rewards).
    eps = 1e-2
    basis = np.eye(T * B, dtype=np.float32).reshape(T * B, T, B) * eps
    fd_total = jax.jit(jax.vmap(lambda e: _importance_total(table, mu, rewards + e, baselines, form, False)))
    fd = (fd_total(basis) - fd_total(-basis)) / (2 * eps)
    np.testing.assert_allclose(np.asarray(fd).reshape(T, B), grad_r, atol=5e-3)


# A 2-step problem with a closed form: s_0 fixed, a_0 ~ softmax(θ_0) (3 actions), reward R0[a_0];
# s_1 ~ P(·|a_0) (2 states), a_1 ~ softmax(θ_1[s_1]), reward R1[s_1, a_1], then termination.
# J(θ) = Σ_{a_0} π_0(a_0) (R0[a_0] + Σ_{s_1} P(s_1|a_0) Σ_{a_1} π_1(a_1|s_1) R1[s_1, a_1]);
# episodes come from the behaviour policy softmax(φ), a different one.
TARGET = (jnp.array([0.4, -0.3, 0.1]), jnp.array([[0.8, -0.5, 0.0], [-0.6, 0.2, 0.7]]))
BEHAVIOUR = (jnp.array([0.0, 0.3, -0.2]), jnp.array([[-0.8, 0.8, 0.3], [0.8, -0.5, -0.6]]))
TRANSITIONS = jnp.array([[0.95, 0.05], [0.1, 0.9], [0.5, 0.5]])
R0, R1 = jnp.array([1.0, -0.5, 0.3]), jnp.array([[2.0, -1.0, 0.5], [-1.5, 1.0, 2.5]])
TWO_STEP_DISCOUNTS, TWO_STEP_DONES = jnp.array([1.0, 0.0]), jnp.array([False, True])
STATE_BASELINE = jnp.array([0.5, -0.5])  # b(s_1)


def two_step_value(theta):
    p0, p1 = jax.nn.softmax(theta[0]), jax.nn.softmax(theta[1])
    return p0 @ (R0 + TRANSITIONS @ jnp.sum(p1 * R1, -1))


@functools.partial(jax.jit, static_argnames=("form", "n"))
def two_step_estimates(key, theta, *, form, n):
    """Per-episode −∇_θ Σ_t loss_t [n, 9] (∂θ_0, then ∂θ_1 row-major) from n behaviour episodes."""
    k0, k1, k2 = jax.random.split(key, 3)
    a0 = jax.random.categorical(k0, BEHAVIOUR[0], shape=(n,))
    s1 = jax.random.categorical(k1, jnp.log(TRANSITIONS[a0]))
    a1 = jax.random.categorical(k2, BEHAVIOUR[1][s1])
    mu = jnp.stack([jax.nn.log_softmax(BEHAVIOUR[0])[a0], jax.nn.log_softmax(BEHAVIOUR[1])[s1, a1]])  # [2, n]
    rewards = jnp.stack([R0[a0], R1[s1, a1]])

    def estimate(a0, s1, a1, mu, r):
        def surrogate(theta):
            lp = jnp.stack([jax.nn.log_softmax(theta[0])[a0], jax.nn.log_softmax(theta[1])[s1, a1]])
            d, dn = TWO_STEP_DISCOUNTS, TWO_STEP_DONES
            baselines = jnp.stack([1.0, STATE_BASELINE[s1]])
            if form == "per_decision":
                losses = pgkit.per_decision_importance_loss(lp, mu, r, d, dn).losses
            elif form == "per_decision_baseline":
                losses = pgkit.per_decision_importance_loss(lp, mu, r, d, dn, baselines=baselines).losses
            elif form == "per_trajectory":
                losses = pgkit.per_trajectory_importance_loss(lp, mu, pgkit.reward_to_go(r, d, dn), dn).losses
            elif form == "per_trajectory_whole_baseline":
                psi = pgkit.episode_returns(r, d, dn) - baselines
                losses = pgkit.per_trajectory_importance_loss(lp, mu, psi, dn).losses
            else:  # "lecture": G_t weighted by the ratios up to t only
                w = pgkit.per_decision_weights(pgkit.log_ratios(lp, mu), dn)
                losses = pgkit.score_function_loss(lp, jax.lax.stop_gradient(w) * pgkit.reward_to_go(r, d, dn))
            return -jnp.sum(losses)

        return jnp.concatenate([jnp.ravel(g) for g in jax.grad(surrogate)(theta)])

    return jax.vmap(estimate, in_axes=(0, 0, 0, 1, 1))(a0, s1, a1, mu, rewards)


@pytest.mark.parametrize(
    "form", ["per_decision", "per_decision_baseline", "per_trajectory", "per_trajectory_whole_baseline"]
)
def test_importance_weighted_gradient_is_unbiased_for_the_target_policy(form):
    """Mean over 20 000 behaviour episodes (fixed key) within 4 standard errors of ∇J(θ) of the
    target policy, in every one of the 9 components; the test has power (∇J is far from 0)."""
    analytic = np.concatenate([np.ravel(g) for g in jax.grad(two_step_value)(TARGET)])
    estimates = two_step_estimates(jax.random.key(0), TARGET, form=form, n=N)
    _, se = assert_within_4_se(estimates, analytic)
    assert np.sum(np.abs(analytic) / se > 8) >= 7, np.abs(analytic) / se


def test_weighting_the_reward_to_go_by_the_ratios_up_to_t_only_is_biased():
    """The same episodes with G_t weighted by Π_{t'≤t} ρ_t' (later actions' ratios left out, as the
    lecture slide transcribes it) miss ∇_{θ_0} J by more than 8 standard errors: the rewards of
    step 1 are those of μ's action, not π's. The per-decision loss does not (test above)."""
    analytic = np.concatenate([np.ravel(g) for g in jax.grad(two_step_value)(TARGET)])
    estimates = np.asarray(two_step_estimates(jax.random.key(0), TARGET, form="lecture", n=N), np.float64)
    se = estimates.std(0, ddof=1) / np.sqrt(N)
    assert np.max(np.abs(estimates.mean(0) - analytic)[:3] / se[:3]) > 8


@pytest.mark.parametrize("form", ["per_decision", "per_trajectory"])
def test_importance_losses_jit_vmap_and_batch_invariance(form):
    data = _off_policy_rollout(48, T=12, batch_shape=(4,))
    keys = ("log_probs", "behaviour_log_probs", "rewards", "discounts", "dones", "next_values", "values")
    args = tuple(jnp.asarray(data[k]) for k in keys)

    def fn(lp, mu, r, d, dn, nv, b):
        if form == "per_decision":
            return pgkit.per_decision_importance_loss(lp, mu, r, d, dn, nv, baselines=b, max_weight=3.0)
        return pgkit.per_trajectory_importance_loss(lp, mu, r - b, dn, max_weight=3.0)

    ref.assert_time_major_invariance(fn, args, stream=1)


def test_importance_losses_do_not_retrace_for_a_new_max_weight():
    data = _off_policy_rollout(49)
    lp, mu, r, d, dn = (jnp.asarray(data[k]) for k in ("log_probs", "behaviour_log_probs", "rewards",
                                                        "discounts", "dones"))
    traces = []

    @jax.jit
    def both(max_weight):
        traces.append(None)
        decision = pgkit.per_decision_importance_loss(lp, mu, r, d, dn, max_weight=max_weight)
        trajectory = pgkit.per_trajectory_importance_loss(lp, mu, r, dn, max_weight=max_weight)
        return decision.losses, trajectory.losses

    first, second = both(jnp.float32(1.5)), both(jnp.float32(2.5))
    assert len(traces) == 1
    assert not np.array_equal(first[0], second[0]) and not np.array_equal(first[1], second[1])


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
    """Bit-identical eager, under jit, and under vmap over a leading axis of independent streams."""
    key_a, key_b = jax.random.split(jax.random.key(10))
    log_probs = -jnp.abs(jax.random.normal(key_a, (4, 3)))  # [T, E]
    weights = jax.random.normal(key_b, (4, 3))
    for fn, args in (
        (pgkit.score_function_loss, (log_probs, weights)),
        (pgkit.pathwise_loss, (weights,)),
        (pgkit.score_function_multiplier, (log_probs,)),
    ):
        direct = fn(*args)
        assert direct.shape == (4, 3)
        jitted = jax.jit(fn)(*args)
        ref.assert_equal_up_to_rounding(jitted, direct, ulps=8)  # XLA may contract to FMAs
        per_stream = tuple(a.T for a in args)  # [E, T]
        np.testing.assert_array_equal(jax.vmap(fn)(*per_stream).T, direct)
        np.testing.assert_array_equal(jax.jit(jax.vmap(fn))(*per_stream).T, jitted)
        np.testing.assert_array_equal(fn(*(a[:, 1] for a in args)), direct[:, 1])


def test_every_public_name_is_covered():
    assert sorted(estimators.__all__) == [
        "ImportanceWeightedLoss",
        "pathwise_loss",
        "per_decision_importance_loss",
        "per_trajectory_importance_loss",
        "reinforce_loss",
        "score_function_loss",
        "score_function_multiplier",
        "short_horizon_pathwise_loss",
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
    with pytest.raises(ValueError, match="behaviour_log_probs"):
        pgkit.per_trajectory_importance_loss(z, jnp.zeros((4, 3)), z, z)
    with pytest.raises(ValueError, match="returns"):
        pgkit.per_trajectory_importance_loss(z, z, jnp.zeros((4, 3)), z)
    with pytest.raises(ValueError, match="dones"):
        pgkit.per_trajectory_importance_loss(z, z, z, jnp.zeros(4))
    with pytest.raises(ValueError, match="max_weight"):
        pgkit.per_trajectory_importance_loss(z, z, z, z, max_weight=jnp.ones(3))
    with pytest.raises(ValueError, match="behaviour_log_probs"):
        pgkit.per_decision_importance_loss(z, jnp.zeros(4), z, z, z)
    with pytest.raises(ValueError, match="discounts"):
        pgkit.per_decision_importance_loss(z, z, z, jnp.zeros((3, 2)), z)
    with pytest.raises(ValueError, match="next_values"):
        pgkit.per_decision_importance_loss(z, z, z, z, z, jnp.zeros((4, 3)))
    with pytest.raises(ValueError, match="baselines"):
        pgkit.per_decision_importance_loss(z, z, z, z, z, baselines=jnp.zeros(4))
    with pytest.raises(ValueError, match="log_probs"):
        pgkit.per_decision_importance_loss(*(jnp.zeros(()),) * 5)


# ----------------------------------------------------------------------------------------------
# short_horizon_pathwise_loss (SHAC's actor loss)
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1])
def test_short_horizon_pathwise_loss_matches_oracle_and_is_time_major_invariant(seed):
    data = ref.random_rollout(seed, T=16, batch_shape=(4,))
    args = tuple(jnp.asarray(data[k]) for k in ("rewards", "discounts", "dones", "next_values"))
    np.testing.assert_allclose(
        pgkit.short_horizon_pathwise_loss(*args), ref.short_horizon_pathwise_loss(*args), rtol=1e-5, atol=1e-6
    )
    ref.assert_time_major_invariance(pgkit.short_horizon_pathwise_loss, args, stream=2)
    # summed over the horizon: minus each segment's discounted return bootstrapped at its end, which
    # pgkit.reward_to_go gives at the segment's first step
    starts = np.asarray(jnp.concatenate([jnp.ones_like(args[2][:1]), args[2][:-1]]).astype(bool))
    returns = np.asarray(pgkit.reward_to_go(*args))
    np.testing.assert_allclose(
        np.asarray(pgkit.short_horizon_pathwise_loss(*args)).sum(0), -(returns * starts).sum(0), rtol=1e-5
    )


def test_short_horizon_pathwise_loss_gradients_flow_into_rewards_and_bootstrap_values_only():
    data = ref.random_rollout(2, T=12, batch_shape=(3,))
    rewards, discounts, dones, next_values = (jnp.asarray(data[k]) for k in ("rewards", "discounts", "dones", "next_values"))
    total = lambda r, d, nv: pgkit.short_horizon_pathwise_loss(r, d, dones, nv).sum()  # noqa: E731
    g_r, g_d, g_nv = jax.grad(total, argnums=(0, 1, 2))(rewards, discounts, next_values)
    expected = ref.short_horizon_pathwise_loss(np.ones_like(data["rewards"]), data["discounts"], data["dones"],
                                               np.zeros_like(data["next_values"]))  # minus the weights w_t
    np.testing.assert_allclose(g_r, expected, rtol=1e-6)
    assert not np.any(np.asarray(g_d))  # discounts are constants of the loss
    ends = np.asarray(data["dones"], bool)
    ends[-1] = True
    np.testing.assert_allclose(g_nv, np.where(ends, expected * data["discounts"], 0.0), rtol=1e-6)


def test_short_horizon_pathwise_gradient_through_a_differentiable_rollout_matches_finite_differences():
    """A linear-tanh policy on Pendulum for 12 steps with a truncation at step 8 (a reset inside the
    horizon) and a quadratic critic bootstrapping each segment: the gradient of the mean loss
    against central differences in each of the policy's 4 parameters."""
    from pgkit import envs, rollout

    env = envs.make("Pendulum-v1", num_envs=3, transition_gradients=True, env_params={"max_steps_in_episode": 8})
    state, obs = env.reset(jax.random.key(0))
    w = jnp.array([-0.3, 0.2, -0.4, 0.1])
    value = lambda o: -(o[:, 0] - 1.0) ** 2 - 0.1 * o[:, 2] ** 2  # noqa: E731

    def loss(w):
        def policy_fn(key, o):
            return jnp.tanh(o @ w[:3, None] + w[3] + 0.3 * jax.random.normal(key, (o.shape[0], 1)))

        _, _, traj = rollout.differentiable_rollout(
            jax.random.key(1), env, state, obs, policy_fn, num_steps=12, gamma=0.95, value_fn=value
        )
        assert traj.truncated.shape == (12, 3)
        return pgkit.short_horizon_pathwise_loss(traj.rewards, traj.discounts, traj.dones, traj.next_values).sum(0).mean() / 12, traj

    (_, traj), grad = jax.jit(jax.value_and_grad(loss, has_aux=True))(w)
    assert bool(traj.truncated[7].all()) and not bool(traj.dones[:7].any())  # one reset, inside the horizon
    eps = 1e-2
    shifts = eps * jnp.concatenate([jnp.eye(4), -jnp.eye(4)])
    values = jax.jit(jax.vmap(lambda dw: loss(w + dw)[0]))(shifts)
    fd = (values[:4] - values[4:]) / (2 * eps)
    np.testing.assert_allclose(grad, fd, rtol=2e-2, atol=2e-4)
    assert np.all(np.abs(np.asarray(grad)) > 1e-3)  # every parameter matters


# The linear-quadratic problem: s_{t+1} = A s_t + B a_t, a_t = θ s_t + σ ε_t, reward −(q s_t² + ρ a_t²),
# terminal value V(s) = −k s², s_0 ~ N(0, 1), horizon H, γ. With m = A + Bθ and P_t = E[s_t²]:
# P_{t+1} = m² P_t + B²σ², E[a_t²] = θ² P_t + σ², so J(θ) = −Σ_t γ^t (q P_t + ρ(θ² P_t + σ²)) − γ^H k P_H,
# and dJ/dθ follows from dP_{t+1} = 2 m B P_t + m² dP_t.
LQ = dict(A=0.9, B=0.5, q=1.0, rho=0.1, k=2.0, sigma=0.5, gamma=0.95, H=8)


def lq_gradient(theta):
    A, B, q, rho, k, sigma, gamma, H = (LQ[n] for n in ("A", "B", "q", "rho", "k", "sigma", "gamma", "H"))
    m, P, dP, dJ = A + B * theta, 1.0, 0.0, 0.0
    for t in range(H):
        dJ -= gamma**t * (q * dP + rho * (2 * theta * P + theta**2 * dP))
        P, dP = m**2 * P + B**2 * sigma**2, 2 * m * B * P + m**2 * dP
    return dJ - gamma**H * k * dP


def test_pathwise_and_score_function_gradients_agree_on_a_linear_quadratic_problem():
    A, B, q, rho, k, sigma, gamma, H = (LQ[n] for n in ("A", "B", "q", "rho", "k", "sigma", "gamma", "H"))
    theta, episodes = -0.6, 8192
    discounts, dones = jnp.full((H,), gamma), jnp.zeros((H,), bool)

    def episode(theta, key, pathwise):
        s0_key, noise_key = jax.random.split(key)
        noise = jax.random.normal(noise_key, (H,))

        def step(s, eps):
            a = theta * s + sigma * eps
            if not pathwise:  # the score function: samples without gradient, the gradient in log π
                s, a = jax.lax.stop_gradient(s), jax.lax.stop_gradient(a)
            log_prob = distrax.Normal(theta * s, sigma).log_prob(a)
            return A * s + B * a, (-(q * s**2 + rho * a**2), log_prob, A * s + B * a)

        _, (rewards, log_probs, next_states) = jax.lax.scan(step, jax.random.normal(s0_key), noise)
        next_values = jnp.zeros((H,)).at[-1].set(-k * next_states[-1] ** 2)
        if pathwise:
            return -pgkit.short_horizon_pathwise_loss(rewards, discounts, dones, next_values).sum()
        returns = pgkit.reward_to_go(rewards, discounts, dones, next_values)
        return -pgkit.score_function_loss(log_probs, returns).sum()

    keys = jax.random.split(jax.random.key(11), episodes)
    per_episode = {
        pathwise: np.asarray(jax.jit(jax.vmap(jax.grad(functools.partial(episode, pathwise=pathwise)), (None, 0)))(
            jnp.float32(theta), keys), np.float64)
        for pathwise in (True, False)
    }
    exact = lq_gradient(theta)
    pw, sf = per_episode[True], per_episode[False]
    assert_within_4_se(pw, exact)
    assert_within_4_se(sf, exact)
    se = np.sqrt(pw.var(ddof=1) / episodes + sf.var(ddof=1) / episodes)
    assert abs(pw.mean() - sf.mean()) <= 4 * se, (pw.mean(), sf.mean(), se)
    # pathwise: a far smaller variance (measured: {pw.var():.3g} against {sf.var():.3g})
    assert pw.var() < 0.25 * sf.var(), (pw.var(), sf.var())


def test_short_horizon_pathwise_loss_bad_input():
    z = jnp.zeros((4, 2))
    with pytest.raises(ValueError, match="next_values"):
        pgkit.short_horizon_pathwise_loss(z, z, z, jnp.zeros((3, 2)))
    with pytest.raises(ValueError, match="dones"):
        pgkit.short_horizon_pathwise_loss(z, z, jnp.zeros(4), z)
