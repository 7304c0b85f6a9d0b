"""pgkit.returns against NumPy loop oracles, identities between functions, episode-boundary
semantics, jit/vmap/batch invariance, gradients and input checks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pgkit
import reference as ref

RTOL, ATOL = 1e-5, 1e-5
FIELDS = ("rewards", "discounts", "dones", "values", "next_values")


class P:
    """Jitted pgkit functions, compiled once per shape and reused across tests (an eager call
    re-traces its scan every time). Eager equivalence is checked in the invariance test."""

    reward_to_go = jax.jit(pgkit.reward_to_go, static_argnames="stop_target_gradients")
    episode_returns = jax.jit(pgkit.episode_returns, static_argnames="stop_target_gradients")
    td_errors = jax.jit(pgkit.td_errors, static_argnames="stop_target_gradients")
    n_step_returns = jax.jit(pgkit.n_step_returns, static_argnames=("n", "stop_target_gradients"))
    lambda_returns = jax.jit(pgkit.lambda_returns, static_argnames="stop_target_gradients")
    gae = jax.jit(pgkit.gae, static_argnames="stop_target_gradients")


def _args(data, *names):
    return tuple(jnp.asarray(data[n]) for n in names)


# Two rollouts: one with independent next_values (catches any use of values[t+1] in place of
# next_values[t]), one consistent (next_values[t] == values[t+1] on continuing steps), with two
# batch dims. Both have several terminations and truncations per stream.
ROLLOUTS = {
    "independent_T16_B3": dict(seed=0, T=16, batch_shape=(3,), consistent=False),
    "consistent_T12_B2x2": dict(seed=1, T=12, batch_shape=(2, 2), consistent=True),
}


@pytest.fixture(params=list(ROLLOUTS), scope="module")
def rollout(request):
    data = ref.random_rollout(**ROLLOUTS[request.param])
    assert data["terminated"].sum() >= 2 and data["truncated"].sum() >= 2
    return data


# ---------------------------------------------------------------------------------------------
# Oracles.
# ---------------------------------------------------------------------------------------------


def test_reward_to_go_matches_oracle(rollout):
    r, d, dn, nv = _args(rollout, "rewards", "discounts", "dones", "next_values")
    np.testing.assert_allclose(
        P.reward_to_go(r, d, dn, nv), ref.reward_to_go(r, d, dn, nv), rtol=RTOL, atol=ATOL
    )
    np.testing.assert_allclose(
        P.reward_to_go(r, d, dn), ref.reward_to_go(r, d, dn), rtol=RTOL, atol=ATOL
    )


def test_episode_returns_matches_oracle(rollout):
    r, d, dn = _args(rollout, "rewards", "discounts", "dones")
    got = P.episode_returns(r, d, dn)
    np.testing.assert_allclose(got, ref.episode_returns(r, d, dn), rtol=RTOL, atol=ATOL)


def test_td_errors_matches_oracle(rollout):
    r, d, v, nv = _args(rollout, "rewards", "discounts", "values", "next_values")
    np.testing.assert_allclose(
        P.td_errors(r, d, v, nv), ref.td_errors(r, d, v, nv), rtol=RTOL, atol=ATOL
    )


@pytest.mark.parametrize("n", [1, 3, 40])
def test_n_step_returns_matches_oracle(rollout, n):
    r, d, dn, nv = _args(rollout, "rewards", "discounts", "dones", "next_values")
    np.testing.assert_allclose(
        P.n_step_returns(r, d, dn, nv, n=n),
        ref.n_step_returns(r, d, dn, nv, n),
        rtol=RTOL,
        atol=ATOL,
    )


def _lambdas(data):
    """A scalar λ and a per-step λ array of shape [T, *B]."""
    per_step = np.random.default_rng(7).uniform(0.0, 1.0, size=data["rewards"].shape)
    return [0.8, per_step.astype(np.float32)]


def test_lambda_returns_matches_oracle(rollout):
    r, d, dn, nv = _args(rollout, "rewards", "discounts", "dones", "next_values")
    for lam in _lambdas(rollout):
        np.testing.assert_allclose(
            P.lambda_returns(r, d, dn, nv, lambda_=lam),
            ref.lambda_returns(r, d, dn, nv, lam),
            rtol=RTOL,
            atol=ATOL,
        )


def test_gae_matches_oracle(rollout):
    r, d, dn, v, nv = _args(rollout, *FIELDS)
    for lam in _lambdas(rollout):
        out = P.gae(r, d, dn, v, nv, lambda_=lam)
        assert isinstance(out, pgkit.GAE)
        advantages, targets = ref.gae(r, d, dn, v, nv, lam)
        np.testing.assert_allclose(out.advantages, advantages, rtol=RTOL, atol=ATOL)
        np.testing.assert_allclose(out.targets, targets, rtol=RTOL, atol=ATOL)


def test_hand_made_boundaries():
    # Stream: r = 1 everywhere, γ = 0.5. Step 1 terminates, step 3 is truncated (V(final) = 4),
    # step 4 is the rollout's last step (V(next) = 2).
    r = jnp.ones(5)
    d = jnp.array([0.5, 0.0, 0.5, 0.5, 0.5])
    dn = jnp.array([0, 1, 0, 1, 0])
    nv = jnp.array([9.0, 9.0, 9.0, 4.0, 2.0])  # 9 = garbage on continuing/terminated steps
    np.testing.assert_allclose(P.reward_to_go(r, d, dn, nv), [1.5, 1.0, 2.5, 3.0, 2.0])
    np.testing.assert_allclose(P.reward_to_go(r, d, dn), [1.5, 1.0, 1.5, 1.0, 1.0])
    np.testing.assert_allclose(P.episode_returns(r, d, dn), [1.5, 1.5, 1.5, 1.5, 1.0])
    np.testing.assert_allclose(P.lambda_returns(r, d, dn, nv, lambda_=1.0), [1.5, 1.0, 2.5, 3.0, 2.0])
    np.testing.assert_allclose(P.n_step_returns(r, d, dn, nv, n=1), [5.5, 1.0, 5.5, 3.0, 2.0])


# ---------------------------------------------------------------------------------------------
# Identities.
# ---------------------------------------------------------------------------------------------


def test_gae_lambda_one_is_reward_to_go_minus_values():
    data = ref.random_rollout(2, consistent=True)
    r, d, dn, v, nv = _args(data, *FIELDS)
    out = P.gae(r, d, dn, v, nv, lambda_=1.0)
    np.testing.assert_allclose(out.advantages, P.reward_to_go(r, d, dn, nv) - v, rtol=RTOL, atol=ATOL)


def test_gae_targets_are_lambda_returns_when_values_are_consistent():
    data = ref.random_rollout(3, consistent=True)
    r, d, dn, v, nv = _args(data, *FIELDS)
    out = P.gae(r, d, dn, v, nv, lambda_=0.7)
    lam = P.lambda_returns(r, d, dn, nv, lambda_=0.7)
    np.testing.assert_allclose(out.targets, lam, rtol=RTOL, atol=ATOL)


def test_lambda_extremes():
    data = ref.random_rollout(4, consistent=False)
    r, d, dn, nv = _args(data, "rewards", "discounts", "dones", "next_values")
    td_targets = r + d * nv
    np.testing.assert_allclose(P.lambda_returns(r, d, dn, nv, lambda_=0.0), td_targets, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(P.n_step_returns(r, d, dn, nv, n=1), td_targets, rtol=RTOL, atol=ATOL)
    monte_carlo = P.reward_to_go(r, d, dn, nv)
    np.testing.assert_allclose(P.lambda_returns(r, d, dn, nv, lambda_=1.0), monte_carlo, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(P.n_step_returns(r, d, dn, nv, n=16), monte_carlo, rtol=RTOL, atol=ATOL)


def test_td_errors_are_gae_at_lambda_zero():
    data = ref.random_rollout(5, consistent=False)
    r, d, dn, v, nv = _args(data, *FIELDS)
    np.testing.assert_allclose(
        P.gae(r, d, dn, v, nv, lambda_=0.0).advantages, P.td_errors(r, d, v, nv), rtol=RTOL, atol=ATOL
    )


def test_episode_returns_is_reward_to_go_at_episode_start():
    data = ref.random_rollout(6)
    r, d, dn = _args(data, "rewards", "discounts", "dones")
    whole = np.asarray(P.episode_returns(r, d, dn))
    to_go = np.asarray(P.reward_to_go(r, d, dn))
    starts = np.concatenate([np.ones_like(data["dones"][:1]), data["dones"][:-1]]).astype(bool)
    np.testing.assert_allclose(whole[starts], to_go[starts], rtol=RTOL, atol=ATOL)
    assert not np.allclose(whole, to_go)  # other steps see only part of their episode


def test_bool_and_float_dones_agree():
    data = ref.random_rollout(8)
    r, d, dn, v, nv = _args(data, *FIELDS)
    as_bool = dn.astype(bool)
    for f in (
        lambda x: P.gae(r, d, x, v, nv, lambda_=0.9).advantages,
        lambda x: P.lambda_returns(r, d, x, nv, lambda_=0.9),
        lambda x: P.n_step_returns(r, d, x, nv, n=3),
        lambda x: P.episode_returns(r, d, x),
    ):
        np.testing.assert_array_equal(f(dn), f(as_bool))


SPLIT_FUNCTIONS = {
    "gae": lambda r, d, dn, v, nv: P.gae(r, d, dn, v, nv, lambda_=0.9),
    "lambda_returns": lambda r, d, dn, v, nv: P.lambda_returns(r, d, dn, nv, lambda_=0.9),
    "n_step_returns": lambda r, d, dn, v, nv: P.n_step_returns(r, d, dn, nv, n=4),
    "reward_to_go": lambda r, d, dn, v, nv: P.reward_to_go(r, d, dn, nv),
    "episode_returns": lambda r, d, dn, v, nv: P.episode_returns(r, d, dn),
}


@pytest.mark.parametrize("kind", ["terminated", "truncated"])
@pytest.mark.parametrize("name", list(SPLIT_FUNCTIONS))
def test_split_at_done_equals_two_rollouts(name, kind):
    rng = np.random.default_rng(11)
    T, k = 10, 4
    r, v, nv = (rng.normal(size=T).astype(np.float32) for _ in range(3))
    d = np.full(T, 0.9, np.float32)
    dn = np.zeros(T, np.float32)
    dn[k] = 1.0
    if kind == "terminated":
        d[k] = 0.0
    f = SPLIT_FUNCTIONS[name]
    whole = f(r, d, dn, v, nv)
    first = f(r[: k + 1], d[: k + 1], dn[: k + 1], v[: k + 1], nv[: k + 1])
    second = f(r[k + 1 :], d[k + 1 :], dn[k + 1 :], v[k + 1 :], nv[k + 1 :])
    joined = jax.tree_util.tree_map(lambda a, b: jnp.concatenate([a, b]), first, second)
    ref.assert_trees_close(whole, joined, RTOL)
    # And the done really cuts: without it the first part would see the second.
    no_cut = f(r, np.full(T, 0.9, np.float32), np.zeros(T, np.float32), v, nv)
    assert not np.allclose(jax.tree_util.tree_leaves(no_cut)[0], jax.tree_util.tree_leaves(whole)[0])


# ---------------------------------------------------------------------------------------------
# Truncation is not termination.
# ---------------------------------------------------------------------------------------------


def test_truncation_bootstraps_to_the_true_value():
    gamma, T, every = 0.9, 10, 3
    true_value = 1.0 / (1.0 - gamma)
    r = jnp.ones(T)
    dn = jnp.zeros(T).at[every - 1 :: every].set(1.0)
    v = nv = jnp.full(T, true_value)
    truncated = jnp.full(T, gamma)  # truncation keeps the discount
    for lam in (0.0, 0.9, 1.0):
        lam_returns = P.lambda_returns(r, truncated, dn, nv, lambda_=lam)
        gae_out = P.gae(r, truncated, dn, v, nv, lambda_=lam)
        np.testing.assert_allclose(lam_returns, true_value, rtol=1e-5)
        np.testing.assert_allclose(gae_out.targets, true_value, rtol=1e-5)
        np.testing.assert_allclose(gae_out.advantages, 0.0, atol=1e-5)
    np.testing.assert_allclose(P.n_step_returns(r, truncated, dn, nv, n=3), true_value, rtol=1e-5)
    np.testing.assert_allclose(P.reward_to_go(r, truncated, dn, nv), true_value, rtol=1e-5)
    # Treating truncation as termination (discount 0 at the cut) is biased.
    terminated = jnp.where(dn > 0, 0.0, gamma)
    wrong = P.lambda_returns(r, terminated, dn, nv, lambda_=0.95)
    wrong_gae = P.gae(r, terminated, dn, v, nv, lambda_=0.95)
    assert np.all(np.abs(np.asarray(wrong)[every - 1 :: every] - true_value) > 1.0)
    assert np.max(np.abs(np.asarray(wrong_gae.targets) - true_value)) > 1.0


# ---------------------------------------------------------------------------------------------
# jit / no-jit / vmap / direct [T, E] invariance, and no retrace for new float hyperparameters.
# ---------------------------------------------------------------------------------------------


INVARIANCE_FUNCTIONS = {
    "reward_to_go": lambda r, d, dn, v, nv: pgkit.reward_to_go(r, d, dn, nv),
    "episode_returns": lambda r, d, dn, v, nv: pgkit.episode_returns(r, d, dn),
    "td_errors": lambda r, d, dn, v, nv: pgkit.td_errors(r, d, v, nv),
    "n_step_returns": lambda r, d, dn, v, nv: pgkit.n_step_returns(r, d, dn, nv, n=3),
    "lambda_returns": lambda r, d, dn, v, nv: pgkit.lambda_returns(r, d, dn, nv, lambda_=0.9),
    "gae": lambda r, d, dn, v, nv: pgkit.gae(r, d, dn, v, nv, lambda_=0.9),
}


@pytest.mark.parametrize("name", list(INVARIANCE_FUNCTIONS))
def test_jit_vmap_and_batch_invariance(name):
    f = INVARIANCE_FUNCTIONS[name]
    data = ref.random_rollout(9, T=12, batch_shape=(4,))
    args = _args(data, *FIELDS)  # [T, E]
    ref.assert_time_major_invariance(f, args, stream=1)


def test_no_retrace_when_lambda_changes():
    traces = []

    @jax.jit
    def both(r, d, dn, v, nv, lam):
        traces.append(None)  # Python side effect: runs once per trace
        return pgkit.lambda_returns(r, d, dn, nv, lambda_=lam), pgkit.gae(r, d, dn, v, nv, lambda_=lam)

    args = _args(ref.random_rollout(10), *FIELDS)
    first = both(*args, jnp.float32(0.9))
    second = both(*args, jnp.float32(0.5))
    third = both(*args, jnp.float32(0.3))
    assert len(traces) == 1
    assert not np.allclose(first[0], second[0])
    expected = P.lambda_returns(*args[:3], args[4], lambda_=0.5)
    np.testing.assert_array_equal(second[0], expected)
    expected = P.gae(*args, lambda_=0.3).advantages
    np.testing.assert_array_equal(third[1].advantages, expected)


# ---------------------------------------------------------------------------------------------
# Gradients.
# ---------------------------------------------------------------------------------------------


# Each takes (rewards, discounts, values, next_values, lambda_, dones, stop_target_gradients).
GRAD_FUNCTIONS = {
    "reward_to_go": lambda r, d, v, nv, lam, dn, stop: P.reward_to_go(
        r, d, dn, nv, stop_target_gradients=stop
    ),
    "episode_returns": lambda r, d, v, nv, lam, dn, stop: P.episode_returns(
        r, d, dn, stop_target_gradients=stop
    ),
    "n_step_returns": lambda r, d, v, nv, lam, dn, stop: P.n_step_returns(
        r, d, dn, nv, n=3, stop_target_gradients=stop
    ),
    "lambda_returns": lambda r, d, v, nv, lam, dn, stop: P.lambda_returns(
        r, d, dn, nv, lambda_=lam, stop_target_gradients=stop
    ),
    "gae": lambda r, d, v, nv, lam, dn, stop: P.gae(
        r, d, dn, v, nv, lambda_=lam, stop_target_gradients=stop
    ),
}


def _weighted_sum(out, weights):
    return sum(jnp.sum(w * o) for w, o in zip(weights, jax.tree_util.tree_leaves(out)))


@pytest.mark.parametrize("name", list(GRAD_FUNCTIONS))
def test_no_gradient_into_targets(name):
    f = GRAD_FUNCTIONS[name]
    data = ref.random_rollout(12, T=8, batch_shape=(2,))
    r, d, dn, v, nv = _args(data, *FIELDS)
    weights = [jnp.asarray(np.random.default_rng(1).normal(size=r.shape), jnp.float32)] * 2

    def loss(r, d, v, nv, lam, stop):
        return _weighted_sum(f(r, d, v, nv, lam, dn, stop), weights)

    grad = jax.jit(jax.grad(loss, argnums=(0, 1, 2, 3, 4)), static_argnums=5)
    for g in grad(r, d, v, nv, jnp.float32(0.8), True):
        np.testing.assert_array_equal(g, 0.0)
    # ... whereas with stop_target_gradients=False the rewards do receive gradient.
    open_grads = grad(r, d, v, nv, jnp.float32(0.8), False)[0]
    assert np.abs(np.asarray(open_grads)).max() > 0.1


def test_value_loss_gradient_sees_targets_as_constants():
    data = ref.random_rollout(13, T=8, batch_shape=(2,))
    r, d, dn, v, nv = _args(data, *FIELDS)

    def value_loss(v, nv, r):
        targets = P.gae(r, d, dn, v, nv, lambda_=0.9).targets
        return 0.5 * jnp.sum((v - targets) ** 2)

    g_v, g_nv, g_r = jax.grad(value_loss, argnums=(0, 1, 2))(v, nv, r)
    targets = P.gae(r, d, dn, v, nv, lambda_=0.9).targets
    np.testing.assert_allclose(g_v, v - targets, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(g_nv, 0.0)
    np.testing.assert_array_equal(g_r, 0.0)


def test_td_errors_gradient_only_into_values():
    data = ref.random_rollout(14, T=8, batch_shape=(2,))
    r, d, v, nv = _args(data, "rewards", "discounts", "values", "next_values")
    w = jnp.asarray(np.random.default_rng(2).normal(size=r.shape), jnp.float32)
    loss = lambda r, d, v, nv: jnp.sum(w * P.td_errors(r, d, v, nv))  # noqa: E731
    grads = jax.grad(loss, argnums=(0, 1, 2, 3))(r, d, v, nv)
    np.testing.assert_array_equal(grads[0], 0.0)
    np.testing.assert_array_equal(grads[1], 0.0)
    np.testing.assert_allclose(grads[2], -w)
    np.testing.assert_array_equal(grads[3], 0.0)


FD_FUNCTIONS = dict(
    GRAD_FUNCTIONS,
    td_errors=lambda r, d, v, nv, lam, dn, stop: P.td_errors(
        r, d, v, nv, stop_target_gradients=stop
    ),
)


@pytest.mark.parametrize("name", list(FD_FUNCTIONS))
def test_gradients_match_finite_differences(name):
    f = FD_FUNCTIONS[name]
    with jax.enable_x64(True):
        data = ref.random_rollout(15, T=8, batch_shape=(2,))
        r, d, dn, v, nv = (jnp.asarray(data[k], jnp.float64) for k in FIELDS)
        lam = jnp.float64(0.8)
        rng = np.random.default_rng(3)
        weights = [jnp.asarray(rng.normal(size=r.shape))] * 2

        @jax.jit
        def loss(r, d, v, nv, lam):
            return _weighted_sum(f(r, d, v, nv, lam, dn, False), weights)

        primals = (r, d, v, nv, lam)
        grads = jax.jit(jax.grad(loss, argnums=(0, 1, 2, 3, 4)))(*primals)
        for i, (x, g) in enumerate(zip(primals, grads)):
            direction = jnp.asarray(rng.normal(size=jnp.shape(x)))
            eps = 1e-6
            plus = list(primals)
            minus = list(primals)
            plus[i] = x + eps * direction
            minus[i] = x - eps * direction
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
        ("discounts", lambda: pgkit.reward_to_go(good, bad, good)),
        ("next_values", lambda: pgkit.reward_to_go(good, good, good, bad)),
        ("dones", lambda: pgkit.episode_returns(good, good, bad)),
        ("values", lambda: pgkit.td_errors(good, good, bad, good)),
        ("next_values", lambda: pgkit.n_step_returns(good, good, good, bad, n=2)),
        ("n", lambda: pgkit.n_step_returns(good, good, good, good, n=0)),
        ("n", lambda: pgkit.n_step_returns(good, good, good, good, n=2.0)),
        ("dones", lambda: pgkit.lambda_returns(good, good, bad, good, lambda_=0.9)),
        ("lambda_", lambda: pgkit.lambda_returns(good, good, good, good, lambda_=jnp.ones(3))),
        ("values", lambda: pgkit.gae(good, good, good, bad, good, lambda_=0.9)),
        ("lambda_", lambda: pgkit.gae(good, good, good, good, good, lambda_=jnp.ones((5, 2, 2)))),
        ("rewards", lambda: pgkit.lambda_returns(jnp.float32(1.0), 0.9, 0.0, 1.0, lambda_=0.9)),
        ("rewards", lambda: pgkit.gae(*[jnp.zeros((0, 2))] * 5, lambda_=0.9)),
    ]


@pytest.mark.parametrize("index", range(len(_bad_calls())))
def test_bad_input_raises_value_error_naming_the_argument(index):
    name, call = _bad_calls()[index]
    with pytest.raises(ValueError, match=rf"\b{name}\b"):
        call()
