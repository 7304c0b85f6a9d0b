"""Plain NumPy oracles (float64, explicit Python loops) for pgkit's temporal functions.

Each oracle is written from the definition, independently of the JAX implementation: where the
library uses a backward recursion, the oracle uses the forward-looking sum (n-step returns as an
explicit sum up to the horizon, λ-returns as the weighted mixture of n-step returns, GAE as the
discounted sum of TD errors, V-trace as the sum of eq. (1) of the IMPALA paper).

Arrays are time-major ``[T, *B]``; every oracle flattens ``*B`` and loops over streams and steps.
Episode semantics follow CONTRIBUTING.md: ``discounts[t]`` = γ(1 − terminated_t), ``dones[t]`` =
terminated or truncated, ``next_values[t]`` = V(true next state). Other test modules may append
oracles here.
"""

import numpy as np


def _streams(*arrays):
    """Float64 copies reshaped to ``[T, N]`` (N = product of the batch dims), plus the shape."""
    shape = np.shape(arrays[0])
    out = [np.asarray(a, dtype=np.float64).reshape(shape[0], -1) for a in arrays]
    return out, shape


def _param(x, shape):
    """A scalar or broadcastable hyperparameter as a float64 ``[T, N]`` array."""
    return np.broadcast_to(np.asarray(x, dtype=np.float64), shape).reshape(shape[0], -1)


def _episode_end(dones, t, i):
    """The last step of the episode containing step t of stream i (a done step, or T-1)."""
    T = dones.shape[0]
    k = t
    while k < T - 1 and not dones[k, i]:
        k += 1
    return k


def _episode_start(dones, t, i):
    """The first step within the rollout of the episode containing step t of stream i."""
    k = t
    while k > 0 and not dones[k - 1, i]:
        k -= 1
    return k


def reward_to_go(rewards, discounts, dones, next_values=None):
    """G_t = Σ_{k=t}^{e} (Π_{j<k} d_j) r_k + (Π_{j<=e} d_j) b_e, e the episode end; b = nv or 0."""
    if next_values is None:
        next_values = np.zeros(np.shape(rewards))
    (r, d, dn, nv), shape = _streams(rewards, discounts, dones, next_values)
    T, N = r.shape
    out = np.zeros((T, N))
    for i in range(N):
        for t in range(T):
            e = _episode_end(dn, t, i)
            total, weight = 0.0, 1.0
            for k in range(t, e + 1):
                total += weight * r[k, i]
                weight *= d[k, i]
            out[t, i] = total + weight * nv[e, i]
    return out.reshape(shape)


def episode_returns(rewards, discounts, dones):
    """R_t = Σ_{k=s}^{e} (Π_{j=s}^{k-1} d_j) r_k over the whole episode s..e containing t."""
    (r, d, dn), shape = _streams(rewards, discounts, dones)
    T, N = r.shape
    out = np.zeros((T, N))
    for i in range(N):
        for t in range(T):
            s, e = _episode_start(dn, t, i), _episode_end(dn, t, i)
            total = 0.0
            for k in range(s, e + 1):
                total += np.prod(d[s:k, i]) * r[k, i]
            out[t, i] = total
    return out.reshape(shape)


def reinforce_loss(log_probs, rewards, discounts, dones, baselines=None, causal=True):
    """loss_t = −log π_t (w_t − b_t): w_t = Σ_{k=t}^{e} (Π_{j=t}^{k-1} d_j) r_k (causal) or the
    whole episode's return Σ_{k=s}^{e} (Π_{j=s}^{k-1} d_j) r_k; no bootstrap at e."""
    shape = np.shape(log_probs)
    b = np.zeros(shape) if baselines is None else np.broadcast_to(np.asarray(baselines, np.float64), shape)
    (lp, r, d, dn, b), _ = _streams(log_probs, rewards, discounts, dones, b)
    T, N = r.shape
    out = np.zeros((T, N))
    for i in range(N):
        for t in range(T):
            first = t if causal else _episode_start(dn, t, i)
            weight, scale = 0.0, 1.0
            for k in range(first, _episode_end(dn, t, i) + 1):
                weight += scale * r[k, i]
                scale *= d[k, i]
            out[t, i] = -lp[t, i] * (weight - b[t, i])
    return out.reshape(shape)


