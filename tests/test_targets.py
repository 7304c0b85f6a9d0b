"""Tests for pgkit.targets: Polyak averaging and periodic hard copies over pytrees."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import pgkit


def _trees(seed):
    rng = np.random.default_rng(seed)
    online = {"layer": (rng.normal(size=(3, 2)).astype(np.float32), rng.normal(size=2).astype(np.float32)),
              "scale": np.float32(rng.normal())}
    target = {"layer": (rng.normal(size=(3, 2)).astype(np.float32), rng.normal(size=2).astype(np.float32)),
              "scale": np.float32(rng.normal())}
    return online, target


def test_polyak_vs_numpy_and_optax():
    online, target = _trees(0)
    for tau in (0.0, 0.005, 0.3, 1.0):
        got = pgkit.polyak_update(online, target, tau=tau)
        assert jax.tree.structure(got) == jax.tree.structure(target)
        for g, o, t in zip(jax.tree.leaves(got), jax.tree.leaves(online), jax.tree.leaves(target)):
            np.testing.assert_allclose(np.asarray(g), tau * np.asarray(o, np.float64) + (1 - tau) * np.asarray(t, np.float64),
                                       rtol=1e-6, atol=1e-7)
            assert g.dtype == t.dtype
        ref = optax.incremental_update(online, target, step_size=tau)  # weight tau on the new (online) tensors
        for g, r in zip(jax.tree.leaves(got), jax.tree.leaves(ref)):
            np.testing.assert_allclose(np.asarray(g), np.asarray(r), rtol=1e-6, atol=1e-7)
    # the extremes copy exactly / keep exactly
    for g, o in zip(jax.tree.leaves(pgkit.polyak_update(online, target, tau=1.0)), jax.tree.leaves(online)):
        np.testing.assert_array_equal(np.asarray(g), o)
    for g, t in zip(jax.tree.leaves(pgkit.polyak_update(online, target, tau=0.0)), jax.tree.leaves(target)):
        np.testing.assert_array_equal(np.asarray(g), t)


def test_polyak_repeated_converges_geometrically():
    """After k updates against a fixed online tree: θ_targ = θ + (1 − τ)^k (θ_targ,0 − θ)."""
    online, target = _trees(1)
    tau, k = 0.1, 20

    @jax.jit
    def run(online, target, tau):
        return jax.lax.fori_loop(0, k, lambda _, t: pgkit.polyak_update(online, t, tau=tau), target)

    got = run(online, target, tau)
    for g, o, t in zip(jax.tree.leaves(got), jax.tree.leaves(online), jax.tree.leaves(target)):
        np.testing.assert_allclose(np.asarray(g), o + (1 - tau) ** k * (t - o), rtol=1e-5, atol=1e-6)


def test_periodic_copies_exactly_at_multiples_of_period():
    online, target = _trees(2)
    period, steps = 4, 13

    @jax.jit
    def run(online, target):
        def body(carry, step):
            online, target = carry
            online = jax.tree.map(lambda x: x + 1.0, online)  # the online network keeps changing
            target = pgkit.periodic_update(online, target, step=step, period=period)
            return (online, target), target

        return jax.lax.scan(body, (online, target), jnp.arange(steps))[1]

    history = run(online, target)
    current = [np.asarray(o, np.float32) for o in jax.tree.leaves(online)]  # NumPy replay of the loop
    expected = [np.asarray(t, np.float32) for t in jax.tree.leaves(target)]
    for step in range(steps):
        current = [c + np.float32(1.0) for c in current]
        if step % period == 0:
            expected = list(current)
        for h, e in zip(jax.tree.leaves(history), expected):
            np.testing.assert_array_equal(np.asarray(h[step]), e)
    # direct calls, traced or Python steps
    a, b = {"w": jnp.ones(3)}, {"w": jnp.zeros(3)}
    for step, copied in [(0, True), (3, False), (4, True), (5, False), (8, True)]:
        out = pgkit.periodic_update(a, b, step=jnp.int32(step), period=4)["w"]
        np.testing.assert_array_equal(np.asarray(out), np.ones(3) if copied else np.zeros(3))
    np.testing.assert_array_equal(np.asarray(pgkit.periodic_update(a, b, step=7, period=1)["w"]), np.ones(3))


def test_vmap_and_no_retrace():
    online, target = _trees(3)
    stack = lambda tree, n: jax.tree.map(lambda x: jnp.stack([x + i for i in range(n)]), tree)
    online_b, target_b = stack(online, 3), stack(target, 3)
    taus = jnp.array([0.0, 0.5, 1.0])
    steps = jnp.array([0, 1, 2])
    traces = []

    def both(online, target, tau, step):
        traces.append(None)
        return pgkit.polyak_update(online, target, tau=tau), pgkit.periodic_update(online, target, step=step, period=2)

    batched = jax.jit(jax.vmap(both))
    polyak_b, periodic_b = batched(online_b, target_b, taus, steps)
    batched(online_b, target_b, taus * 0.5, steps + 1)
    assert len(traces) == 1
    for i in range(3):
        o_i = jax.tree.map(lambda x: x[i], online_b)
        t_i = jax.tree.map(lambda x: x[i], target_b)
        p_i = pgkit.polyak_update(o_i, t_i, tau=float(taus[i]))
        c_i = pgkit.periodic_update(o_i, t_i, step=int(steps[i]), period=2)
        for got, ref in zip(jax.tree.leaves(polyak_b), jax.tree.leaves(p_i)):
            np.testing.assert_allclose(np.asarray(got[i]), np.asarray(ref), rtol=1e-6, atol=1e-7)
        for got, ref in zip(jax.tree.leaves(periodic_b), jax.tree.leaves(c_i)):
            np.testing.assert_array_equal(np.asarray(got[i]), np.asarray(ref))


def test_equinox_modules_and_non_floating_leaves():
    """Floating-array leaves are updated; functions, integer arrays and Python scalars come from the target."""
    online = eqx.nn.MLP(3, 2, 4, 1, key=jax.random.key(0))
    target = eqx.nn.MLP(3, 2, 4, 1, key=jax.random.key(1))
    online = {"net": online, "count": jnp.array(7), "eps": 0.5}
    target = {"net": target, "count": jnp.array(2), "eps": 0.25}
    for new in (pgkit.polyak_update(online, target, tau=0.25), pgkit.periodic_update(online, target, step=4, period=2)):
        assert jax.tree.structure(new) == jax.tree.structure(target)
        assert int(new["count"]) == 2 and new["eps"] == 0.25
        assert new["net"].activation is target["net"].activation
    polyak = pgkit.polyak_update(online, target, tau=0.25)
    pairs = zip(*(jax.tree.leaves(eqx.filter(t["net"], eqx.is_inexact_array)) for t in (polyak, online, target)))
    for p, o, t in pairs:
        np.testing.assert_allclose(np.asarray(p), 0.25 * np.asarray(o) + 0.75 * np.asarray(t), rtol=1e-6, atol=1e-7)
    copied = pgkit.periodic_update(online, target, step=4, period=2)
    for c, o in zip(*(jax.tree.leaves(eqx.filter(t["net"], eqx.is_inexact_array)) for t in (copied, online))):
        np.testing.assert_array_equal(np.asarray(c), np.asarray(o))
    # inside a jitted update (equinox filter_jit handles the non-array leaves)
    jitted = eqx.filter_jit(lambda o, t, tau: pgkit.polyak_update(o, t, tau=tau))(online, target, jnp.float32(0.25))
    for a, b in zip(jax.tree.leaves(eqx.filter(jitted, eqx.is_inexact_array)), jax.tree.leaves(eqx.filter(polyak, eqx.is_inexact_array))):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)


def test_bad_input_raises():
    a = {"w": jnp.ones(3)}
    with pytest.raises(ValueError, match="tree structure"):
        pgkit.polyak_update(a, {"v": jnp.ones(3)}, tau=0.1)
    with pytest.raises(ValueError, match="shape"):
        pgkit.polyak_update(a, {"w": jnp.ones(2)}, tau=0.1)
    with pytest.raises(ValueError, match="floating"):
        pgkit.polyak_update({"w": jnp.ones(3, jnp.int32)}, {"w": jnp.ones(3)}, tau=0.1)
    with pytest.raises(ValueError, match=r"\bperiod\b"):  # the argument, not periodic_update
        pgkit.periodic_update(a, a, step=0, period=0)
    with pytest.raises(ValueError, match="step"):
        pgkit.periodic_update(a, a, step=jnp.arange(2), period=2)
