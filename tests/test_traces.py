"""Tests for pgkit.traces: accumulating/replacing traces, TD(λ) forward–backward equivalence, actor-critic steps."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pgkit
import reference as ref

GAMMA = 0.9


def _episode_data(seed, t=14, d=4):
    """Three episodes in one rollout: steps 0–3 end terminated, 4–8 end truncated, 9–13 run off the rollout's end."""
    rng = np.random.default_rng(seed)
    terminated = np.zeros(t, bool)
    truncated = np.zeros(t, bool)
    terminated[3] = True
    truncated[8] = True
    features = rng.normal(size=(t, d))
    next_features = np.concatenate([features[1:], rng.normal(size=(1, d))])
    next_features[3] = rng.normal(size=d)  # s' after a termination: irrelevant (discount 0)
    next_features[8] = rng.normal(size=d)  # final observation of a truncated episode: bootstrapped
    return dict(
        features=features,
        next_features=next_features,
        rewards=rng.normal(size=t),
        discounts=GAMMA * (1 - terminated),
        dones=terminated | truncated,
        weights=rng.normal(size=d),
    )


def _np_lambda_returns(rewards, discounts, dones, next_values, lambda_):
    """Oracle loop: G_t = r_t + d_t((1 − l_t) V(s'_t) + l_t G_{t+1}), l_t = λ(1 − done_t), l_{T−1} = 0."""
    t_max = len(rewards)
    g = np.zeros(t_max)
    following = 0.0
    for t in reversed(range(t_max)):
        l = 0.0 if (dones[t] or t == t_max - 1) else lambda_
        g[t] = rewards[t] + discounts[t] * ((1 - l) * next_values[t] + l * following)
        following = g[t]
    return g


def _incoming_decay(discounts, dones):
    """The documented decay of the incoming trace: discounts[t−1]·(1 − dones[t−1]), 0 at t = 0."""
    return np.concatenate([[0.0], discounts[:-1] * (1 - dones[:-1])])


@jax.jit
def _backward_total(features, td_errors, decays, lambda_):
    def step(trace, x):
        feature, delta, decay = x
        out = pgkit.td_lambda_update(trace, feature, delta, discount=decay, lambda_=lambda_)
        return out.trace, out.increment

    _, increments = jax.lax.scan(step, jnp.zeros(features.shape[1], features.dtype), (features, td_errors, decays))
    return increments.sum(0)


@pytest.mark.parametrize("seed", [0, 1])
def test_offline_backward_view_equals_forward_view(seed):
    """Offline TD(λ) (weights fixed over the rollout): Σ_t δ_t e_t = Σ_t (G^λ_t − v(s_t)) x_t, linear v,
    with a terminated episode, a truncated one and one cut by the rollout's end."""
    data = _episode_data(seed)
    w = data["weights"]
    values = data["features"] @ w
    next_values = data["next_features"] @ w
    td_errors = data["rewards"] + data["discounts"] * next_values - values
    decays = _incoming_decay(data["discounts"], data["dones"])
    for lambda_ in (0.0, 0.6, 1.0):
        forward = _np_lambda_returns(data["rewards"], data["discounts"], data["dones"], next_values, lambda_)
        expected = ((forward - values)[:, None] * data["features"]).sum(0)
        got = _backward_total(
            jnp.asarray(data["features"], jnp.float32), jnp.asarray(td_errors, jnp.float32),
            jnp.asarray(decays, jnp.float32), lambda_,
        )
        np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-5, atol=1e-5)
        # the forward view through pgkit.lambda_returns (another module) gives the same total
        g = pgkit.lambda_returns(data["rewards"].astype(np.float32), data["discounts"].astype(np.float32),
                                 data["dones"], next_values.astype(np.float32), lambda_=lambda_)
        np.testing.assert_allclose(np.asarray(g), forward, rtol=1e-4, atol=1e-4)
    # passing the bare previous discount (forgetting the cut at the truncation) breaks the identity
    wrong = _backward_total(
        jnp.asarray(data["features"], jnp.float32), jnp.asarray(td_errors, jnp.float32),
        jnp.asarray(np.concatenate([[0.0], data["discounts"][:-1]]), jnp.float32), 0.6,
    )
    forward = _np_lambda_returns(data["rewards"], data["discounts"], data["dones"], next_values, 0.6)
    assert np.abs(np.asarray(wrong) - ((forward - values)[:, None] * data["features"]).sum(0)).max() > 1e-3


