"""Tests for pgkit.critics: TD / double-Q / soft targets, critic and actor losses, temperature losses."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pgkit
import reference as ref

GAMMA = 0.9


def _batch(seed, shape=(5, 4), actions=3):
    """Random replay-like batch with both kinds of episode end: ~1/4 terminated, ~1/4 truncated."""
    rng = np.random.default_rng(seed)
    kind = rng.integers(0, 4, size=shape)  # 0: terminated, 1: truncated, else: continues
    terminated = kind == 0
    logits = rng.normal(size=shape + (actions,)) * 2
    logits[..., 0] = np.where(rng.uniform(size=shape) < 0.3, -np.inf, logits[..., 0])  # some zero-prob actions
    log_probs = logits - np.log(np.sum(np.exp(logits), axis=-1, keepdims=True))
    return dict(
        rewards=rng.normal(size=shape).astype(np.float32),
        discounts=(GAMMA * (1 - terminated)).astype(np.float32),
        next_values=rng.normal(size=shape).astype(np.float32),
        next_q1=rng.normal(size=shape).astype(np.float32),
        next_q2=rng.normal(size=shape).astype(np.float32),
        next_log_probs=rng.normal(size=shape).astype(np.float32) - 1,
        probs=np.exp(log_probs).astype(np.float32),
        log_probs=log_probs.astype(np.float32),
        q1=rng.normal(size=shape + (actions,)).astype(np.float32),
        q2=rng.normal(size=shape + (actions,)).astype(np.float32),
        alpha=np.float32(0.3),
        kind=kind,
    )


# ----------------------------------------------------------------------------- NumPy oracles (loops)


def _np_discrete_soft_value(probs, log_probs, q1, q2, alpha):
    out = np.zeros(probs.shape[:-1])
    for idx in np.ndindex(*probs.shape[:-1]):
        total = 0.0
        for a in range(probs.shape[-1]):
            p = float(probs[idx + (a,)])
            if p > 0:
                total += p * (min(q1[idx + (a,)], q2[idx + (a,)]) - alpha * log_probs[idx + (a,)])
        out[idx] = total
    return out


def _np_entropy(probs, log_probs):
    out = np.zeros(probs.shape[:-1])
    for idx in np.ndindex(*probs.shape[:-1]):
        out[idx] = -sum(probs[idx + (a,)] * log_probs[idx + (a,)] for a in range(probs.shape[-1]) if probs[idx + (a,)] > 0)
    return out


# ----------------------------------------------------------------------------- targets


def test_td_targets_terminated_vs_truncated():
    # step 0 continues, step 1 truncated (bootstraps from V(final obs)), step 2 terminated (does not)
    rewards = jnp.array([1.0, 2.0, 3.0])
    discounts = jnp.array([GAMMA, GAMMA, 0.0])
    next_values = jnp.array([10.0, 20.0, 30.0])
    np.testing.assert_allclose(np.asarray(pgkit.td_targets(rewards, discounts, next_values)), [10.0, 20.0, 3.0], rtol=1e-6)
    b = _batch(0)
    got = pgkit.td_targets(b["rewards"], b["discounts"], b["next_values"])
    expected = np.where(b["kind"] == 0, b["rewards"], b["rewards"] + GAMMA * b["next_values"])
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-6)


def test_clipped_double_q_uses_the_minimum():
    b = _batch(1)
    got = np.asarray(pgkit.clipped_double_q_targets(b["rewards"], b["discounts"], b["next_q1"], b["next_q2"]))
    expected = np.zeros_like(got)
    for idx in np.ndindex(*got.shape):
        expected[idx] = b["rewards"][idx] + b["discounts"][idx] * min(b["next_q1"][idx], b["next_q2"][idx])
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)
    # swapping the critics changes nothing; never above either single-critic target
    swapped = pgkit.clipped_double_q_targets(b["rewards"], b["discounts"], b["next_q2"], b["next_q1"])
    np.testing.assert_array_equal(got, np.asarray(swapped))
    single = np.asarray(pgkit.td_targets(b["rewards"], b["discounts"], b["next_q1"]))
    assert np.all(got <= single + 1e-6) and np.any(got < single - 1e-3)


def test_soft_q_targets_vs_numpy():
    b = _batch(2)
    got = pgkit.soft_q_targets(
        b["rewards"], b["discounts"], b["next_q1"], b["next_q2"], b["next_log_probs"], alpha=b["alpha"]
    )
    expected = b["rewards"] + b["discounts"] * (
        np.minimum(b["next_q1"], b["next_q2"]) - b["alpha"] * b["next_log_probs"]
    )
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-6, atol=1e-6)
    # α = 0 recovers clipped double-Q; terminated steps give the reward alone
    zero = pgkit.soft_q_targets(b["rewards"], b["discounts"], b["next_q1"], b["next_q2"], b["next_log_probs"], alpha=0.0)
    np.testing.assert_allclose(
        np.asarray(zero),
        np.asarray(pgkit.clipped_double_q_targets(b["rewards"], b["discounts"], b["next_q1"], b["next_q2"])),
        rtol=1e-6,
    )
    np.testing.assert_array_equal(np.asarray(got)[b["kind"] == 0], b["rewards"][b["kind"] == 0])


def test_discrete_soft_q_targets_vs_numpy_expectation():
    b = _batch(3)
    assert np.any(b["probs"] == 0)  # 0·log 0 terms are exercised
    got = pgkit.discrete_soft_q_targets(
        b["rewards"], b["discounts"], b["probs"], b["log_probs"], b["q1"], b["q2"], alpha=b["alpha"]
    )
    expected = b["rewards"] + b["discounts"] * _np_discrete_soft_value(b["probs"], b["log_probs"], b["q1"], b["q2"], b["alpha"])
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-5, atol=1e-5)
    # per-sample temperature [*B] broadcasts over the action axis
    alphas = np.linspace(0.1, 1.0, 20, dtype=np.float32).reshape(5, 4)
    got = pgkit.discrete_soft_q_targets(b["rewards"], b["discounts"], b["probs"], b["log_probs"], b["q1"], b["q2"], alpha=alphas)
    for idx in [(0, 0), (4, 3), (2, 1)]:
        one = _np_discrete_soft_value(b["probs"][idx][None], b["log_probs"][idx][None], b["q1"][idx][None], b["q2"][idx][None], alphas[idx])
        np.testing.assert_allclose(float(got[idx]), b["rewards"][idx] + b["discounts"][idx] * one[0], rtol=1e-5, atol=1e-5)


def test_no_gradient_reaches_targets_unless_asked():
    b = _batch(4)

    def total(fn, stop, argnums):
        return jax.grad(lambda *x: jnp.sum(fn(*x, stop)), argnums=argnums)

    cases = [
        (lambda r, d, v, s: pgkit.td_targets(r, d, v, stop_target_gradients=s), (b["rewards"], b["discounts"], b["next_values"])),
        (lambda r, d, q1, q2, s: pgkit.clipped_double_q_targets(r, d, q1, q2, stop_target_gradients=s),
         (b["rewards"], b["discounts"], b["next_q1"], b["next_q2"])),
        (lambda r, d, q1, q2, lp, s: pgkit.soft_q_targets(r, d, q1, q2, lp, alpha=0.3, stop_target_gradients=s),
         (b["rewards"], b["discounts"], b["next_q1"], b["next_q2"], b["next_log_probs"])),
        (lambda r, d, p, lp, q1, q2, s: pgkit.discrete_soft_q_targets(r, d, p, lp, q1, q2, alpha=0.3, stop_target_gradients=s),
         (b["rewards"], b["discounts"], b["probs"], b["log_probs"], b["q1"], b["q2"])),
    ]
    for fn, args in cases:
        argnums = tuple(range(len(args)))
        stopped = total(fn, True, argnums)(*args)
        assert all(np.all(np.asarray(g) == 0) for g in stopped)
        flowing = total(fn, False, argnums)(*args)
        np.testing.assert_allclose(np.asarray(flowing[0]), 1.0)  # ∂y/∂r = 1
        assert np.all(np.asarray(flowing[1]) != 0)  # ∂y/∂discount = the (soft) next value
        assert all(np.all(np.isfinite(np.asarray(g))) for g in flowing)  # zero-prob actions give no NaN

    # clipped double-Q: the gradient goes to the smaller critic only
    g1, g2 = jax.grad(
        lambda q1, q2: jnp.sum(pgkit.clipped_double_q_targets(b["rewards"], b["discounts"], q1, q2, stop_target_gradients=False)),
        argnums=(0, 1),
    )(b["next_q1"], b["next_q2"])
    np.testing.assert_allclose(np.asarray(g1), np.where(b["next_q1"] < b["next_q2"], b["discounts"], 0.0), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(g2), np.where(b["next_q1"] < b["next_q2"], 0.0, b["discounts"]), rtol=1e-6)


# ----------------------------------------------------------------------------- losses


def test_q_loss_value_and_gradients():
    b = _batch(5)
    q, y = b["next_q1"], b["next_q2"]
    np.testing.assert_allclose(np.asarray(pgkit.q_loss(q, y)), 0.5 * (q - y) ** 2, rtol=1e-6)
    gq, gy = jax.grad(lambda q, y: jnp.sum(pgkit.q_loss(q, y)), argnums=(0, 1))(q, y)
    np.testing.assert_allclose(np.asarray(gq), q - y, rtol=1e-6, atol=1e-7)
    assert np.all(np.asarray(gy) == 0)
    gy = jax.grad(lambda y: jnp.sum(pgkit.q_loss(q, y, stop_target_gradients=False)))(y)
    np.testing.assert_allclose(np.asarray(gy), y - q, rtol=1e-6, atol=1e-7)


def test_dpg_loss_gradient_equals_chain_rule_on_linear_actor():
    """∇_W Σ_s −Q(s, W s + c) = −Σ_s (∂Q/∂a) sᵀ for a linear actor and a quadratic-in-a critic."""
    rng = np.random.default_rng(6)
    n, obs, act = 8, 4, 2
    states = rng.normal(size=(n, obs)).astype(np.float32)
    weights = rng.normal(size=(act, obs)).astype(np.float32)
    bias = rng.normal(size=act).astype(np.float32)
    m = rng.normal(size=(obs, act)).astype(np.float32)
    target = rng.normal(size=act).astype(np.float32)

    def critic(s, a):  # Q(s, a) = sᵀ M a − ½‖a − target‖²
        return s @ m @ a - 0.5 * jnp.sum((a - target) ** 2)

    def actor(params, s):
        w, c = params
        return w @ s + c

    def loss(params):
        actions = jax.vmap(actor, in_axes=(None, 0))(params, states)
        q = jax.vmap(critic)(states, actions)
        return jnp.sum(pgkit.dpg_loss(q))

    g_w, g_c = jax.grad(loss)((weights, bias))
    actions = states @ weights.T + bias
    dq_da = states @ m - (actions - target)  # [n, act]
    np.testing.assert_allclose(np.asarray(g_w), -dq_da.T @ states, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.asarray(g_c), -dq_da.sum(0), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.asarray(pgkit.dpg_loss(jnp.array([1.5, -2.0]))), [-1.5, 2.0])


def test_dpg_loss_critic_gradient_is_the_callers_choice_under_jit_and_vmap():
    """The docstring's contract: the gradient flows through ``q_values`` into the actor θ *and*
    into the critic φ unless the caller holds φ fixed (``jax.lax.stop_gradient(critic_params)``),
    in which case φ gets exactly zero and θ's gradient is unchanged. Checked jitted, and under vmap
    over a leading axis of independent actors (one per seed) against a loop."""
    rng = np.random.default_rng(7)
    n, obs, act, seeds = 6, 3, 2, 4
    states = jnp.asarray(rng.normal(size=(n, obs)), jnp.float32)
    actor_params = (jnp.asarray(rng.normal(size=(seeds, act, obs)), jnp.float32),
                    jnp.asarray(rng.normal(size=(seeds, act)), jnp.float32))  # [S, ...] per seed
    critic_params = (jnp.asarray(rng.normal(size=(obs, act)), jnp.float32),
                     jnp.asarray(rng.normal(size=act), jnp.float32))

    def critic(phi, s, a):  # Q_φ(s, a) = sᵀ M a − ½‖a − c‖², φ = (M, c)
        m, c = phi
        return s @ m @ a - 0.5 * jnp.sum((a - c) ** 2)

    def loss(theta, phi, hold_critic):
        if hold_critic:
            phi = jax.lax.stop_gradient(phi)
        w, bias = theta
        actions = states @ w.T + bias  # μ_θ(s)
        return jnp.sum(pgkit.dpg_loss(jax.vmap(critic, in_axes=(None, 0, 0))(phi, states, actions)))

    grads = jax.jit(jax.grad(loss, argnums=(0, 1)), static_argnums=2)
    first = jax.tree.map(lambda x: x[0], actor_params)
    (g_theta_open, g_phi_open), (g_theta_held, g_phi_held) = grads(first, critic_params, False), grads(first, critic_params, True)
    # Held fixed: exactly zero into the critic, and the actor's gradient is untouched.
    for g in g_phi_held:
        np.testing.assert_array_equal(g, 0.0)
    jax.tree.map(np.testing.assert_array_equal, g_theta_held, g_theta_open)
    # Not held: −Σ_s ∂Q/∂φ, i.e. −Σ_s s aᵀ for M and −Σ_s (a − c) for c (the loss would train
    # the critic to overestimate).
    w, bias = (np.asarray(x, np.float64) for x in first)
    s64, c64 = np.asarray(states, np.float64), np.asarray(critic_params[1], np.float64)
    actions = s64 @ w.T + bias
    np.testing.assert_allclose(g_phi_open[0], -s64.T @ actions, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(g_phi_open[1], -(actions - c64).sum(0), rtol=1e-4, atol=1e-4)
    assert np.abs(np.asarray(g_phi_open[0])).max() > 0.1
    # vmap over a leading axis of seeds (one actor each, a shared critic) matches a loop over the
    # seeds; to rounding only, since vmap turns the actor's and critic's matrix products into
    # batched ones that accumulate in another order (dpg_loss itself is bit-identical, see below).
    for hold in (False, True):
        batched = jax.jit(jax.vmap(jax.grad(loss, argnums=(0, 1)), in_axes=(0, None, None)), static_argnums=2)(
            actor_params, critic_params, hold
        )
        for i in range(seeds):
            one = grads(jax.tree.map(lambda x: x[i], actor_params), critic_params, hold)
            jax.tree.map(lambda b, o: ref.assert_equal_up_to_rounding(b[i], o, ulps=8), batched, one)


def test_sac_actor_loss_value_and_gradients():
    b = _batch(7)
    q, logp = b["next_q1"], b["next_log_probs"]
    np.testing.assert_allclose(np.asarray(pgkit.sac_actor_loss(q, logp, alpha=0.3)), 0.3 * logp - q, rtol=1e-6, atol=1e-6)
    gq, glp, ga = jax.grad(lambda q, lp, a: jnp.sum(pgkit.sac_actor_loss(q, lp, alpha=a)), argnums=(0, 1, 2))(q, logp, 0.3)
    np.testing.assert_allclose(np.asarray(gq), -1.0)
    np.testing.assert_allclose(np.asarray(glp), 0.3, rtol=1e-6)
    assert float(ga) == 0.0


def test_sac_temperature_loss_sign_and_stop_gradient():
    # entropy estimate −log π = 0.5 below target 2 → α should rise; above → fall
    low_entropy = jnp.full(6, -0.5)
    high_entropy = jnp.full(6, -3.0)
    grad = jax.grad(lambda la, lp: jnp.sum(pgkit.sac_temperature_loss(la, lp, target_entropy=2.0)), argnums=(0, 1))
    g_low, g_lp = grad(0.0, low_entropy)
    g_high, _ = grad(0.0, high_entropy)
    np.testing.assert_allclose(float(g_low), -6 * (-0.5 + 2.0), rtol=1e-6)  # = Σ(H_est − H̄)
    assert float(g_low) < 0 < float(g_high)
    assert np.all(np.asarray(g_lp) == 0)
    # a few gradient-descent steps move α the right way
    log_alpha = 0.0
    for _ in range(3):
        log_alpha -= 0.1 * float(grad(log_alpha, low_entropy)[0])
    assert log_alpha > 0
    values = pgkit.sac_temperature_loss(0.7, high_entropy, target_entropy=2.0)
    np.testing.assert_allclose(np.asarray(values), -0.7 * (-3.0 + 2.0), rtol=1e-6)
    g_lp = jax.grad(lambda lp: jnp.sum(pgkit.sac_temperature_loss(0.7, lp, target_entropy=2.0, stop_target_gradients=False)))(high_entropy)
    np.testing.assert_allclose(np.asarray(g_lp), -0.7, rtol=1e-6)


def test_default_target_entropy():
    assert float(pgkit.default_target_entropy(6)) == -6.0
    np.testing.assert_allclose(float(pgkit.default_target_entropy(4, discrete=True)), 0.98 * math.log(4), rtol=1e-6)
    np.testing.assert_allclose(float(pgkit.default_target_entropy(5, discrete=True, scale=0.5)), 0.5 * math.log(5), rtol=1e-6)
    for bad in (0, -1, 2.0, True):
        with pytest.raises(ValueError, match="action_size"):
            pgkit.default_target_entropy(bad)


def test_discrete_sac_actor_loss_vs_numpy_and_gradients():
    b = _batch(8)
    got = pgkit.discrete_sac_actor_loss(b["probs"], b["log_probs"], b["q1"], alpha=b["alpha"])
    expected = np.zeros(got.shape)
    for idx in np.ndindex(*got.shape):
        expected[idx] = sum(
            b["probs"][idx + (a,)] * (b["alpha"] * b["log_probs"][idx + (a,)] - b["q1"][idx + (a,)])
            for a in range(3) if b["probs"][idx + (a,)] > 0
        )
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-5, atol=1e-5)
    # equals −(expected soft value) with q1 = q2, i.e. the soft target's inner term
    soft = _np_discrete_soft_value(b["probs"], b["log_probs"], b["q1"], b["q1"], b["alpha"])
    np.testing.assert_allclose(np.asarray(got), -soft, rtol=1e-5, atol=1e-5)

    # gradient through the logits vs finite differences (float64); none into Q or α
    rng = np.random.default_rng(9)
    with jax.enable_x64(True):
        logits = jnp.asarray(rng.normal(size=(4, 3)))
        q = jnp.asarray(rng.normal(size=(4, 3)))

        def objective(logits, q, alpha):
            lp = jax.nn.log_softmax(logits)
            return jnp.sum(pgkit.discrete_sac_actor_loss(jnp.exp(lp), lp, q, alpha=alpha))

        g_logits, g_q, g_alpha = jax.jit(jax.grad(objective, argnums=(0, 1, 2)))(logits, q, 0.4)
        assert np.all(np.asarray(g_q) == 0) and float(g_alpha) == 0
        h = 1e-6
        for i, j in [(0, 0), (2, 1), (3, 2)]:
            fd = (objective(logits.at[i, j].add(h), q, 0.4) - objective(logits.at[i, j].add(-h), q, 0.4)) / (2 * h)
            np.testing.assert_allclose(float(g_logits[i, j]), float(fd), rtol=1e-6, atol=1e-9)

    # zero-probability actions: finite loss and gradients
    g = jax.grad(lambda p, lp: jnp.sum(pgkit.discrete_sac_actor_loss(p, lp, b["q1"], alpha=0.3)), argnums=(0, 1))(
        b["probs"], b["log_probs"]
    )
    assert all(np.all(np.isfinite(np.asarray(x))) for x in g)


def test_discrete_sac_temperature_loss_vs_numpy_and_sign():
    b = _batch(10)
    target = 0.5
    got = pgkit.discrete_sac_temperature_loss(0.2, b["probs"], b["log_probs"], target_entropy=target)
    entropy = _np_entropy(b["probs"], b["log_probs"])
    np.testing.assert_allclose(np.asarray(got), 0.2 * (entropy - target), rtol=1e-5, atol=1e-6)
    g, gp, glp = jax.grad(
        lambda la, p, lp: jnp.sum(pgkit.discrete_sac_temperature_loss(la, p, lp, target_entropy=target)), argnums=(0, 1, 2)
    )(0.2, b["probs"], b["log_probs"])
    np.testing.assert_allclose(float(g), np.sum(entropy - target), rtol=1e-5)
    assert np.all(np.asarray(gp) == 0) and np.all(np.asarray(glp) == 0)
    # per-sample sign: entropy below target → descent raises log α
    g_each = jax.vmap(jax.grad(lambda la, p, lp: pgkit.discrete_sac_temperature_loss(la, p, lp, target_entropy=target)),
                      in_axes=(None, 0, 0))(0.2, b["probs"].reshape(-1, 3), b["log_probs"].reshape(-1, 3))
    below = entropy.reshape(-1) < target
    assert np.any(below) and np.any(~below)
    assert np.all(np.asarray(g_each)[below] < 0) and np.all(np.asarray(g_each)[~below] >= 0)


# ----------------------------------------------------------------------------- invariance and input checks


OUTPUT_NAMES = (
    "td_targets", "clipped_double_q_targets", "soft_q_targets", "q_loss", "dpg_loss",
    "sac_actor_loss", "sac_temperature_loss", "discrete_soft_q_targets", "discrete_sac_actor_loss",
    "discrete_sac_temperature_loss",
)


def _all_outputs(b, alpha):
    return (
        pgkit.td_targets(b["rewards"], b["discounts"], b["next_values"]),
        pgkit.clipped_double_q_targets(b["rewards"], b["discounts"], b["next_q1"], b["next_q2"]),
        pgkit.soft_q_targets(b["rewards"], b["discounts"], b["next_q1"], b["next_q2"], b["next_log_probs"], alpha=alpha),
        pgkit.q_loss(b["next_q1"], b["next_values"]),
        pgkit.dpg_loss(b["next_q1"]),
        pgkit.sac_actor_loss(b["next_q1"], b["next_log_probs"], alpha=alpha),
        pgkit.sac_temperature_loss(jnp.log(alpha), b["next_log_probs"], target_entropy=-2.0),
        pgkit.discrete_soft_q_targets(b["rewards"], b["discounts"], b["probs"], b["log_probs"], b["q1"], b["q2"], alpha=alpha),
        pgkit.discrete_sac_actor_loss(b["probs"], b["log_probs"], b["q1"], alpha=alpha),
        pgkit.discrete_sac_temperature_loss(jnp.log(alpha), b["probs"], b["log_probs"], target_entropy=0.5),
    )




def test_jit_vmap_and_direct_batch_agree():
    # JAX arrays on both sides (NumPy inputs are float64; tests/test_api.py covers those).
    b = {k: jnp.asarray(v) for k, v in _batch(11).items() if k not in ("kind", "alpha")}  # [E=5, 4, ...]
    direct = _all_outputs(b, 0.3)
    traces = []

    def counted(b, alpha):
        traces.append(None)
        return _all_outputs(b, alpha)

    jitted = jax.jit(counted)
    out = jitted(b, 0.3)
    jitted(b, 0.7)  # a new traced temperature does not retrace
    assert len(traces) == 1
    # vmap over the leading axis of independent rows, a loop over the rows and the direct batch
    # call: bit-identical, eager or jitted.
    vmapped = jax.vmap(_all_outputs, in_axes=(0, None))(b, 0.3)
    jit_vmapped = jax.jit(jax.vmap(_all_outputs, in_axes=(0, None)))(b, 0.3)
    row = _all_outputs({k: v[2] for k, v in b.items()}, 0.3)
    for name, d, j, v, jv, r in zip(OUTPUT_NAMES, direct, out, vmapped, jit_vmapped, row):
        assert d.shape == (5, 4), name
        np.testing.assert_array_equal(v, d, err_msg=name)
        np.testing.assert_array_equal(jv, j, err_msg=name)
        np.testing.assert_array_equal(r, d[2], err_msg=name)
        ref.assert_equal_up_to_rounding(j, d, ulps=8)  # jit vs eager: XLA may contract to FMAs


def test_bad_shapes_raise():
    x, y = jnp.zeros(4), jnp.zeros(5)
    with pytest.raises(ValueError, match="discounts"):
        pgkit.td_targets(x, y, x)
    with pytest.raises(ValueError, match="next_q2"):
        pgkit.clipped_double_q_targets(x, x, x, y)
    with pytest.raises(ValueError, match="next_log_probs"):
        pgkit.soft_q_targets(x, x, x, x, y, alpha=0.1)
    with pytest.raises(ValueError, match="targets"):
        pgkit.q_loss(x, y)
    with pytest.raises(ValueError, match="log_probs"):
        pgkit.sac_actor_loss(x, y, alpha=0.1)
    p = jnp.full((4, 3), 1 / 3)
    with pytest.raises(ValueError, match="next_q1"):
        pgkit.discrete_soft_q_targets(x, x, p, p, jnp.zeros((4, 2)), jnp.zeros((4, 2)), alpha=0.1)
    with pytest.raises(ValueError, match="next_probs"):
        pgkit.discrete_soft_q_targets(x, x, jnp.zeros((5, 3)), p, p, p, alpha=0.1)
    with pytest.raises(ValueError, match="q_values"):
        pgkit.discrete_sac_actor_loss(p, p, jnp.zeros((4,)), alpha=0.1)
    with pytest.raises(ValueError, match="log_probs"):
        pgkit.discrete_sac_temperature_loss(0.0, p, jnp.zeros((4, 2)), target_entropy=0.5)