def reinforce_tabular_gradient(table, states, actions, rewards, discounts, dones, baselines=None,
                               causal=True):
    """∂/∂table of Σ_t reinforce_loss_t for π(a|s) = softmax(table[s]), ``states``/``actions``
    integer [T, *B]: −Σ_t (w_t − b_t)(onehot(a_t) − π(·|s_t)) added to row s_t."""
    table = np.asarray(table, np.float64)
    probs = np.exp(table) / np.exp(table).sum(-1, keepdims=True)
    num_actions = table.shape[-1]
    # The weights: the loss oracle at log π = −1 is exactly w_t − b_t.
    weights = reinforce_loss(-np.ones(np.shape(rewards)), rewards, discounts, dones, baselines, causal)
    grad = np.zeros_like(table)
    for idx in np.ndindex(*np.shape(rewards)):
        s, a = states[idx], actions[idx]
        grad[s] -= weights[idx] * (np.eye(num_actions)[a] - probs[s])
    return grad


def per_trajectory_importance_loss(log_probs, behaviour_log_probs, returns, dones, max_weight=None):
    """loss_t = −log π_t · w ψ_t, w = min(c̄, Π_{k=s}^{e} π_k/μ_k) over the whole episode s..e of t."""
    shape = np.shape(log_probs)
    c = np.inf if max_weight is None else max_weight
    psi = np.broadcast_to(np.asarray(returns, np.float64), shape)
    (lp, mu, psi, dn), _ = _streams(log_probs, behaviour_log_probs, psi, dones)
    T, N = lp.shape
    out = np.zeros((T, N))
    for i in range(N):
        for t in range(T):
            w = 1.0
            for k in range(_episode_start(dn, t, i), _episode_end(dn, t, i) + 1):
                w *= np.exp(lp[k, i]) / np.exp(mu[k, i])
            out[t, i] = -lp[t, i] * min(w, c) * psi[t, i]
    return out.reshape(shape)


def per_decision_importance_loss(log_probs, behaviour_log_probs, rewards, discounts, dones, next_values=None,
                                 baselines=None, max_weight=None):
    """loss_t = −log π_t (Σ_{k=t}^{e} (Π_{j=t}^{k-1} d_j) w_k r_k + (Π_{j=t}^{e} d_j) w_e nv_e − w_t b_t),
    w_k = min(c̄, Π_{j=s}^{k} π_j/μ_j) from the start s of the episode to k; nv, b = 0 if not given."""
    shape = np.shape(log_probs)
    c = np.inf if max_weight is None else max_weight
    nv = np.zeros(shape) if next_values is None else next_values
    b = np.zeros(shape) if baselines is None else np.broadcast_to(np.asarray(baselines, np.float64), shape)
    (lp, mu, r, d, dn, nv, b), _ = _streams(log_probs, behaviour_log_probs, rewards, discounts, dones, nv, b)
    T, N = lp.shape
    out = np.zeros((T, N))

    def weight(k, i):
        w = 1.0
        for j in range(_episode_start(dn, k, i), k + 1):
            w *= np.exp(lp[j, i]) / np.exp(mu[j, i])
        return min(w, c)

    for i in range(N):
        for t in range(T):
            e = _episode_end(dn, t, i)
            total, scale = 0.0, 1.0
            for k in range(t, e + 1):
                total += scale * weight(k, i) * r[k, i]
                scale *= d[k, i]
            total += scale * weight(e, i) * nv[e, i]
            out[t, i] = -lp[t, i] * (total - weight(t, i) * b[t, i])
    return out.reshape(shape)


def td_errors(rewards, discounts, values, next_values):
    """δ_t = r_t + d_t nv_t − v_t."""
    (r, d, v, nv), shape = _streams(rewards, discounts, values, next_values)
    out = np.zeros_like(r)
    for i in range(r.shape[1]):
        for t in range(r.shape[0]):
            out[t, i] = r[t, i] + d[t, i] * nv[t, i] - v[t, i]
    return out.reshape(shape)


def _n_step(r, d, dn, nv, t, i, n):
    """The n-step return of step t of stream i, bootstrapped at the horizon min(t+n-1, e)."""
    e = _episode_end(dn, t, i)
    last = min(t + n - 1, e)
    total, weight = 0.0, 1.0
    for k in range(t, last + 1):
        total += weight * r[k, i]
        weight *= d[k, i]
    return total + weight * nv[last, i]