def test_accumulating_trace_vs_numpy_on_pytrees():
    rng = np.random.default_rng(2)
    grads = [{"w": rng.normal(size=(2, 3)), "b": (rng.normal(size=3),)} for _ in range(5)]
    decays = [0.0, 0.9, 0.9, 0.0, 0.9]
    trace = jax.tree.map(lambda x: jnp.zeros(x.shape, jnp.float32), grads[0])
    e_w, e_b = np.zeros((2, 3)), np.zeros(3)
    for g, decay in zip(grads, decays):
        trace = pgkit.accumulating_trace(trace, jax.tree.map(jnp.float32, g), discount=decay, lambda_=0.7)
        e_w = decay * 0.7 * e_w + g["w"]
        e_b = decay * 0.7 * e_b + g["b"][0]
        np.testing.assert_allclose(np.asarray(trace["w"]), e_w, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(np.asarray(trace["b"][0]), e_b, rtol=1e-5, atol=1e-6)
        if decay == 0.0:  # reset at an episode's first step: the trace is the gradient alone
            np.testing.assert_allclose(np.asarray(trace["w"]), g["w"], rtol=1e-6)


def test_replacing_trace_one_hot_and_general_features():
    states = [0, 2, 0, 0, 1, 2]
    decay, lambda_ = 0.9, 0.8
    trace = jnp.zeros(3)
    expected = np.zeros(3)
    for s in states:
        x = np.eye(3)[s]
        trace = pgkit.replacing_trace(trace, jnp.asarray(x, jnp.float32), discount=decay, lambda_=lambda_)
        expected = np.maximum(decay * lambda_ * expected, x)  # classic replacing trace
        np.testing.assert_allclose(np.asarray(trace), expected, rtol=1e-6)
    assert float(trace.max()) == 1.0  # never accumulates above 1, unlike the accumulating trace
    acc = jnp.zeros(3)
    for s in states:
        acc = pgkit.accumulating_trace(acc, jnp.eye(3)[s], discount=decay, lambda_=lambda_)
    assert float(acc[0]) > 1.0
    # general features: active coordinates take the feature value, inactive ones decay
    got = pgkit.replacing_trace(jnp.array([1.0, 2.0, 3.0]), jnp.array([0.0, -0.5, 0.0]), discount=0.5, lambda_=1.0)
    np.testing.assert_allclose(np.asarray(got), [0.5, -0.5, 1.5])


def test_actor_critic_update_vs_numpy_loop():
    """One rollout with a termination and a truncation; pytree parameters; traces cut at dones."""
    data = _episode_data(3, t=10, d=3)
    rng = np.random.default_rng(4)
    actor_grads = rng.normal(size=(10, 2, 2))
    td_errors = rng.normal(size=10)
    decays = _incoming_decay(data["discounts"], data["dones"])

    @jax.jit
    def run(critic_grads, actor_grads, td_errors, decays, lambdas):
        def step(carry, x):
            z_w, z_theta = carry
            g_w, g_theta, delta, decay = x
            out = pgkit.td_lambda_actor_critic_update(
                z_w, z_theta, {"v": g_w}, (g_theta,), delta,
                discount=decay, lambda_critic=lambdas[0], lambda_actor=lambdas[1],
            )
            return (out.critic_trace, out.actor_trace), out

        init = ({"v": jnp.zeros(3)}, (jnp.zeros((2, 2)),))
        return jax.lax.scan(step, init, (critic_grads, actor_grads, td_errors, decays))[1]

    f32 = lambda x: jnp.asarray(x, jnp.float32)
    outs = run(f32(data["features"]), f32(actor_grads), f32(td_errors), f32(decays), f32([0.8, 0.5]))
    z_w, z_theta = np.zeros(3), np.zeros((2, 2))
    for t in range(10):
        z_w = GAMMA * 0.8 * z_w * (decays[t] > 0) + data["features"][t]
        z_theta = GAMMA * 0.5 * z_theta * (decays[t] > 0) + actor_grads[t]
        np.testing.assert_allclose(np.asarray(outs.critic_trace["v"][t]), z_w, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(np.asarray(outs.actor_trace[0][t]), z_theta, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(np.asarray(outs.critic_increment["v"][t]), td_errors[t] * z_w, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(np.asarray(outs.actor_increment[0][t]), td_errors[t] * z_theta, rtol=1e-5, atol=1e-5)
    # right after the termination (t = 4) and the truncation (t = 9) the traces restart from the gradient
    for t in (4, 9):
        np.testing.assert_allclose(np.asarray(outs.critic_trace["v"][t]), data["features"][t], rtol=1e-6)


def _assert_batched_invariance(fn, args, direct):
    """fn on leaves with a leading stream axis [E, ...] (``direct``), vmap over that axis and a
    loop over the streams: bit-identical, eager or jitted. Jit against eager only to rounding:
    XLA contracts the trace update decay·λ·e + g into an FMA."""
    vmapped, jitted = jax.vmap(fn)(*args), jax.jit(fn)(*args)
    jax.tree.map(np.testing.assert_array_equal, vmapped, direct)
    jax.tree.map(np.testing.assert_array_equal, jax.jit(jax.vmap(fn))(*args), jitted)
    for i in range(jax.tree.leaves(args)[0].shape[0]):
        one = fn(*jax.tree.map(lambda x: x[i], args))
        jax.tree.map(lambda b, o: np.testing.assert_array_equal(b[i], o), direct, one)
    jax.tree.map(lambda j, d: ref.assert_equal_up_to_rounding(j, d, ulps=8), jitted, direct)


def test_batched_leading_axis_equals_vmap_and_td_error_carries_no_gradient():
    rng = np.random.default_rng(5)
    e, d = 4, 3
    trace = {"w": jnp.asarray(rng.normal(size=(e, d)), jnp.float32)}
    grad = {"w": jnp.asarray(rng.normal(size=(e, d)), jnp.float32)}
    deltas = jnp.asarray(rng.normal(size=e), jnp.float32)
    decays = jnp.asarray([0.0, 0.9, 0.5, 0.9], jnp.float32)
    update = lambda tr, g, dl, dc: pgkit.td_lambda_update(tr, g, dl, discount=dc, lambda_=0.7)  # noqa: E731
    direct = update(trace, grad, deltas, decays)
    _assert_batched_invariance(update, (trace, grad, deltas, decays), direct)
    np.testing.assert_allclose(
        np.asarray(direct.increment["w"]),
        np.asarray(deltas)[:, None] * (np.asarray(decays)[:, None] * 0.7 * np.asarray(trace["w"]) + np.asarray(grad["w"])),
        rtol=1e-5, atol=1e-6,
    )
    for fn in (pgkit.accumulating_trace, pgkit.replacing_trace):
        step = lambda tr, g, dc, fn=fn: fn(tr, g, discount=dc, lambda_=0.7)  # noqa: E731
        _assert_batched_invariance(step, (trace, grad, decays), step(trace, grad, decays))
    g = jax.grad(lambda dl: jnp.sum(pgkit.td_lambda_update(trace, grad, dl, discount=decays, lambda_=0.7).increment["w"]))(deltas)
    assert np.all(np.asarray(g) == 0)


def test_actor_critic_update_under_vmap_over_streams():
    """E independent streams, each with its own traces, gradients, TD error and decay (pytree
    parameters with a leading [E] axis): vmap, a loop over the streams and the direct call with
    leading batch axes agree bit for bit, eager or jitted (jit against eager to rounding), and
    match the update rule."""
    rng = np.random.default_rng(6)
    e = 4
    f32 = lambda *shape: jnp.asarray(rng.normal(size=(e,) + shape), jnp.float32)  # noqa: E731
    critic_trace, critic_grad = {"v": f32(3), "b": f32()}, {"v": f32(3), "b": f32()}
    actor_trace, actor_grad = (f32(2, 2),), (f32(2, 2),)
    deltas = f32()
    decays = jnp.asarray([0.0, 0.9, 0.5, 0.9], jnp.float32)  # stream 0 starts an episode

    def update(zw, zt, gw, gt, delta, decay, lambda_critic, lambda_actor):
        return pgkit.td_lambda_actor_critic_update(
            zw, zt, gw, gt, delta, discount=decay, lambda_critic=lambda_critic, lambda_actor=lambda_actor
        )

    args = (critic_trace, actor_trace, critic_grad, actor_grad, deltas, decays)
    step = lambda *a: update(*a, 0.8, 0.5)  # noqa: E731
    direct = step(*args)  # leading batch axes [E] on every leaf, decay and δ [E]
    assert isinstance(direct, pgkit.ActorCriticTraceUpdate)
    _assert_batched_invariance(step, args, direct)
    # λ's shared by the streams (in_axes None, traced under jit) give the same numbers.
    vmap_shared = jax.vmap(update, in_axes=(0, 0, 0, 0, 0, 0, None, None))
    vmapped = vmap_shared(*args, 0.8, 0.5)
    jax.tree.map(np.testing.assert_array_equal, vmapped, direct)
    jax.tree.map(np.testing.assert_array_equal, jax.jit(vmap_shared)(*args, 0.8, 0.5), jax.jit(step)(*args))
    # The rule, stream by stream: z = decay·λ·z + g, increment = δ z; the critic and the actor
    # use their own λ, and stream 0 (decay 0) restarts from the gradient.
    d64 = np.asarray(decays, np.float64)
    for got, z, g, lam in (
        (vmapped.critic_trace["v"], critic_trace["v"], critic_grad["v"], 0.8),
        (vmapped.actor_trace[0], actor_trace[0], actor_grad[0], 0.5),
    ):
        shape = (e,) + (1,) * (z.ndim - 1)
        expected = d64.reshape(shape) * lam * np.asarray(z) + np.asarray(g)
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(vmapped.actor_trace[0][0], actor_grad[0][0])
    np.testing.assert_allclose(
        vmapped.actor_increment[0], np.asarray(deltas)[:, None, None] * np.asarray(vmapped.actor_trace[0]),
        rtol=1e-6, atol=1e-6,
    )


def test_bad_input_raises():
    with pytest.raises(ValueError, match="gradient"):
        pgkit.accumulating_trace({"w": jnp.zeros(3)}, {"v": jnp.zeros(3)}, discount=0.9, lambda_=0.5)
    with pytest.raises(ValueError, match="gradient"):
        pgkit.accumulating_trace(jnp.zeros(3), jnp.zeros(4), discount=0.9, lambda_=0.5)
    with pytest.raises(ValueError, match="discount"):
        pgkit.accumulating_trace(jnp.zeros((2, 3)), jnp.zeros((2, 3)), discount=jnp.ones(3), lambda_=0.5)
    with pytest.raises(ValueError, match="td_error"):
        pgkit.td_lambda_update(jnp.zeros((2, 3)), jnp.zeros((2, 3)), jnp.ones(5), discount=0.9, lambda_=0.5)
    with pytest.raises(ValueError, match="features"):
        pgkit.replacing_trace(jnp.zeros(3), jnp.zeros(2), discount=0.9, lambda_=0.5)
