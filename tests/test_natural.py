"""Tests for pgkit.natural: Fisher-vector products, CG, natural step, line search, compatible features."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import pgkit
import reference as ref

NUM_STATES, OBS_DIM, NUM_ACTIONS = 5, 3, 4


# --------------------------------------------------------------------------- small policies


def _linear_softmax(key):
    """Linear-softmax policy over a fixed batch of states: params pytree and a logits function."""
    k1, k2, k3 = jax.random.split(key, 3)
    params = {
        "w": 0.5 * jax.random.normal(k1, (OBS_DIM, NUM_ACTIONS)),
        "b": 0.5 * jax.random.normal(k2, (NUM_ACTIONS,)),
    }
    states = jax.random.normal(k3, (NUM_STATES, OBS_DIM))
    return params, lambda p: states @ p["w"] + p["b"]


def _tiny_network(key):
    """One tanh hidden layer, softmax output, over a fixed batch of states."""
    k1, k2, k3 = jax.random.split(key, 3)
    params = {
        "hidden": 0.7 * jax.random.normal(k1, (OBS_DIM, 4)),
        "out": 0.7 * jax.random.normal(k2, (4, NUM_ACTIONS)),
    }
    states = jax.random.normal(k3, (NUM_STATES, OBS_DIM))
    return params, lambda p: jnp.tanh(states @ p["hidden"]) @ p["out"]


def _mean_kl(old_logits, new_logits):
    """Mean over states of the exact KL(softmax(old) || softmax(new))."""
    old_logp = jax.nn.log_softmax(old_logits)
    new_logp = jax.nn.log_softmax(new_logits)
    return jnp.mean(jnp.sum(jnp.exp(old_logp) * (old_logp - new_logp), axis=-1))


def _kl_fn(params, logits_fn):
    old_logits = jax.lax.stop_gradient(logits_fn(params))
    return lambda p: _mean_kl(old_logits, logits_fn(p))


def _explicit_fisher(params, logits_fn):
    """Fisher E_s E_{a~π}[ψ ψᵀ] by enumerating actions, as a flat [P, P] float64 matrix."""
    flat, unravel = ravel_pytree(params)
    logp = np.asarray(jax.nn.log_softmax(logits_fn(params)), np.float64)  # [S, K]
    scores = np.asarray(
        jax.jacobian(lambda f: jax.nn.log_softmax(logits_fn(unravel(f))))(flat), np.float64
    )  # [S, K, P]
    weights = np.exp(logp) / logp.shape[0]
    return np.einsum("sk,skp,skq->pq", weights, scores, scores)


# --------------------------------------------------------------------------- Fisher-vector products


def _assert_products_equal_kl_hessian(product, kl_fn, params, seed):
    """``product(params, v, damping)`` equals ∇²KL̄ v + damping·v under jit and vmap, for three
    random v (float64 oracle: the Hessian by ``jax.hessian``); returns the Hessian and the vectors."""
    flat, unravel = ravel_pytree(params)
    vectors = jax.random.normal(jax.random.PRNGKey(seed), (3, flat.size))
    dampings = jnp.array([0.0, 0.1, 0.2])

    @jax.jit
    def products(params, vectors, dampings):
        hessian = jax.hessian(lambda f: kl_fn(unravel(f)))(ravel_pytree(params)[0])
        one = lambda v, d: ravel_pytree(product(params, unravel(v), d))[0]
        return hessian, jax.vmap(one)(vectors, dampings)

    hessian, got = products(params, vectors, dampings)
    hessian = np.asarray(hessian, np.float64)
    v64, d64 = np.asarray(vectors, np.float64), np.asarray(dampings, np.float64)
    np.testing.assert_allclose(got, v64 @ hessian.T + d64[:, None] * v64, rtol=1e-4, atol=1e-6)
    # Eager (no jit, no vmap) gives the same numbers.
    eager = ravel_pytree(product(params, unravel(vectors[2]), 0.2))[0]
    np.testing.assert_allclose(eager, got[2], rtol=1e-5, atol=1e-6)
    return hessian, vectors


@pytest.mark.parametrize("make_policy", [_linear_softmax, _tiny_network], ids=["linear", "mlp"])
def test_fisher_vector_product_equals_kl_hessian(make_policy):
    params, logits_fn = make_policy(jax.random.PRNGKey(0))
    kl_fn = _kl_fn(params, logits_fn)
    product = lambda p, v, d: pgkit.fisher_vector_product(kl_fn, p, v, damping=d)
    hessian, _ = _assert_products_equal_kl_hessian(product, kl_fn, params, seed=1)
    # Two independent oracles agree: the KL Hessian at θ_old is the Fisher information.
    np.testing.assert_allclose(hessian, _explicit_fisher(params, logits_fn), atol=2e-6)


def test_fisher_vector_product_damping_adds_damping_times_vector():
    params, logits_fn = _linear_softmax(jax.random.PRNGKey(2))
    kl_fn = _kl_fn(params, logits_fn)
    v = jax.tree.map(lambda x: jnp.ones_like(x) * 0.3, params)
    plain = pgkit.fisher_vector_product(kl_fn, params, v)
    damped = pgkit.fisher_vector_product(kl_fn, params, v, damping=0.25)
    for name in params:
        np.testing.assert_allclose(damped[name] - plain[name], 0.25 * v[name], rtol=1e-5,
                                   atol=1e-7)
    # The all-ones direction in the bias shifts every logit equally: in the Fisher's null space.
    null = {"w": jnp.zeros_like(params["w"]), "b": jnp.ones_like(params["b"])}
    flat, _ = ravel_pytree(pgkit.fisher_vector_product(kl_fn, params, null))
    np.testing.assert_allclose(flat, 0.0, atol=1e-6)


def _gaussian_network(key):
    """A tanh hidden layer for the mean and a state-independent log-std, over fixed states."""
    k1, k2, k3, k4 = jax.random.split(key, 4)
    params = {
        "hidden": 0.7 * jax.random.normal(k1, (OBS_DIM, 4)),
        "out": 0.7 * jax.random.normal(k2, (4, 2)),
        "log_std": 0.3 * jax.random.normal(k3, (2,)),
    }
    states = jax.random.normal(k4, (NUM_STATES, OBS_DIM))

    def outputs_fn(p):
        mean = jnp.tanh(states @ p["hidden"]) @ p["out"]
        return mean, jnp.broadcast_to(p["log_std"], mean.shape)

    return params, outputs_fn


@pytest.mark.parametrize(
    "make_policy, discrete",
    [(_linear_softmax, True), (_tiny_network, True), (_gaussian_network, False)],
    ids=["linear", "mlp", "gaussian"],
)
def test_gauss_newton_fisher_product_equals_kl_hessian(make_policy, discrete):
    params, outputs_fn = make_policy(jax.random.PRNGKey(3))
    old = jax.lax.stop_gradient(outputs_fn(params))
    if discrete:
        kl_fn = lambda p: _mean_kl(old, outputs_fn(p))
        fisher = pgkit.categorical_fisher_product
    else:
        kl_fn = lambda p: jnp.mean(pgkit.gaussian_kl(old[0], old[1], *outputs_fn(p)))
        fisher = pgkit.gaussian_fisher_product
    product = lambda p, v, d: pgkit.gauss_newton_fisher_product(outputs_fn, p, fisher, damping=d)(v)
    _, vectors = _assert_products_equal_kl_hessian(product, kl_fn, params, seed=4)
    # the same numbers as the forward-over-reverse Hessian-vector product
    unravel = ravel_pytree(params)[1]
    reference = pgkit.fisher_vector_product(kl_fn, params, unravel(vectors[2]), damping=0.2)
    np.testing.assert_allclose(
        ravel_pytree(product(params, unravel(vectors[2]), 0.2))[0], ravel_pytree(reference)[0], rtol=1e-5, atol=1e-6
    )


def test_output_fisher_products_are_the_kl_hessians_in_closed_form():
    logits = jnp.array([[0.3, -1.0, 2.0], [0.0, 0.0, 0.0]])
    tangents = jnp.array([[1.0, -2.0, 0.5], [0.2, 0.1, -0.3]])
    for z, u in zip(np.asarray(logits, np.float64), np.asarray(tangents, np.float64)):
        p = np.exp(z) / np.exp(z).sum()
        expected = (np.diag(p) - np.outer(p, p)) @ u
        np.testing.assert_allclose(pgkit.categorical_fisher_product(z, u), expected, rtol=1e-5, atol=1e-7)
        hessian = jax.hessian(lambda q: pgkit.categorical_kl(jnp.asarray(z), q))(jnp.asarray(z))
        np.testing.assert_allclose(hessian @ u, expected, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(  # batched over states
        pgkit.categorical_fisher_product(logits, tangents)[0],
        pgkit.categorical_fisher_product(logits[0], tangents[0]),
        rtol=1e-6,
    )

    mean, log_std = jnp.array([0.5, -1.0]), jnp.array([0.2, -0.7])
    u_mean, u_log_std = jnp.array([1.0, 2.0]), jnp.array([-0.5, 3.0])
    got = pgkit.gaussian_fisher_product((mean, log_std), (u_mean, u_log_std))
    np.testing.assert_allclose(got[0], np.asarray(u_mean) / np.exp(2 * np.asarray(log_std)), rtol=1e-5)
    np.testing.assert_allclose(got[1], 2 * np.asarray(u_log_std), rtol=1e-6)
    both = jnp.concatenate([mean, log_std])
    kl = lambda q: pgkit.gaussian_kl(mean, log_std, q[:2], q[2:])
    hessian = jax.hessian(kl)(both)
    np.testing.assert_allclose(
        hessian @ jnp.concatenate([u_mean, u_log_std]), jnp.concatenate(got), rtol=1e-4, atol=1e-6
    )


def test_empirical_fisher_vector_product_matches_explicit_matrix():
    k1, k2 = jax.random.split(jax.random.PRNGKey(3))
    scores = jax.random.normal(k1, (9, 6))
    v = jax.random.normal(k2, (6,))
    s64 = np.asarray(scores, np.float64)
    fisher = s64.T @ s64 / 9
    for damping in (0.0, 0.3):
        got = pgkit.empirical_fisher_vector_product(scores, v, damping=damping)
        expected = (fisher + damping * np.eye(6)) @ np.asarray(v, np.float64)
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    # Exact enumeration (probability-weighted rows) reproduces the true Fisher product.
    params, logits_fn = _linear_softmax(jax.random.PRNGKey(4))
    flat, unravel = ravel_pytree(params)
    logp = jax.nn.log_softmax(logits_fn(params))
    per_sample = jax.jacobian(lambda f: jax.nn.log_softmax(logits_fn(unravel(f))))(flat)
    rows = (jnp.sqrt(jnp.exp(logp) * NUM_ACTIONS)[..., None] * per_sample).reshape(-1, flat.size)
    u = jax.random.normal(k2, flat.shape)
    got = pgkit.empirical_fisher_vector_product(rows, u)
    # mean over S·K rows of (√(Kπ) ψ)(√(Kπ) ψ)ᵀ = (1/S) Σ_s Σ_a π ψψᵀ.
    np.testing.assert_allclose(
        got, _explicit_fisher(params, logits_fn) @ np.asarray(u, np.float64), rtol=1e-4, atol=1e-6
    )


def test_empirical_fisher_vector_product_jit_and_vmap():
    """A leading axis of K independent problems (scores [K, N, P], vectors [K, P], one damping
    each): vmap is bit-identical to a loop, eagerly and jitted; jit against eager to rounding
    only (XLA fuses Sᵀ(S v)/N + λ v, the last step into an FMA); a new damping does not retrace."""
    k1, k2 = jax.random.split(jax.random.PRNGKey(20))
    scores = jax.random.normal(k1, (3, 9, 6))
    vectors = jax.random.normal(k2, (3, 6))
    dampings = jnp.array([0.0, 0.3, 1.0])
    traces = []

    def fvp(s, v, d):
        traces.append(None)  # Python side effect: runs once per trace
        return pgkit.empirical_fisher_vector_product(s, v, damping=d)

    jitted = jax.jit(fvp)
    loop = jnp.stack([fvp(scores[i], vectors[i], dampings[i]) for i in range(3)])
    jit_loop = jnp.stack([jitted(scores[i], vectors[i], dampings[i]) for i in range(3)])
    # batched matrix products may accumulate in another order than one problem's: up to rounding
    ref.assert_equal_up_to_rounding(jax.vmap(fvp)(scores, vectors, dampings), loop, ulps=8)
    ref.assert_equal_up_to_rounding(jax.jit(jax.vmap(fvp))(scores, vectors, dampings), jit_loop, ulps=8)
    ref.assert_equal_up_to_rounding(jit_loop, loop, ulps=8)
    traces.clear()
    fresh = jax.jit(lambda s, v, d: fvp(s, v, d))  # a new function: its first call traces
    first, second = fresh(scores[0], vectors[0], 0.7), fresh(scores[0], vectors[0], 0.2)
    assert len(traces) == 1
    np.testing.assert_allclose(first - second, 0.5 * vectors[0], rtol=1e-5, atol=1e-6)
    # And the numbers are the product: (SᵀS/N + λI) v per problem.
    s64, v64 = np.asarray(scores, np.float64), np.asarray(vectors, np.float64)
    expected = [(s64[i].T @ s64[i] / 9 + float(dampings[i]) * np.eye(6)) @ v64[i] for i in range(3)]
    np.testing.assert_allclose(loop, expected, rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------- conjugate gradient


def _spd(key, n):
    m = jax.random.normal(key, (n, n))
    return m @ m.T / n + 0.5 * jnp.eye(n)


def _numpy_cg(a, b, iterations):
    """Textbook CG loop in float64 (Nocedal & Wright, algorithm 5.2), x0 = 0."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    x = np.zeros_like(b)
    r, p = b.copy(), b.copy()
    rdotr = r @ r
    for _ in range(iterations):
        ap = a @ p
        alpha = rdotr / (p @ ap)
        x = x + alpha * p
        r = r - alpha * ap
        new_rdotr = r @ r
        p = r + new_rdotr / rdotr * p
        rdotr = new_rdotr
    return x, rdotr