def n_step_returns(rewards, discounts, dones, next_values, n):
    """Explicit forward n-step sums, horizon cut at the episode's end and the rollout's end."""
    (r, d, dn, nv), shape = _streams(rewards, discounts, dones, next_values)
    T, N = r.shape
    out = np.zeros((T, N))
    for i in range(N):
        for t in range(T):
            out[t, i] = _n_step(r, d, dn, nv, t, i, n)
    return out.reshape(shape)


def lambda_returns(rewards, discounts, dones, next_values, lambda_):
    """Forward view: G_t = Σ_{n=1}^{m} (Π_{j=t}^{t+n-2} λ_j)(1 − λ_{t+n-1}) G_t^(n), λ_e := 0."""
    (r, d, dn, nv), shape = _streams(rewards, discounts, dones, next_values)
    lam = _param(lambda_, shape)
    T, N = r.shape
    out = np.zeros((T, N))
    for i in range(N):
        for t in range(T):
            e = _episode_end(dn, t, i)
            total, weight = 0.0, 1.0
            for n in range(1, e - t + 2):
                k = t + n - 1  # the step whose λ decides whether to stop after n steps
                stop = 1.0 if k == e else 1.0 - lam[k, i]
                total += weight * stop * _n_step(r, d, dn, nv, t, i, n)
                weight *= lam[k, i]
            out[t, i] = total
    return out.reshape(shape)


def gae(rewards, discounts, dones, values, next_values, lambda_):
    """A_t = Σ_{k=t}^{e} (Π_{j=t}^{k-1} d_j λ_j) δ_k; returns (advantages, advantages + values)."""
    (r, d, dn, v, nv), shape = _streams(rewards, discounts, dones, values, next_values)
    lam = _param(lambda_, shape)
    T, N = r.shape
    adv = np.zeros((T, N))
    for i in range(N):
        for t in range(T):
            e = _episode_end(dn, t, i)
            total, weight = 0.0, 1.0
            for k in range(t, e + 1):
                total += weight * (r[k, i] + d[k, i] * nv[k, i] - v[k, i])
                weight *= d[k, i] * lam[k, i]
            adv[t, i] = total
    return adv.reshape(shape), (adv + v).reshape(shape)


def log_ratios(target_log_probs, behaviour_log_probs):
    return np.asarray(target_log_probs, np.float64) - np.asarray(behaviour_log_probs, np.float64)


def per_trajectory_weights(log_ratios, dones):
    """Π_{k=s}^{e} ρ_k over the whole episode containing t (a product of ratios, not of logs)."""
    (lr, dn), shape = _streams(log_ratios, dones)
    T, N = lr.shape
    out = np.zeros((T, N))
    for i in range(N):
        for t in range(T):
            s, e = _episode_start(dn, t, i), _episode_end(dn, t, i)
            w = 1.0
            for k in range(s, e + 1):
                w *= np.exp(lr[k, i])
            out[t, i] = w
    return out.reshape(shape)


def per_decision_weights(log_ratios, dones):
    """Π_{k=s}^{t} ρ_k from the start of t's episode up to and including t."""
    (lr, dn), shape = _streams(log_ratios, dones)
    T, N = lr.shape
    out = np.zeros((T, N))
    for i in range(N):
        for t in range(T):
            s = _episode_start(dn, t, i)
            w = 1.0
            for k in range(s, t + 1):
                w *= np.exp(lr[k, i])
            out[t, i] = w
    return out.reshape(shape)


def truncated_weights(log_ratios, max_weight):
    return np.minimum(np.exp(np.asarray(log_ratios, np.float64)), max_weight)


def self_normalised_weights(weights, axis=0):
    w = np.asarray(weights, np.float64)
    return w / w.sum(axis=axis, keepdims=True)


