"""pgkit.importance against NumPy loop oracles, identities with pgkit.returns, episode-boundary
semantics, a statistical check of the importance-sampling estimators, invariance, gradients and
input checks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pgkit
import reference as ref

RTOL, ATOL = 1e-5, 1e-5
FIELDS = ("rewards", "discounts", "dones", "values", "next_values", "log_ratios")


class P:
    """Jitted pgkit functions, compiled once per shape and reused across tests (an eager call
    re-traces its scans every time). Eager equivalence is checked in the invariance test."""

    per_trajectory_weights = jax.jit(pgkit.per_trajectory_weights)
    per_decision_weights = jax.jit(pgkit.per_decision_weights)
    truncated_weights = jax.jit(pgkit.truncated_weights, static_argnames="stop_target_gradients")
    self_normalised_weights = jax.jit(pgkit.self_normalised_weights, static_argnames="axis")
    vtrace = jax.jit(pgkit.vtrace, static_argnames="stop_target_gradients")
    lambda_returns = jax.jit(pgkit.lambda_returns, static_argnames="stop_target_gradients")
    reward_to_go = jax.jit(pgkit.reward_to_go, static_argnames="stop_target_gradients")
    episode_returns = jax.jit(pgkit.episode_returns, static_argnames="stop_target_gradients")


def _args(data, *names):
    return tuple(jnp.asarray(data[n]) for n in names)


ROLLOUTS = {
    "independent_T16_B3": dict(seed=20, T=16, batch_shape=(3,), consistent=False),
    "consistent_T12_B2x2": dict(seed=21, T=12, batch_shape=(2, 2), consistent=True),
}


@pytest.fixture(params=list(ROLLOUTS), scope="module")
def rollout(request):
    data = ref.random_rollout(**ROLLOUTS[request.param])
    assert data["terminated"].sum() >= 2 and data["truncated"].sum() >= 2
    return data


# ---------------------------------------------------------------------------------------------
# Oracles.
# ---------------------------------------------------------------------------------------------


def test_log_ratios_matches_oracle():
    rng = np.random.default_rng(0)
    p, q = rng.dirichlet(np.ones(4), size=5), rng.dirichlet(np.ones(4), size=5)
    lp, lq = np.log(p).astype(np.float32), np.log(q).astype(np.float32)
    got = pgkit.log_ratios(lp, lq)
    np.testing.assert_allclose(got, ref.log_ratios(lp, lq), rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(jnp.exp(got), p / q, rtol=1e-4)
    np.testing.assert_array_equal(pgkit.log_ratios(lp, lp), 0.0)


def test_per_trajectory_weights_matches_oracle(rollout):
    lr, dn = _args(rollout, "log_ratios", "dones")
    got = P.per_trajectory_weights(lr, dn)
    np.testing.assert_allclose(got, ref.per_trajectory_weights(lr, dn), rtol=RTOL, atol=ATOL)


def test_per_decision_weights_matches_oracle(rollout):
    lr, dn = _args(rollout, "log_ratios", "dones")
    got = P.per_decision_weights(lr, dn)
    np.testing.assert_allclose(got, ref.per_decision_weights(lr, dn), rtol=RTOL, atol=ATOL)


def test_truncated_weights_matches_oracle(rollout):
    (lr,) = _args(rollout, "log_ratios")
    for max_weight in (1.2, np.linspace(0.5, 2.0, lr.shape[-1]).astype(np.float32)):
        np.testing.assert_allclose(
            P.truncated_weights(lr, max_weight=max_weight),
            ref.truncated_weights(lr, max_weight),
            rtol=RTOL,
            atol=ATOL,
        )
    np.testing.assert_allclose(P.truncated_weights(lr, max_weight=jnp.inf), jnp.exp(lr), rtol=1e-6)


def test_self_normalised_weights_matches_oracle():
    w = np.random.default_rng(1).exponential(size=(6, 4)).astype(np.float32)
    for axis in (0, 1, -1):
        got = P.self_normalised_weights(w, axis=axis)
        np.testing.assert_allclose(got, ref.self_normalised_weights(w, axis), rtol=RTOL, atol=ATOL)
        np.testing.assert_allclose(jnp.sum(got, axis=axis), 1.0, rtol=1e-6)


VTRACE_SETTINGS = [
    dict(lambda_=1.0, clip_rho=1.0, clip_c=1.0),
    dict(lambda_=0.8, clip_rho=1.5, clip_c=0.7),
    dict(lambda_=0.9, clip_rho=jnp.inf, clip_c=jnp.inf),
]


def test_vtrace_matches_oracle(rollout):
    args = _args(rollout, *FIELDS)
    per_step_lambda = np.random.default_rng(2).uniform(size=rollout["rewards"].shape)
    settings = VTRACE_SETTINGS + [dict(lambda_=per_step_lambda.astype(np.float32), clip_rho=1.2, clip_c=0.9)]
    for kw in settings:
        out = P.vtrace(*args, **kw)
        assert isinstance(out, pgkit.VTrace)
        targets, pg_advantages = ref.vtrace(*args, **kw)
        np.testing.assert_allclose(out.targets, targets, rtol=RTOL, atol=ATOL, err_msg=str(kw))
        np.testing.assert_allclose(out.pg_advantages, pg_advantages, rtol=RTOL, atol=ATOL, err_msg=str(kw))


def test_vtrace_is_impala_eq1_when_values_are_consistent():
    data = ref.random_rollout(22, consistent=True)
    args = _args(data, *FIELDS)
    for kw in VTRACE_SETTINGS:
        np.testing.assert_allclose(
            P.vtrace(*args, **kw).targets, ref.vtrace_paper(*args, **kw), rtol=RTOL, atol=ATOL
        )


# ---------------------------------------------------------------------------------------------
# Identities.
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("clip", [1.0, 2.0])
def test_on_policy_vtrace_is_lambda_returns(clip):
    data = ref.random_rollout(23, consistent=False)
    r, d, dn, v, nv, lr = _args(data, *FIELDS)
    on_policy = jnp.zeros_like(lr)
    for lam in (0.0, 0.6, 1.0):
        out = P.vtrace(r, d, dn, v, nv, on_policy, lambda_=lam, clip_rho=clip, clip_c=clip)
        expected = P.lambda_returns(r, d, dn, nv, lambda_=lam)
        np.testing.assert_allclose(out.targets, expected, rtol=RTOL, atol=ATOL)
    # λ = 1: the policy-gradient advantage is the Monte-Carlo return minus the baseline.
    out = P.vtrace(r, d, dn, v, nv, on_policy, lambda_=1.0, clip_rho=clip, clip_c=clip)
    np.testing.assert_allclose(out.pg_advantages, P.reward_to_go(r, d, dn, nv) - v, rtol=RTOL, atol=ATOL)
    # Off-policy it differs (the test can fail).
    off = P.vtrace(r, d, dn, v, nv, lr, lambda_=1.0, clip_rho=clip, clip_c=clip)
    assert not np.allclose(off.targets, P.lambda_returns(r, d, dn, nv, lambda_=1.0), atol=1e-3)


def test_whole_episode_weight_is_the_last_per_decision_weight():
    data = ref.random_rollout(24)
    lr, dn = _args(data, "log_ratios", "dones")
    whole = np.asarray(P.per_trajectory_weights(lr, dn))
    per_decision = np.asarray(P.per_decision_weights(lr, dn))
    ends = data["dones"].astype(bool)
    ends[-1] = True
    np.testing.assert_allclose(whole[ends], per_decision[ends], rtol=RTOL)
    assert not np.allclose(whole, per_decision)
    np.testing.assert_array_equal(P.per_trajectory_weights(jnp.zeros_like(lr), dn), 1.0)


SPLIT_FUNCTIONS = {
    "vtrace": lambda r, d, dn, v, nv, lr: P.vtrace(r, d, dn, v, nv, lr, lambda_=0.9, clip_rho=1.2, clip_c=0.8),
    "per_decision_weights": lambda r, d, dn, v, nv, lr: P.per_decision_weights(lr, dn),
    "per_trajectory_weights": lambda r, d, dn, v, nv, lr: P.per_trajectory_weights(lr, dn),
}


@pytest.mark.parametrize("kind", ["terminated", "truncated"])
@pytest.mark.parametrize("name", list(SPLIT_FUNCTIONS))
def test_split_at_done_equals_two_rollouts(name, kind):
    rng = np.random.default_rng(25)
    T, k = 10, 4
    r, v, nv, lr = (rng.normal(size=T).astype(np.float32) for _ in range(4))
    d = np.full(T, 0.9, np.float32)
    dn = np.zeros(T, np.float32)
    dn[k] = 1.0
    if kind == "terminated":
        d[k] = 0.0
    f = SPLIT_FUNCTIONS[name]
    whole = f(r, d, dn, v, nv, lr)
    parts = [
        f(*(a[sl] for a in (r, d, dn, v, nv, lr))) for sl in (slice(0, k + 1), slice(k + 1, T))
    ]
    joined = jax.tree_util.tree_map(lambda a, b: jnp.concatenate([a, b]), *parts)
    ref.assert_trees_close(whole, joined, RTOL)
    no_cut = f(r, np.full(T, 0.9, np.float32), np.zeros(T, np.float32), v, nv, lr)
    assert not np.allclose(jax.tree_util.tree_leaves(no_cut)[0], jax.tree_util.tree_leaves(whole)[0])


def test_vtrace_truncation_bootstraps_to_the_true_value():
    gamma, T, every = 0.9, 10, 3
    true_value = 1.0 / (1.0 - gamma)
    r = jnp.ones(T)
    dn = jnp.zeros(T).at[every - 1 :: every].set(1.0)
    v = nv = jnp.full(T, true_value)
    lr = jnp.asarray(np.random.default_rng(26).normal(size=T), jnp.float32)  # off-policy
    out = P.vtrace(r, jnp.full(T, gamma), dn, v, nv, lr, lambda_=0.9, clip_rho=1.0, clip_c=1.0)
    np.testing.assert_allclose(out.targets, true_value, rtol=1e-5)
    np.testing.assert_allclose(out.pg_advantages, 0.0, atol=1e-5)
    wrong = P.vtrace(r, jnp.where(dn > 0, 0.0, gamma), dn, v, nv, lr, lambda_=0.9, clip_rho=1.0, clip_c=1.0)
    assert np.max(np.abs(np.asarray(wrong.targets) - true_value)) > 1.0


# ---------------------------------------------------------------------------------------------
# Statistics: importance-weighted estimates of E_π[R] from trajectories of μ.
# ---------------------------------------------------------------------------------------------


STEPS, EPISODES, STREAMS, GAMMA = 3, 8, 512, 0.9
REWARD_TABLE = jnp.array([[1.0, 0.0, 2.0], [0.0, 3.0, 1.0], [2.0, 1.0, 0.0]])  # mean r[step, action]
TARGET_LOGITS = 2.0 * jnp.eye(3)[::-1]  # π prefers actions 2, 1, 0 at steps 0, 1, 2
BEHAVIOUR_LOGITS = jnp.array([[0.5, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.5, 0.0]])


@jax.jit
def _bandit_sequences(key):
    """EPISODES back-to-back 3-step episodes per stream, actions drawn from μ; [T, STREAMS]."""
    T = STEPS * EPISODES
    step_index = jnp.arange(T) % STEPS
    key_actions, key_noise = jax.random.split(key)
    behaviour = jnp.broadcast_to(BEHAVIOUR_LOGITS[step_index][:, None, :], (T, STREAMS, 3))
    actions = jax.random.categorical(key_actions, behaviour)
    rewards = REWARD_TABLE[step_index[:, None], actions] + 0.5 * jax.random.normal(key_noise, (T, STREAMS))

    def log_prob(logits):
        table = jax.nn.log_softmax(logits)[step_index]  # [T, 3]
        return jnp.take_along_axis(table[:, None, :], actions[..., None], axis=-1)[..., 0]

    last = jnp.broadcast_to((step_index == STEPS - 1)[:, None], (T, STREAMS)).astype(jnp.float32)
    discounts = GAMMA * (1.0 - last)  # each episode terminates after its third step
    lr = pgkit.log_ratios(log_prob(TARGET_LOGITS), log_prob(BEHAVIOUR_LOGITS))
    return dict(
        returns=pgkit.episode_returns(rewards, discounts, last),
        whole=pgkit.per_trajectory_weights(lr, last),
        per_decision=pgkit.per_decision_weights(lr, last) * rewards * GAMMA ** step_index[:, None],
    )


def test_importance_weighted_returns_are_unbiased():
    pi = jax.nn.softmax(TARGET_LOGITS)
    exact = float(sum(GAMMA**t * jnp.dot(pi[t], REWARD_TABLE[t]) for t in range(STEPS)))
    out = {k: np.asarray(v, np.float64) for k, v in _bandit_sequences(jax.random.PRNGKey(0)).items()}
    starts = np.arange(STEPS * EPISODES) % STEPS == 0
    returns, whole = out["returns"][starts].ravel(), out["whole"][starts].ravel()

    def check(samples, label):
        mean, se = samples.mean(), samples.std(ddof=1) / np.sqrt(samples.size)
        assert abs(mean - exact) < 4 * se, f"{label}: {mean:.4f} vs exact {exact:.4f} (se {se:.4f})"

    check(whole * returns, "per-trajectory")
    # Per-decision: Σ_t γ^t w_{0:t} r_t, one sample per episode.
    check(out["per_decision"].reshape(EPISODES, STEPS, STREAMS).sum(1).ravel(), "per-decision")
    # Self-normalised (consistent; delta-method standard error).
    normalised = np.asarray(P.self_normalised_weights(jnp.asarray(whole), axis=0), np.float64)
    estimate = float(np.sum(normalised * returns))
    se = float(np.sqrt(np.sum(normalised**2 * (returns - estimate) ** 2)))
    assert abs(estimate - exact) < 4 * se, (estimate, exact, se)
    # Power: the unweighted behaviour-policy mean is far from E_π[R].
    mean, se = returns.mean(), returns.std(ddof=1) / np.sqrt(returns.size)
    assert abs(mean - exact) > 10 * se, (mean, exact, se)


# ---------------------------------------------------------------------------------------------
# jit / no-jit / vmap / direct [T, E] invariance, no retrace for new float hyperparameters.
# ---------------------------------------------------------------------------------------------


INVARIANCE_FUNCTIONS = {
    "vtrace": lambda r, d, dn, v, nv, lr: pgkit.vtrace(
        r, d, dn, v, nv, lr, lambda_=0.9, clip_rho=1.2, clip_c=0.8
    ),
    "per_trajectory_weights": lambda r, d, dn, v, nv, lr: pgkit.per_trajectory_weights(lr, dn),
    "per_decision_weights": lambda r, d, dn, v, nv, lr: pgkit.per_decision_weights(lr, dn),
    "truncated_weights": lambda r, d, dn, v, nv, lr: pgkit.truncated_weights(lr, max_weight=1.1),
    "log_ratios": lambda r, d, dn, v, nv, lr: pgkit.log_ratios(-jnp.abs(v), -jnp.abs(nv)),
    # Normalised over axis 0, the steps of each stream, in a [T] call as in a [T, E] one.
    "self_normalised_weights": lambda r, d, dn, v, nv, lr: pgkit.self_normalised_weights(jnp.exp(lr)),
}


@pytest.mark.parametrize("name", list(INVARIANCE_FUNCTIONS))
def test_jit_vmap_and_batch_invariance(name):
    f = INVARIANCE_FUNCTIONS[name]
    args = _args(ref.random_rollout(27, T=12, batch_shape=(4,)), *FIELDS)  # [T, E]
    ref.assert_time_major_invariance(f, args, stream=2)


def test_no_retrace_when_float_hyperparameters_change():
    traces = []

    @jax.jit
    def run(r, d, dn, v, nv, lr, lam, rho, c):
        traces.append(None)  # Python side effect: runs once per trace
        out = pgkit.vtrace(r, d, dn, v, nv, lr, lambda_=lam, clip_rho=rho, clip_c=c)
        return out, pgkit.truncated_weights(lr, max_weight=rho)

    args = _args(ref.random_rollout(28), *FIELDS)
    f32 = jnp.float32
    first = run(*args, f32(1.0), f32(1.0), f32(1.0))
    second = run(*args, f32(0.7), f32(1.5), f32(0.5))
    assert len(traces) == 1
    assert not np.allclose(first[0].targets, second[0].targets)
    expected = P.vtrace(*args, lambda_=0.7, clip_rho=1.5, clip_c=0.5)
    np.testing.assert_array_equal(second[0].targets, expected.targets)
    np.testing.assert_array_equal(second[1], jnp.minimum(jnp.exp(args[-1]), 1.5))


# ---------------------------------------------------------------------------------------------
# Gradients.
# ---------------------------------------------------------------------------------------------


def _weighted_sum(out, weights):
    return sum(jnp.sum(w * o) for w, o in zip(weights, jax.tree_util.tree_leaves(out)))


def test_no_gradient_into_vtrace_or_truncated_weights():
    data = ref.random_rollout(29, T=8, batch_shape=(2,))
    r, d, dn, v, nv, lr = _args(data, *FIELDS)
    w = jnp.asarray(np.random.default_rng(3).normal(size=r.shape), jnp.float32)

    def loss(r, d, v, nv, lr, lam, stop):
        out = pgkit.vtrace(
            r, d, dn, v, nv, lr, lambda_=lam, clip_rho=1.2, clip_c=0.9, stop_target_gradients=stop
        )
        truncated = pgkit.truncated_weights(lr, max_weight=1.1, stop_target_gradients=stop)
        return _weighted_sum((out, truncated), [w, w, w])

    grad = jax.jit(jax.grad(loss, argnums=tuple(range(6))), static_argnums=6)
    for g in grad(r, d, v, nv, lr, jnp.float32(0.9), True):
        np.testing.assert_array_equal(g, 0.0)
    opened = grad(r, d, v, nv, lr, jnp.float32(0.9), False)
    assert all(np.abs(np.asarray(g)).max() > 1e-3 for g in opened)

    def policy_loss(log_pi):  # the IMPALA policy loss with stop-gradient'ed advantages
        lr_ = log_pi - data["log_ratios"]  # behaviour log-probs chosen so that lr_ == log_ratios
        adv = pgkit.vtrace(r, d, dn, v, nv, lr_, lambda_=1.0).pg_advantages
        return -jnp.sum(adv * log_pi)

    log_pi = jnp.asarray(data["log_ratios"]) * 2.0
    expected = -P.vtrace(r, d, dn, v, nv, log_pi - data["log_ratios"], lambda_=1.0).pg_advantages
    np.testing.assert_allclose(jax.grad(policy_loss)(log_pi), expected, rtol=1e-6)


# Each takes (rewards, discounts, values, next_values, log_ratios, lambda_, dones).
FD_FUNCTIONS = {
    "vtrace": lambda r, d, v, nv, lr, lam, dn: pgkit.vtrace(
        r, d, dn, v, nv, lr, lambda_=lam, clip_rho=1.2, clip_c=0.9, stop_target_gradients=False
    ),
    "per_trajectory_weights": lambda r, d, v, nv, lr, lam, dn: pgkit.per_trajectory_weights(lr, dn),
    "per_decision_weights": lambda r, d, v, nv, lr, lam, dn: pgkit.per_decision_weights(lr, dn),
    "truncated_weights": lambda r, d, v, nv, lr, lam, dn: pgkit.truncated_weights(
        lr, max_weight=1.2, stop_target_gradients=False
    ),
    "self_normalised_weights": lambda r, d, v, nv, lr, lam, dn: pgkit.self_normalised_weights(
        jnp.exp(lr), axis=1
    ),
    "log_ratios": lambda r, d, v, nv, lr, lam, dn: pgkit.log_ratios(lr * lr, r),
}


@pytest.mark.parametrize("name", list(FD_FUNCTIONS))
def test_gradients_match_finite_differences(name):
    f = FD_FUNCTIONS[name]
    with jax.enable_x64(True):
        data = ref.random_rollout(30, T=8, batch_shape=(2,))
        r, d, dn, v, nv, lr = (jnp.asarray(data[k], jnp.float64) for k in FIELDS)
        rng = np.random.default_rng(4)
        weights = [jnp.asarray(rng.normal(size=r.shape))] * 2

        @jax.jit
        def loss(r, d, v, nv, lr, lam):
            return _weighted_sum(f(r, d, v, nv, lr, lam, dn), weights)

        primals = (r, d, v, nv, lr, jnp.float64(0.8))
        grads = jax.jit(jax.grad(loss, argnums=tuple(range(6))))(*primals)
        assert np.abs(np.asarray(grads[4])).max() > 1e-3  # gradient reaches log_ratios
        for i, (x, g) in enumerate(zip(primals, grads)):
            direction = jnp.asarray(rng.normal(size=jnp.shape(x)))
            eps = 1e-6
            plus, minus = list(primals), list(primals)
            plus[i], minus[i] = x + eps * direction, x - eps * direction
            numeric = (loss(*plus) - loss(*minus)) / (2 * eps)
            analytic = jnp.sum(g * direction)
            np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-8, err_msg=f"argument {i}")


# ---------------------------------------------------------------------------------------------
# Bad input.
# ---------------------------------------------------------------------------------------------


def _bad_calls():
    good = jnp.zeros((5, 2))
    bad = jnp.zeros((5, 3))
    return [
        ("behaviour_log_probs", lambda: pgkit.log_ratios(good, bad)),
        ("dones", lambda: pgkit.per_trajectory_weights(good, bad)),
        ("dones", lambda: pgkit.per_decision_weights(good, bad)),
        ("log_ratios", lambda: pgkit.per_decision_weights(jnp.float32(0.0), jnp.float32(0.0))),
        ("max_weight", lambda: pgkit.truncated_weights(good, max_weight=jnp.ones(3))),
        ("axis", lambda: pgkit.self_normalised_weights(good, axis=2)),
        ("log_ratios", lambda: pgkit.vtrace(good, good, good, good, good, bad)),
        ("next_values", lambda: pgkit.vtrace(good, good, good, good, bad, good)),
        ("clip_rho", lambda: pgkit.vtrace(good, good, good, good, good, good, clip_rho=jnp.ones(3))),
        ("lambda_", lambda: pgkit.vtrace(good, good, good, good, good, good, lambda_=jnp.ones((4, 2)))),
    ]


@pytest.mark.parametrize("index", range(len(_bad_calls())))
def test_bad_input_raises_value_error_naming_the_argument(index):
    name, call = _bad_calls()[index]
    with pytest.raises(ValueError, match=rf"\b{name}\b"):
        call()