def test_conjugate_gradient_solves_flat_spd_system():
    k1, k2 = jax.random.split(jax.random.PRNGKey(5))
    n = 6
    a = _spd(k1, n)
    b = jax.random.normal(k2, (n,))
    cg = jax.jit(pgkit.conjugate_gradient, static_argnums=0, static_argnames="iterations")
    result = cg(lambda v: a @ v, b, iterations=2 * n)
    expected = np.linalg.solve(np.asarray(a, np.float64), np.asarray(b, np.float64))
    np.testing.assert_allclose(result.solution, expected, rtol=1e-4, atol=1e-5)
    assert result.residual_norm_squared.shape == ()
    assert float(result.residual_norm_squared) <= 1e-8
    true_residual = np.asarray(b) - np.asarray(a) @ np.asarray(result.solution)
    assert true_residual @ true_residual < 1e-8


def test_conjugate_gradient_solves_pytree_system():
    k1, k2 = jax.random.split(jax.random.PRNGKey(6))
    a = _spd(k1, 7)
    b_flat = jax.random.normal(k2, (7,))
    template = {"w": jnp.zeros((2, 3)), "b": jnp.zeros((1,))}
    _, unravel = ravel_pytree(template)
    matvec = lambda tree: unravel(a @ ravel_pytree(tree)[0])
    result = pgkit.conjugate_gradient(matvec, unravel(b_flat), iterations=14)
    assert jax.tree.structure(result.solution) == jax.tree.structure(template)
    got, _ = ravel_pytree(result.solution)
    expected = np.linalg.solve(np.asarray(a, np.float64), np.asarray(b_flat, np.float64))
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    assert float(result.residual_norm_squared) <= 1e-8