def vtrace(rewards, discounts, dones, values, next_values, log_ratios, lambda_=1.0, clip_rho=1.0,
           clip_c=1.0):
    """V-trace as a forward sum valid for any next_values (pgkit's done/next_values semantics).

    v_t = Σ_{k=t}^{e} (Π_{j=t}^{k-1} d_j c_j) x_k, with x_k = (1 − ρ̄_k) V_k + ρ̄_k r_k
    + (ρ̄_k − c_k) d_k nv_k and c_e := 0 at the episode's end e. When nv_k = V_{k+1} on continuing
    steps this telescopes to eq. (1) of IMPALA (see ``vtrace_paper``).
    Returns (targets, pg_advantages), pg_advantages_t = ρ̄_t (r_t + d_t v'_{t+1} − V_t) with
    v'_{t+1} = v_{t+1} if t continues, else nv_t.
    """
    (r, d, dn, v, nv, lr), shape = _streams(rewards, discounts, dones, values, next_values,
                                            log_ratios)
    lam, crho, cc = (_param(x, shape) for x in (lambda_, clip_rho, clip_c))
    T, N = r.shape
    targets = np.zeros((T, N))
    pg = np.zeros((T, N))
    for i in range(N):
        for t in range(T):
            e = _episode_end(dn, t, i)
            total, weight = 0.0, 1.0
            for k in range(t, e + 1):
                ratio = np.exp(lr[k, i])
                rho = min(crho[k, i], ratio)
                c = 0.0 if k == e else lam[k, i] * min(cc[k, i], ratio)
                total += weight * ((1 - rho) * v[k, i] + rho * r[k, i] + (rho - c) * d[k, i] * nv[k, i])
                weight *= d[k, i] * c
            targets[t, i] = total
        for t in range(T):
            rho = min(crho[t, i], np.exp(lr[t, i]))
            continues = t < T - 1 and not dn[t, i]
            following = targets[t + 1, i] if continues else nv[t, i]
            pg[t, i] = rho * (r[t, i] + d[t, i] * following - v[t, i])
    return targets.reshape(shape), pg.reshape(shape)


def vtrace_paper(rewards, discounts, dones, values, next_values, log_ratios, lambda_=1.0,
                 clip_rho=1.0, clip_c=1.0):
    """Eq. (1) of IMPALA, v_s = V(x_s) + Σ_t γ^{t-s} (Π_{i<t} c_i) ρ̄_t (r_t + γV(x_{t+1}) − V(x_t)).

    Valid when nv_t = V_{t+1} on every continuing step (V(x_{t+1}) is read from ``next_values``,
    which on a done step holds V of the final observation). Returns the targets only.
    """
    (r, d, dn, v, nv, lr), shape = _streams(rewards, discounts, dones, values, next_values,
                                            log_ratios)
    lam, crho, cc = (_param(x, shape) for x in (lambda_, clip_rho, clip_c))
    T, N = r.shape
    targets = np.zeros((T, N))
    for i in range(N):
        for s in range(T):
            e = _episode_end(dn, s, i)
            total = v[s, i]
            for t in range(s, e + 1):
                coef = np.prod(d[s:t, i]) * np.prod(
                    [lam[j, i] * min(cc[j, i], np.exp(lr[j, i])) for j in range(s, t)]
                )
                rho = min(crho[t, i], np.exp(lr[t, i]))
                total += coef * rho * (r[t, i] + d[t, i] * nv[t, i] - v[t, i])
            targets[s, i] = total
    return targets.reshape(shape)


def short_horizon_pathwise_loss(rewards, discounts, dones, next_values):
    """loss_t = −(Π_{j=s}^{t-1} d_j)(r_t + [t = e] d_e nv_e) for step t of the segment s..e containing it."""
    (r, d, dn, nv), shape = _streams(rewards, discounts, dones, next_values)
    T, N = r.shape
    out = np.zeros((T, N))
    for i in range(N):
        for t in range(T):
            s, e = _episode_start(dn, t, i), _episode_end(dn, t, i)
            weight = np.prod(d[s:t, i])
            out[t, i] = -weight * (r[t, i] + (d[e, i] * nv[e, i] if t == e else 0.0))
    return out.reshape(shape)


def random_rollout(seed, T=16, batch_shape=(3,), gamma=0.9, p_terminate=0.12, p_truncate=0.12,
                   consistent=True):
    """Random float32 rollout with both kinds of episode boundary, several per stream.

    Returns a dict with ``rewards, discounts, dones, values, next_values, log_ratios`` of shape
    ``[T, *batch_shape]`` and boolean ``terminated, truncated``. Each stream gets at least one
    termination and one truncation (placed at random if the draw produced none). With
    ``consistent=True``, ``next_values[t] == values[t+1]`` on continuing steps and done steps (and
    the last step) take an independent "final observation" value; otherwise ``next_values`` is
    drawn independently everywhere.
    """
    rng = np.random.default_rng(seed)
    shape = (T,) + tuple(batch_shape)
    u = rng.random(shape)
    terminated = u < p_terminate
    truncated = (u >= p_terminate) & (u < p_terminate + p_truncate)
    flat_term = terminated.reshape(T, -1)
    flat_trunc = truncated.reshape(T, -1)
    for i in range(flat_term.shape[1]):
        if not flat_term[: T - 1, i].any() or not flat_trunc[: T - 1, i].any():
            a, b = rng.choice(T - 1, size=2, replace=False)
            flat_term[a, i], flat_trunc[a, i] = True, False
            flat_term[b, i], flat_trunc[b, i] = False, True
    terminated = flat_term.reshape(shape)
    truncated = flat_trunc.reshape(shape)
    dones = terminated | truncated
    values = rng.normal(size=shape)
    final_values = rng.normal(size=shape)
    if consistent:
        following = np.concatenate([values[1:], final_values[-1:]], axis=0)
        next_values = np.where(dones, final_values, following)
    else:
        next_values = final_values
    data = dict(
        rewards=rng.normal(size=shape),
        discounts=gamma * (1.0 - terminated),
        dones=dones.astype(np.float64),
        values=values,
        next_values=next_values,
        log_ratios=0.5 * rng.normal(size=shape),
    )
    data = {k: v.astype(np.float32) for k, v in data.items()}
    data["terminated"], data["truncated"] = terminated, truncated
    return data