def test_conjugate_gradient_few_iterations_match_textbook_loop():
    k1, k2 = jax.random.split(jax.random.PRNGKey(7))
    n = 8
    a = _spd(k1, n)
    b = jax.random.normal(k2, (n,))
    for iterations in (1, 2, 3):
        result = pgkit.conjugate_gradient(lambda v: a @ v, b, iterations=iterations,
                                          residual_tol=0.0)
        x_ref, rdotr_ref = _numpy_cg(a, b, iterations)
        np.testing.assert_allclose(result.solution, x_ref, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(result.residual_norm_squared, rdotr_ref, rtol=1e-3)
        # Too few iterations: the residual is reported, positive, and is the true residual.
        true_residual = np.asarray(b, np.float64) - np.asarray(a, np.float64) @ np.asarray(
            result.solution, np.float64
        )
        assert float(result.residual_norm_squared) > 1e-3
        np.testing.assert_allclose(result.residual_norm_squared, true_residual @ true_residual,
                                   rtol=1e-3)


def test_conjugate_gradient_freezes_below_tolerance_and_handles_zero_rhs():
    a = _spd(jax.random.PRNGKey(8), 4)
    b = jnp.array([1.0, -2.0, 0.5, 0.0])
    # A tolerance above ‖b‖² stops before the first step.
    result = pgkit.conjugate_gradient(lambda v: a @ v, b, iterations=5, residual_tol=100.0)
    np.testing.assert_allclose(result.solution, 0.0)
    np.testing.assert_allclose(result.residual_norm_squared, float(b @ b), rtol=1e-6)
    # Converged early: extra iterations change nothing (and produce no NaN).
    r4 = pgkit.conjugate_gradient(lambda v: a @ v, b, iterations=4, residual_tol=1e-10)
    r20 = pgkit.conjugate_gradient(lambda v: a @ v, b, iterations=20, residual_tol=1e-10)
    assert np.all(np.isfinite(np.asarray(r20.solution)))
    np.testing.assert_allclose(r20.solution, r4.solution, rtol=1e-4, atol=1e-6)
    zero = pgkit.conjugate_gradient(lambda v: a @ v, jnp.zeros(4), iterations=3)
    np.testing.assert_array_equal(zero.solution, np.zeros(4))
    assert float(zero.residual_norm_squared) == 0.0


def test_conjugate_gradient_vmap_matches_loop():
    k1, k2 = jax.random.split(jax.random.PRNGKey(9))
    a = _spd(k1, 5)
    bs = jax.random.normal(k2, (3, 5))
    solve = lambda b: pgkit.conjugate_gradient(lambda v: a @ v, b, iterations=5)
    batched = jax.vmap(solve)(bs)
    jit_batched = jax.jit(jax.vmap(solve))(bs)
    single_solve = jax.jit(solve)
    # vmap against a loop, eager or jitted, and jit against eager: the same iterates up to
    # rounding (batched products may accumulate in another order; CG carries it along)
    for i in range(3):
        for result in (solve(bs[i]), single_solve(bs[i])):
            for got in (batched, jit_batched):
                np.testing.assert_allclose(got.solution[i], result.solution, rtol=1e-5, atol=1e-6)
                np.testing.assert_allclose(
                    got.residual_norm_squared[i], result.residual_norm_squared, rtol=1e-3, atol=1e-9
                )


# --------------------------------------------------------------------------- natural step


def test_natural_step_kl_matches_trust_region_radius():
    params, logits_fn = _linear_softmax(jax.random.PRNGKey(10))
    kl_fn = _kl_fn(params, logits_fn)
    flat, unravel = ravel_pytree(params)
    # A policy gradient of an exact surrogate E_s Σ_a π(a|s) A(s, a) with random advantages.
    advantages = jax.random.normal(jax.random.PRNGKey(11), (NUM_STATES, NUM_ACTIONS))
    surrogate = lambda p: jnp.mean(jnp.sum(jax.nn.softmax(logits_fn(p)) * advantages, -1))
    grad = jax.grad(surrogate)(params)
    fvp = lambda v: pgkit.fisher_vector_product(kl_fn, params, v, damping=1e-3)

    @jax.jit
    def step_for(max_kl):
        x = pgkit.conjugate_gradient(fvp, grad, iterations=flat.size).solution
        return pgkit.natural_step(x, fvp(x), max_kl=max_kl)

    for max_kl in (1e-3, 1e-4):
        step = step_for(jnp.asarray(max_kl))
        quadratic = 0.5 * ravel_pytree(step)[0] @ ravel_pytree(fvp(step))[0]
        np.testing.assert_allclose(quadratic, max_kl, rtol=1e-4)
        new_params = jax.tree.map(jnp.add, params, step)
        true_kl = float(_mean_kl(logits_fn(params), logits_fn(new_params)))
        assert abs(true_kl - max_kl) < 0.1 * max_kl, (true_kl, max_kl)
        # An ascent direction: the surrogate improves.
        assert float(surrogate(new_params)) > float(surrogate(params))


def test_natural_step_closed_form_jit_vmap():
    x = {"a": jnp.array([1.0, -2.0]), "b": jnp.array([[0.5]])}
    fx = {"a": jnp.array([3.0, -1.0]), "b": jnp.array([[2.0]])}  # xᵀFx = 3 + 2 + 1 = 6
    traces = []

    @jax.jit
    def step(max_kl):
        traces.append(None)
        return pgkit.natural_step(x, fx, max_kl=max_kl)

    for max_kl in (0.03, 0.12):
        got = step(jnp.asarray(max_kl))
        scale = np.sqrt(2 * max_kl / 6.0)
        np.testing.assert_allclose(got["a"], scale * np.array([1.0, -2.0]), rtol=1e-6)
        np.testing.assert_allclose(got["b"], scale * np.array([[0.5]]), rtol=1e-6)
    assert len(traces) == 1  # a new float max_kl does not retrace
    swept = jax.vmap(step)(jnp.array([0.03, 0.12]))
    eager = pgkit.natural_step(x, fx, max_kl=0.12)
    ref.assert_equal_up_to_rounding(swept["a"][1], eager["a"], ulps=8)  # jitted vs eager
    ref.assert_equal_up_to_rounding(swept["b"][0], pgkit.natural_step(x, fx, max_kl=0.03)["b"], ulps=8)


def test_natural_step_zero_direction_gives_zero_step():
    zero = {"a": jnp.zeros(3)}
    step = pgkit.natural_step(zero, zero, max_kl=0.01)
    np.testing.assert_array_equal(step["a"], np.zeros(3))


# --------------------------------------------------------------------------- line search

quadratic_kl = lambda p: 0.5 * jnp.sum(p**2)


def test_line_search_accepts_good_full_step():
    step = jnp.array([0.1, -0.2])
    result = pgkit.backtracking_line_search(
        lambda p: p[0] - p[1], quadratic_kl, jnp.zeros(2), step, max_kl=0.1
    )
    assert bool(result.accepted)
    assert int(result.num_backtracks) == 0
    np.testing.assert_allclose(result.params, step)
    np.testing.assert_allclose(result.step_fraction, 1.0)
    np.testing.assert_allclose(result.surrogate_improvement, 0.3, rtol=1e-6)
    np.testing.assert_allclose(result.kl, 0.025, rtol=1e-6)


@pytest.mark.parametrize(
    "ratio, expected_backtracks",
    # KL at fraction f is ½ f² (step 1): needs f ≤ √0.2 ≈ 0.447.
    [(0.5, 2), (0.8, 4), (0.3, 1)],
)
def test_line_search_counts_kl_backtracks(ratio, expected_backtracks):
    result = pgkit.backtracking_line_search(
        lambda p: p[0], quadratic_kl, jnp.zeros(1), jnp.ones(1),
        max_kl=0.1, backtrack_ratio=ratio,
    )
    assert bool(result.accepted)
    assert int(result.num_backtracks) == expected_backtracks
    np.testing.assert_allclose(result.params, [ratio**expected_backtracks], rtol=1e-6)
    np.testing.assert_allclose(result.step_fraction, ratio**expected_backtracks, rtol=1e-6)


def test_line_search_counts_surrogate_backtracks():
    # Surrogate -(p - 1)²: the full step 5 overshoots (−16), 2.5 too (−2.25), 1.25 improves.
    result = pgkit.backtracking_line_search(
        lambda p: -jnp.sum((p - 1.0) ** 2), lambda p: jnp.zeros(()), jnp.zeros(1),
        jnp.array([5.0]), max_kl=0.1,
    )
    assert bool(result.accepted) and int(result.num_backtracks) == 2
    np.testing.assert_allclose(result.params, [1.25])
    np.testing.assert_allclose(result.surrogate_improvement, 1.0 - 0.0625, rtol=1e-6)


def test_line_search_rejects_when_every_step_fails():
    params = {"w": jnp.array([0.3, -0.7])}
    step = {"w": jnp.array([1.0, 1.0])}
    for surrogate, max_kl in [
        (lambda p: -jnp.sum(p["w"]), 10.0),           # every step lowers the surrogate
        (lambda p: jnp.sum(p["w"]), 1e-12),           # every step breaks the KL (ratio^9 ≈ 0.002)
        (lambda p: jnp.sum(p["w"]) * jnp.nan, 10.0),  # NaN surrogate rejects
    ]:
        kl = lambda p: 0.5 * jnp.sum((p["w"] - params["w"]) ** 2)
        result = pgkit.backtracking_line_search(surrogate, kl, params, step, max_kl=max_kl,
                                                max_backtracks=10)
        assert not bool(result.accepted)
        np.testing.assert_array_equal(result.params["w"], params["w"])
        assert int(result.num_backtracks) == 10
        assert float(result.step_fraction) == 0.0
        assert float(result.surrogate_improvement) == 0.0 and float(result.kl) == 0.0


def _numpy_line_search(g, h, k, step, max_kl, ratio, max_backtracks):
    surrogate = lambda p: g @ p - 0.5 * p @ h @ p
    for j in range(max_backtracks):
        candidate = ratio**j * step
        if surrogate(candidate) - surrogate(np.zeros_like(step)) >= 0 and \
                0.5 * candidate @ k @ candidate <= max_kl:
            return True, j, candidate
    return False, max_backtracks, np.zeros_like(step)


def test_line_search_random_problems_match_loop_and_respect_constraints():
    n, dim = 24, 3
    keys = jax.random.split(jax.random.PRNGKey(12), 4)
    gs = jax.random.normal(keys[0], (n, dim))
    hs = jax.vmap(lambda k: _spd(k, dim))(jax.random.split(keys[1], n))
    ks = jax.vmap(lambda k: _spd(k, dim))(jax.random.split(keys[2], n))
    steps = jnp.linspace(0.05, 3.0, n)[:, None] * jax.random.normal(keys[3], (n, dim))
    max_kl = jnp.linspace(0.01, 2.0, n)

    def search(g, h, k, step, delta):
        return pgkit.backtracking_line_search(
            lambda p: g @ p - 0.5 * p @ h @ p, lambda p: 0.5 * p @ k @ p, jnp.zeros(dim), step,
            max_kl=delta, backtrack_ratio=0.6, max_backtracks=8,
        )

    batched = jax.jit(jax.vmap(search))(gs, hs, ks, steps, max_kl)
    outcomes = set()
    for i in range(n):
        accepted, j, candidate = _numpy_line_search(
            *(np.asarray(x[i], np.float64) for x in (gs, hs, ks, steps, max_kl)), 0.6, 8
        )
        outcomes.add((accepted, j > 0))
        assert bool(batched.accepted[i]) == accepted
        assert int(batched.num_backtracks[i]) == j
        np.testing.assert_allclose(batched.params[i], candidate, rtol=1e-5, atol=1e-6)
        # Never a KL above the bound, never a worse surrogate.
        assert float(batched.kl[i]) <= float(max_kl[i])
        assert float(batched.surrogate_improvement[i]) >= 0.0
    # The random problems exercise full acceptance, backtracking and rejection.
    assert outcomes == {(True, False), (True, True), (False, True)}, outcomes
    # An eager, un-batched call agrees with the jitted vmap (a problem that backtracks).
    i = int(np.argmax(np.asarray(batched.accepted) & (np.asarray(batched.num_backtracks) > 0)))
    single = search(gs[i], hs[i], ks[i], steps[i], max_kl[i])
    np.testing.assert_allclose(single.params, batched.params[i], rtol=1e-6, atol=1e-7)
    assert int(single.num_backtracks) == int(batched.num_backtracks[i]) > 0


def test_trpo_step_on_softmax_policy():
    params, logits_fn = _linear_softmax(jax.random.PRNGKey(13))
    kl_fn = _kl_fn(params, logits_fn)
    advantages = jax.random.normal(jax.random.PRNGKey(14), (NUM_STATES, NUM_ACTIONS))
    old_probs = jax.nn.softmax(logits_fn(params))
    # Importance-sampled surrogate with exact expectation over actions: E_s Σ_a π_old (π/π_old) A.
    surrogate = lambda p: jnp.mean(
        jnp.sum(old_probs * jax.nn.softmax(logits_fn(p)) / old_probs * advantages, -1)
    )

    @functools.partial(jax.jit, static_argnames="iterations")
    def trpo_update(params, max_kl, *, iterations):
        fvp = lambda v: pgkit.fisher_vector_product(kl_fn, params, v, damping=1e-2)
        g = jax.grad(surrogate)(params)
        x = pgkit.conjugate_gradient(fvp, g, iterations=iterations).solution
        step = pgkit.natural_step(x, fvp(x), max_kl=max_kl)
        return pgkit.backtracking_line_search(surrogate, kl_fn, params, step, max_kl=max_kl)

    for max_kl in (0.01, 0.5):
        result = trpo_update(params, jnp.asarray(max_kl), iterations=10)
        assert bool(result.accepted)
        true_kl = float(_mean_kl(logits_fn(params), logits_fn(result.params)))
        assert true_kl <= max_kl
        np.testing.assert_allclose(result.kl, true_kl, rtol=1e-4, atol=1e-7)
        assert float(surrogate(result.params)) > float(surrogate(params))
        assert float(result.kl) > 0.25 * max_kl  # a real step, not a trivial one


# --------------------------------------------------------------------------- compatible features


def _tabular_mdp(key, gamma=0.9):
    """Random MDP with 3 states, 3 actions and 2-d state features, solved exactly."""
    num_states, num_actions, dim = 3, 3, 2
    k1, k2, k3, k4 = jax.random.split(key, 4)
    transitions = jax.nn.softmax(2.0 * jax.random.normal(k1, (num_states, num_actions,
                                                              num_states)))
    rewards = jax.random.normal(k2, (num_states, num_actions))
    features = jax.random.normal(k3, (num_states, dim))
    rho0 = jnp.ones(num_states) / num_states

    def solve(probs):
        p_pi = jnp.einsum("sa,sat->st", probs, transitions)
        r_pi = jnp.sum(probs * rewards, -1)
        values = jnp.linalg.solve(jnp.eye(num_states) - gamma * p_pi, r_pi)
        q = rewards + gamma * transitions @ values
        visitation = (1 - gamma) * jnp.linalg.solve((jnp.eye(num_states) - gamma * p_pi).T, rho0)
        return values, q, visitation

    return features, solve, rho0, jax.random.normal(k4, (dim, num_actions))


@pytest.mark.parametrize("reference_action", [True, False], ids=["identified", "overparam"])
def test_compatible_features_weights_equal_natural_gradient(reference_action):
    gamma = 0.9
    features, solve, rho0, theta = _tabular_mdp(jax.random.PRNGKey(15), gamma)
    if reference_action:
        theta = theta[:, 1:]  # action 0 has logit 0: the Fisher is non-singular

    def log_policy(th):
        logits = features @ th
        if reference_action:
            logits = jnp.concatenate([jnp.zeros((logits.shape[0], 1)), logits], -1)
        return jax.nn.log_softmax(logits)

    @jax.jit
    def exact_quantities(theta):
        objective = lambda th: rho0 @ solve(jnp.exp(log_policy(th)))[0]
        probs = jnp.exp(log_policy(theta))
        values, q, visitation = solve(probs)
        scores = jax.jacobian(log_policy)(theta).reshape(probs.shape + (-1,))  # [S, A, P]
        return jax.grad(objective)(theta), scores, q - values[:, None], visitation[:, None] * probs

    policy_gradient, scores, advantages, weights = exact_quantities(theta)
    policy_gradient = np.asarray(policy_gradient, np.float64).ravel()  # exact ∇J
    n_params = scores.shape[-1]
    fit = jax.jit(pgkit.compatible_features_weights)
    w = fit(scores.reshape(-1, n_params), advantages.ravel(), weights.ravel())
    s64, q64 = np.asarray(scores, np.float64), np.asarray(weights, np.float64)
    fisher = np.einsum("sa,sap,saq->pq", q64, s64, s64)
    # Policy gradient theorem: ∇J = E_{d,π}[ψ A] / (1 - γ), so the fit solves F w = (1 - γ)∇J.
    g = (1 - gamma) * policy_gradient
    np.testing.assert_allclose(fisher @ np.asarray(w, np.float64), g, atol=2e-5)
    expected = np.linalg.pinv(fisher, rcond=1e-8) @ g
    scale = np.abs(expected).max()
    np.testing.assert_allclose(w, expected, atol=2e-4 * scale)
    if reference_action:
        assert np.linalg.matrix_rank(fisher) == n_params
        np.testing.assert_allclose(w, np.linalg.solve(fisher, g), atol=2e-4 * scale)
    else:
        assert np.linalg.matrix_rank(fisher, tol=1e-8) < n_params  # truly singular: min-norm
    # Ridge: (F + λI) w = g.
    w_ridge = fit(scores.reshape(-1, n_params), advantages.ravel(), weights.ravel(), ridge=0.1)
    np.testing.assert_allclose(w_ridge, np.linalg.solve(fisher + 0.1 * np.eye(n_params), g),
                               atol=2e-5)


def test_compatible_features_weights_equal_cg_on_empirical_fisher():
    k1, k2 = jax.random.split(jax.random.PRNGKey(16))
    scores = jax.random.normal(k1, (40, 5))
    advantages = jax.random.normal(k2, (40,))
    g = scores.T @ advantages / 40
    w = pgkit.compatible_features_weights(scores, advantages, ridge=0.2)
    cg = pgkit.conjugate_gradient(
        lambda v: pgkit.empirical_fisher_vector_product(scores, v, damping=0.2), g, iterations=10
    )
    np.testing.assert_allclose(w, cg.solution, rtol=1e-4, atol=1e-5)
    # No gradient into the advantages by default (w is linear in them: ∂Σw/∂A = S(F̂+λI)⁻¹1/N
    # would be non-zero without the stop-gradient).
    grad_adv = jax.grad(lambda a: jnp.sum(pgkit.compatible_features_weights(scores, a)))
    np.testing.assert_array_equal(grad_adv(advantages), np.zeros(40))
    # Invariance: vmap over a batch of problems (jit is exercised by the exact-expectation test).
    stacked = jax.vmap(pgkit.compatible_features_weights)(
        jnp.stack([scores, -scores]), jnp.stack([advantages, advantages])
    )
    np.testing.assert_allclose(stacked[1], -stacked[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(stacked[0], pgkit.compatible_features_weights(scores, advantages), rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------- bad input


def test_bad_input_raises():
    params = {"a": jnp.zeros(2), "b": jnp.zeros(3)}
    kl = lambda p: jnp.sum(p["a"] ** 2)
    with pytest.raises(ValueError, match="vector"):
        pgkit.fisher_vector_product(kl, params, {"a": jnp.zeros(2)})
    with pytest.raises(ValueError, match="vector"):
        pgkit.fisher_vector_product(kl, params, {"a": jnp.zeros(2), "b": jnp.zeros(4)})
    with pytest.raises(ValueError, match="score_vectors"):
        pgkit.empirical_fisher_vector_product(jnp.zeros(3), jnp.zeros(3))
    outputs_fn = lambda p: jnp.stack([p["a"], p["a"]])  # [2 states, 2 actions]
    fvp = pgkit.gauss_newton_fisher_product(outputs_fn, params, pgkit.categorical_fisher_product)
    with pytest.raises(ValueError, match="vector"):
        fvp({"a": jnp.zeros(2)})
    with pytest.raises(ValueError, match="leading axis N"):
        pgkit.gauss_newton_fisher_product(lambda p: (p["a"], p["a"][0]), params, pgkit.gaussian_fisher_product)
    with pytest.raises(ValueError, match="logits"):
        pgkit.categorical_fisher_product(jnp.zeros((2, 3)), jnp.zeros((2, 2)))
    with pytest.raises(ValueError, match="mean, log_std"):
        pgkit.gaussian_fisher_product((jnp.zeros(2), jnp.zeros(3)), (jnp.zeros(2), jnp.zeros(2)))
    with pytest.raises(ValueError, match="pairs"):
        pgkit.gaussian_fisher_product(jnp.zeros(2), jnp.zeros(2))
    with pytest.raises(ValueError, match="vector"):
        pgkit.empirical_fisher_vector_product(jnp.zeros((4, 3)), jnp.zeros(4))
    with pytest.raises(ValueError, match="iterations"):
        pgkit.conjugate_gradient(lambda v: v, jnp.ones(2), iterations=2.0)
    with pytest.raises(ValueError, match="fisher_direction"):
        pgkit.natural_step(params, {"a": jnp.zeros(2)}, max_kl=0.1)
    with pytest.raises(ValueError, match="max_backtracks"):
        pgkit.backtracking_line_search(kl, kl, params, params, max_kl=0.1, max_backtracks=0)
    with pytest.raises(ValueError, match="full_step"):
        pgkit.backtracking_line_search(kl, kl, params, {"a": jnp.zeros(2)}, max_kl=0.1)
    with pytest.raises(ValueError, match="surrogate_fn"):
        pgkit.backtracking_line_search(lambda p: p["a"], kl, params, params, max_kl=0.1)
    with pytest.raises(ValueError, match="advantages"):
        pgkit.compatible_features_weights(jnp.zeros((4, 3)), jnp.zeros(3))
    with pytest.raises(ValueError, match="weights"):
        pgkit.compatible_features_weights(jnp.zeros((4, 3)), jnp.zeros(4), jnp.ones(3))


# ----------------------------------------------------------------------------- natural_gradient_step


def _quadratic_problem(key, size=4):
    """Surrogate gᵀθ, mean KL ½θᵀFθ at θ_old = 0: the natural step has a closed form."""
    g_key, f_key = jax.random.split(key)
    g = jax.random.normal(g_key, (size,))
    a = jax.random.normal(f_key, (size, size))
    fisher = a @ a.T + size * jnp.eye(size)
    return g, fisher, (lambda p: g @ p), (lambda p: 0.5 * p @ fisher @ p), (lambda v: fisher @ v)


def test_natural_gradient_step_is_the_closed_form_trust_region_step():
    g, fisher, surrogate_fn, kl_fn, fvp = _quadratic_problem(jax.random.key(0))
    result = jax.jit(lambda: pgkit.natural_gradient_step(surrogate_fn, kl_fn, jnp.zeros(4), fvp, max_kl=0.02,
                                                         cg_iterations=4))()
    f, gn = np.asarray(fisher, np.float64), np.asarray(g, np.float64)
    x = np.linalg.solve(f, gn)
    step = np.sqrt(2 * 0.02 / (x @ f @ x)) * x
    np.testing.assert_allclose(result.params, step, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(result.direction, x, rtol=1e-4)
    np.testing.assert_allclose(result.gradient, gn, rtol=1e-6)
    np.testing.assert_allclose(result.kl, 0.02, rtol=1e-4)  # the quadratic model is the KL here
    np.testing.assert_allclose(result.surrogate_improvement, gn @ step, rtol=1e-4)
    assert bool(result.accepted) and int(result.num_backtracks) == 0 and float(result.step_fraction) == 1.0
    assert float(result.cg_residual_norm_squared) < 1e-8


def test_natural_gradient_step_with_line_search_equals_its_composition_and_backtracks():
    g, fisher, surrogate_fn, kl_fn, fvp = _quadratic_problem(jax.random.key(1))
    params = jnp.zeros(4)
    # the sampled KL is 10x its quadratic model: ρ = 0.5 needs ρ²ʲ·10 ≤ 1, j = 2
    true_kl = lambda p: 10.0 * kl_fn(p)
    result = pgkit.natural_gradient_step(surrogate_fn, true_kl, params, fvp, max_kl=0.01, cg_iterations=4,
                                         line_search=True, backtrack_ratio=0.5, max_backtracks=5)
    x = pgkit.conjugate_gradient(fvp, jax.grad(surrogate_fn)(params), iterations=4).solution
    full = pgkit.natural_step(x, fvp(x), max_kl=0.01)
    search = pgkit.backtracking_line_search(surrogate_fn, true_kl, params, full, max_kl=0.01, backtrack_ratio=0.5,
                                            max_backtracks=5)
    np.testing.assert_array_equal(result.params, search.params)
    np.testing.assert_array_equal(result.full_step, full)
    assert int(result.num_backtracks) == 2 and float(result.step_fraction) == 0.25 and bool(result.accepted)
    assert float(result.kl) <= 0.01
    # no candidate fits: θ is kept, not accepted
    kept = pgkit.natural_gradient_step(surrogate_fn, true_kl, params, fvp, max_kl=0.01, cg_iterations=4,
                                       line_search=True, backtrack_ratio=0.5, max_backtracks=1)
    np.testing.assert_array_equal(kept.params, params)
    assert not bool(kept.accepted) and float(kept.surrogate_improvement) == 0.0


def test_natural_gradient_step_takes_a_given_direction_and_vmaps():
    g, fisher, surrogate_fn, kl_fn, fvp = _quadratic_problem(jax.random.key(2))
    direction = jnp.array([1.0, 0.0, 0.0, 0.0])
    given = pgkit.natural_gradient_step(surrogate_fn, kl_fn, jnp.zeros(4), fvp, max_kl=0.02, direction=direction)
    np.testing.assert_allclose(given.params, np.sqrt(2 * 0.02 / float(fisher[0, 0])) * np.asarray(direction), rtol=1e-5)
    assert given.cg_residual_norm_squared is None
    with pytest.raises(ValueError, match="direction"):
        pgkit.natural_gradient_step(surrogate_fn, kl_fn, jnp.zeros(4), fvp, max_kl=0.02, direction={"a": direction})
    with pytest.raises(ValueError, match="line_search"):
        pgkit.natural_gradient_step(surrogate_fn, kl_fn, jnp.zeros(4), fvp, max_kl=0.02, line_search=1)
    # vmap over radii equals one call per radius. The true KL is 1.5x the quadratic model, so the
    # full step (model KL = max_kl) is rejected and the first backtrack (KL 0.375 max_kl) accepted:
    # no candidate sits on the boundary, where rounding alone would decide acceptance.
    wider_kl = lambda p: 1.5 * kl_fn(p)  # noqa: E731
    radii = jnp.array([0.01, 0.04])

    def step(radius):
        return pgkit.natural_gradient_step(surrogate_fn, wider_kl, jnp.zeros(4), fvp, max_kl=radius, cg_iterations=4,
                                           line_search=True)

    batched = jax.vmap(step)(radii)
    np.testing.assert_array_equal(batched.num_backtracks, 1)
    for i, radius in enumerate(radii):
        np.testing.assert_allclose(batched.params[i], step(radius).params, rtol=1e-6)


def test_natural_gradient_step_jit_equals_eager_without_retracing_and_checks_cg_iterations():
    g, fisher, surrogate_fn, kl_fn, fvp = _quadratic_problem(jax.random.key(3))
    traces = []

    @jax.jit
    def step(max_kl, ratio):
        traces.append(None)
        return pgkit.natural_gradient_step(surrogate_fn, lambda p: 4.0 * kl_fn(p), jnp.zeros(4), fvp,
                                           max_kl=max_kl, cg_iterations=4, line_search=True,
                                           backtrack_ratio=ratio, max_backtracks=6)

    for max_kl, ratio in ((0.01, 0.5), (0.03, 0.8)):
        jitted = step(jnp.asarray(max_kl), jnp.asarray(ratio))
        eager = pgkit.natural_gradient_step(surrogate_fn, lambda p: 4.0 * kl_fn(p), jnp.zeros(4), fvp,
                                            max_kl=max_kl, cg_iterations=4, line_search=True,
                                            backtrack_ratio=ratio, max_backtracks=6)
        np.testing.assert_allclose(jitted.params, eager.params, rtol=1e-6, atol=1e-8)
        assert int(jitted.num_backtracks) == int(eager.num_backtracks) >= 1  # the KL is 4x its model
        assert float(jitted.kl) <= max_kl
    assert len(traces) == 1  # new float max_kl and backtrack_ratio do not retrace
    with pytest.raises(ValueError, match="cg_iterations"):
        pgkit.natural_gradient_step(surrogate_fn, kl_fn, jnp.zeros(4), fvp, max_kl=0.02, cg_iterations=2.0)


# ----------------------------------------------------------------------------- episodic natural actor-critic


def _segment_sums_loop(scores, rewards, discounts, dones, features, next_features):
    """NumPy oracle of episode_segment_sums: per stream, restart the sums after every done."""
    T, E, P = scores.shape
    score_sums, returns = np.zeros((T, E, P)), np.zeros((T, E))
    baseline = np.zeros((T, E, features.shape[-1]))
    for e in range(E):
        start = 0
        for t in range(T):
            if t > 0 and dones[t - 1, e]:
                start = t
            coefficient = 1.0
            for u in range(start, t + 1):
                score_sums[t, e] += coefficient * scores[u, e]
                returns[t, e] += coefficient * rewards[u, e]
                coefficient *= discounts[u, e]  # after the loop: Γ_{t+1}
            baseline[t, e] = features[start, e] - coefficient * next_features[t, e]
    return score_sums, returns, baseline


def test_episode_segment_sums_match_a_numpy_loop_and_split_at_a_done():
    data = ref.random_rollout(7, T=13, batch_shape=(3,))
    rng = np.random.default_rng(8)
    scores = rng.normal(size=(13, 3, 2)).astype(np.float32)
    features = rng.normal(size=(13, 3, 2)).astype(np.float32)
    next_features = rng.normal(size=(13, 3, 2)).astype(np.float32)
    args = (scores, data["rewards"], data["discounts"], data["dones"] > 0, features, next_features)
    segments = jax.jit(pgkit.episode_segment_sums)(*args)
    expected = _segment_sums_loop(*args)
    for actual, desired in zip(segments[:3], expected):
        np.testing.assert_allclose(actual, desired, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(segments.ends, (data["dones"] > 0) | (np.arange(13) == 12)[:, None])
    # a rollout split after a done is its two halves; a single stream is a column of the batch
    split = int(np.flatnonzero(data["dones"][:, 0])[0]) + 1
    first = pgkit.episode_segment_sums(*(a[:split, :1] for a in args))
    second = pgkit.episode_segment_sums(*(a[split:, :1] for a in args))
    for whole, a, b in zip(segments[:3], first[:3], second[:3]):
        np.testing.assert_allclose(whole[:, :1], np.concatenate([a, b]), rtol=1e-6, atol=1e-6)
    # default features: a constant 1, so b = 1 − Γ_{t+1} (1 on a terminated step)
    constant = pgkit.episode_segment_sums(*args[:4])
    ones = np.ones((13, 3, 1), np.float32)
    np.testing.assert_allclose(constant.baseline_features, _segment_sums_loop(*args[:4], ones, ones)[2], atol=1e-6)
    np.testing.assert_array_equal(constant.baseline_features[data["terminated"]], 1.0)
    with pytest.raises(ValueError, match="rewards"):
        pgkit.episode_segment_sums(scores, data["rewards"][:5], data["discounts"], data["dones"])
    with pytest.raises(ValueError, match="next_state_features"):
        pgkit.episode_segment_sums(*args[:5])
    with pytest.raises(ValueError, match="state_features"):
        pgkit.episode_segment_sums(*args[:4], features[..., 0], next_features[..., 0])


def _least_squares_oracle(score_sums, returns, baseline, weights, ridge):
    """min Σ q (R − Ψw − Bv)² + ridge‖w‖² in float64, as one augmented least-squares problem."""
    q = weights / weights.sum()
    P, K = score_sums.shape[1], baseline.shape[1]
    design = np.concatenate([np.sqrt(q)[:, None] * np.concatenate([score_sums, baseline], 1),
                             np.concatenate([np.sqrt(ridge) * np.eye(P), np.zeros((P, K))], 1)])
    response = np.concatenate([np.sqrt(q) * returns, np.zeros(P)])
    solution = np.linalg.lstsq(design, response, rcond=None)[0]
    return solution[:P], solution[P:]


@pytest.mark.parametrize("iterations", [None, 12], ids=["exact", "cg"])
def test_episodic_natural_actor_critic_weights_are_least_squares(iterations):
    rng = np.random.default_rng(9)
    M, P = 30, 5
    score_sums = rng.normal(size=(M, P)).astype(np.float32)
    baseline = np.concatenate([np.ones((M, 1)), rng.normal(size=(M, 1))], 1).astype(np.float32)
    returns = (score_sums @ rng.normal(size=P) + 3.0 * baseline[:, 1] + 2.0 + rng.normal(size=M)).astype(np.float32)
    weights = rng.random(M).astype(np.float32) * (rng.random(M) < 0.7)  # some rows left out
    fit = jax.jit(pgkit.episodic_natural_actor_critic_weights, static_argnames="iterations")(
        score_sums, returns, baseline, weights, ridge=0.3, iterations=iterations
    )
    w, v = _least_squares_oracle(*(np.asarray(a, np.float64) for a in (score_sums, returns, baseline, weights)), 0.3)
    np.testing.assert_allclose(fit.natural_gradient, w, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(fit.baseline_weights, v, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(fit.residuals, returns - score_sums @ w - baseline @ v, rtol=1e-4, atol=1e-4)
    # the default: uniform weights and a constant baseline
    default = pgkit.episodic_natural_actor_critic_weights(score_sums, returns, iterations=iterations)
    w1, v1 = _least_squares_oracle(score_sums.astype(np.float64), returns.astype(np.float64), np.ones((M, 1)),
                                   np.ones(M), 0.0)
    np.testing.assert_allclose(default.natural_gradient, w1, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(default.baseline_weights, v1, rtol=1e-4, atol=1e-4)
    # no gradient into the returns by default; vmap over problems
    grad = jax.grad(lambda r: jnp.sum(pgkit.episodic_natural_actor_critic_weights(
        score_sums, r, iterations=iterations).natural_gradient))(returns)
    np.testing.assert_array_equal(grad, np.zeros(M))
    stacked = jax.vmap(lambda r: pgkit.episodic_natural_actor_critic_weights(
        score_sums, r, baseline, weights, ridge=0.3, iterations=iterations).natural_gradient)(
        jnp.stack([returns, -returns]))
    np.testing.assert_allclose(stacked[0], w, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(stacked[1], -w, rtol=1e-4, atol=1e-4)


def _gaussian_streams(key, *, num_streams, num_steps, mean, log_std, target, gamma, noise, p_truncate):
    """A state-free task, continuing: a ~ N(μ, σ²) at every step, reward exp(−(a − c)²/2) + noise,
    episodes truncated at random; the scores of θ = (μ, log σ)."""
    k1, k2, k3 = jax.random.split(key, 3)
    shape = (num_steps, num_streams)
    std = jnp.exp(log_std)
    eps = jax.random.normal(k1, shape)
    actions = mean + std * eps
    rewards = jnp.exp(-0.5 * (actions - target) ** 2) + noise * jax.random.normal(k2, shape)
    scores = jnp.stack([eps / std, eps**2 - 1.0], axis=-1)  # ∇_(μ, log σ) log N(a; μ, σ²)
    dones = jax.random.uniform(k3, shape) < p_truncate
    return scores, rewards, jnp.full(shape, gamma), dones


def test_episodic_natural_actor_critic_weights_are_the_natural_gradient_in_expectation():
    # Every step draws a ~ N(μ, σ²): the Fisher per step is diag(1/σ², 2) and the expected reward
    # E[exp(−(a − c)²/2)] = exp(−(μ − c)²/(2(1 + σ²))) / sqrt(1 + σ²), so F⁻¹∇J (both summed over
    # the discounted visits, which cancel) has a closed form. Truncated segments bootstrap from
    # V = E[r]/(1 − γ): with φ = 1 the baseline feature 1 − γᴴ makes v = V.
    mean, log_std, target, gamma = 0.3, jnp.log(0.8), 1.0, 0.9

    def expected_reward(theta):
        variance = 1.0 + jnp.exp(2.0 * theta[1])
        return jnp.exp(-0.5 * (theta[0] - target) ** 2 / variance) / jnp.sqrt(variance)

    theta = jnp.array([mean, log_std])
    natural = np.asarray(jax.grad(expected_reward)(theta)) / np.array([1.0 / 0.8**2, 2.0])
    value = float(expected_reward(theta)) / (1.0 - gamma)

    @jax.jit
    def estimate(key):
        scores, rewards, discounts, dones = _gaussian_streams(
            key, num_streams=8, num_steps=120, mean=mean, log_std=log_std, target=target, gamma=gamma,
            noise=0.1, p_truncate=0.05,
        )
        segments = pgkit.episode_segment_sums(scores, rewards, discounts, dones)
        fit = pgkit.episodic_natural_actor_critic_weights(
            segments.score_sums.reshape(-1, 2), segments.returns.reshape(-1),
            segments.baseline_features.reshape(-1, 1), segments.ends.reshape(-1).astype(jnp.float32),
        )
        return jnp.concatenate([fit.natural_gradient, fit.baseline_weights])

    draws = np.asarray(jax.vmap(estimate)(jax.random.split(jax.random.key(10), 400)), np.float64)
    mean_estimate = draws.mean(0)
    standard_error = draws.std(0, ddof=1) / np.sqrt(len(draws))
    expected = np.concatenate([natural, [value]])
    assert np.all(np.abs(mean_estimate - expected) < 4.0 * standard_error), (mean_estimate, expected, standard_error)
    # and the estimate is informative: the natural gradient is several standard errors from zero
    assert np.all(np.abs(expected[:2]) > 10.0 * standard_error[:2])


def test_episodic_natural_actor_critic_weights_bad_input():
    with pytest.raises(ValueError, match="score_sums"):
        pgkit.episodic_natural_actor_critic_weights(jnp.zeros(4), jnp.zeros(4))
    with pytest.raises(ValueError, match="returns"):
        pgkit.episodic_natural_actor_critic_weights(jnp.zeros((4, 2)), jnp.zeros(3))
    with pytest.raises(ValueError, match="baseline_features"):
        pgkit.episodic_natural_actor_critic_weights(jnp.zeros((4, 2)), jnp.zeros(4), jnp.ones(4))
    with pytest.raises(ValueError, match="weights"):
        pgkit.episodic_natural_actor_critic_weights(jnp.zeros((4, 2)), jnp.zeros(4), None, jnp.ones(3))
    with pytest.raises(ValueError, match="iterations"):
        pgkit.episodic_natural_actor_critic_weights(jnp.zeros((4, 2)), jnp.zeros(4), iterations=0)