def assert_equal_up_to_rounding(actual, desired, ulps=8):
    """Equal up to float32 rounding: |actual − desired| ≤ ``ulps`` ulps of max |desired|.

    For comparisons that are not bit-exact by construction, such as jit against eager: XLA fuses
    and contracts a jitted program (e.g. d·v' + r into one FMA), so it rounds differently from the
    op-by-op eager program. The error of such a step is a few ulps of its operands, not of its
    result, so the ulps are counted at the array's scale: counted per element
    (``np.testing.assert_array_max_ulp``), a result that cancels to near zero (r + d·v' − v) is
    many of its own ulps away. Tuples (``GAE``, ``VTrace``) are compared field by field.
    """
    if isinstance(desired, tuple):
        assert isinstance(actual, tuple) and len(actual) == len(desired), (type(actual), type(desired))
        for a, b in zip(actual, desired):
            assert_equal_up_to_rounding(a, b, ulps)
        return
    a, b = np.asarray(actual), np.asarray(desired)
    assert a.dtype == b.dtype and a.shape == b.shape, (a.dtype, a.shape, b.dtype, b.shape)
    bound = ulps * np.spacing(np.max(np.abs(b)))
    error = np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)))
    assert error <= bound, f"differs by {error:.3g} > {ulps} ulps of max |desired| ({bound:.3g})"


def assert_time_major_invariance(f, args, *, stream):
    """``f`` on time-major ``[T, E]`` arrays gives the same numbers every way it can be called.

    Bit for bit: vmap over a leading axis of single streams ``[E, T]`` against the direct
    ``[T, E]`` call (eager and jitted), and one stream ``[T]`` against its column. Jitted
    against eager: up to rounding (:func:`assert_equal_up_to_rounding`): XLA may contract a
    product and a sum into an FMA, and whether it does depends on the CPU.
    """
    import jax

    def equal(actual, desired):
        jax.tree_util.tree_map(np.testing.assert_array_equal, actual, desired)

    direct = f(*args)
    jitted = jax.jit(f)(*args)
    per_stream = tuple(a.T for a in args)  # [E, T]: a leading batch axis of single streams
    equal(jax.tree_util.tree_map(lambda x: x.T, jax.vmap(f)(*per_stream)), direct)
    equal(jax.tree_util.tree_map(lambda x: x.T, jax.jit(jax.vmap(f))(*per_stream)), jitted)
    equal(jax.tree_util.tree_map(lambda x: x[:, stream], direct), f(*(a[:, stream] for a in args)))
    assert_equal_up_to_rounding(jitted, direct, ulps=8)


def assert_bit_identical(a, b):
    """Two ``experiment.RunResult``s hold the same metrics and the same final state, every array
    leaf bit for bit (same key, rerun or resumed: the driver's reproducibility promise)."""
    import jax

    assert a.metrics.keys() == b.metrics.keys()
    for name in a.metrics:
        np.testing.assert_array_equal(a.metrics[name], b.metrics[name], err_msg=f"metric {name}")
    assert jax.tree.structure(a.state) == jax.tree.structure(b.state)
    for (path, x), y in zip(jax.tree.leaves_with_path(a.state), jax.tree.leaves(b.state)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=f"state{jax.tree_util.keystr(path)}")


def assert_trees_close(actual, desired, tol):
    """Every leaf of ``actual`` within ``tol`` (relative and absolute) of ``desired``'s."""
    import jax

    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=tol, atol=tol), actual, desired)
