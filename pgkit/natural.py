"""Natural-gradient machinery: Fisher-vector products, conjugate gradient, natural step, line search.

Estimator layer (see ARCHITECTURE): imports only jax. The functions act on parameter pytrees
(any nesting of arrays, e.g. an equinox module's array leaves) and are written so that a whole
TRPO / NPG update jits: iteration counts are static Python ints, every float is traced, and no
Python control flow depends on a traced value.

A TRPO step composes them as in Schulman et al. (2015, appendix C)::

    fvp = gauss_newton_fisher_product(logits_fn, params, categorical_fisher_product, damping=0.1)
    x = conjugate_gradient(fvp, policy_gradient, iterations=10).solution   # x ≈ F⁻¹ g
    full_step = natural_step(x, fvp(x), max_kl=0.01)                       # ½ sᵀ F s = δ
    result = backtracking_line_search(surrogate_fn, kl_fn, params, full_step, max_kl=0.01)

and :func:`natural_gradient_step` is that composition as one call, for NPG (the full step) and
TRPO (``line_search=True``)::

    result = natural_gradient_step(surrogate_fn, kl_fn, params, fvp, max_kl=0.01, line_search=True)

``fvp = lambda v: fisher_vector_product(kl_fn, params, v, damping=0.1)`` gives the same
products from any mean-KL function (the Hessian of the KL, forward-over-reverse), at about 1.8x
the cost of the Gauss-Newton form, which needs the policy's outputs and their distribution's
Fisher (categorical or diagonal Gaussian here).

Tree arithmetic is written with ``jax.tree`` directly (equivalent to ``optax.tree.vdot`` /
``add_scale``) so that the estimator layer does not depend on the optimizer library.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

__all__ = [
    "CGResult",
    "EpisodeSegments",
    "LineSearchResult",
    "NaturalActorCriticWeights",
    "NaturalGradientResult",
    "backtracking_line_search",
    "categorical_fisher_product",
    "compatible_features_weights",
    "conjugate_gradient",
    "empirical_fisher_vector_product",
    "episode_segment_sums",
    "episodic_natural_actor_critic_weights",
    "fisher_vector_product",
    "gauss_newton_fisher_product",
    "gaussian_fisher_product",
    "natural_gradient_step",
    "natural_step",
]

_NPG_REFERENCE = (
    "Kakade. A Natural Policy Gradient. NIPS 2001 (2002). "
    "https://papers.nips.cc/paper/2073-a-natural-policy-gradient"
)


# --------------------------------------------------------------------------- tree helpers


def _tree_vdot(a, b):
    """Σ over leaves of ⟨a, b⟩ (real inner product), a scalar."""
    leaves = jax.tree.leaves(jax.tree.map(lambda x, y: jnp.vdot(x, y), a, b))
    if not leaves:
        return jnp.zeros(())
    return sum(leaves[1:], leaves[0])


def _tree_add_scale(a, scale, b):
    """a + scale * b, leafwise (scale a scalar)."""
    return jax.tree.map(lambda x, y: x + jnp.asarray(scale, x.dtype) * y, a, b)


def _tree_where(condition, a, b):
    return jax.tree.map(lambda x, y: jnp.where(condition, x, y), a, b)


def _check_same_tree(fn_name: str, reference_name: str, reference, name: str, value) -> None:
    ref_structure = jax.tree.structure(reference)
    structure = jax.tree.structure(value)
    if ref_structure != structure:
        raise ValueError(
            f"{fn_name}: `{name}` has tree structure {structure}, expected the structure of "
            f"`{reference_name}` {ref_structure}."
        )
    for ref_leaf, leaf in zip(jax.tree.leaves(reference), jax.tree.leaves(value)):
        if jnp.shape(ref_leaf) != jnp.shape(leaf):
            raise ValueError(
                f"{fn_name}: a leaf of `{name}` has shape {jnp.shape(leaf)}, expected the shape "
                f"of the matching leaf of `{reference_name}` {jnp.shape(ref_leaf)}."
            )


# --------------------------------------------------------------------------- Fisher products


def fisher_vector_product(kl_fn: Callable[[Any], Any], params, vector, *, damping=0.0):
    """Fisher-vector product as the Hessian of the mean KL times a vector, plus damping.

    ``F v + λ v`` with ``F = ∇²_θ KL̄(θ)|_{θ=θ_old}``, ``KL̄(θ) = mean_s KL(π_old(·|s) || π_θ(·|s))``,
    computed forward-over-reverse: ``jax.jvp(jax.grad(kl_fn), (params,), (vector,))``. At
    ``θ = θ_old`` the Hessian of the KL equals the Fisher information
    ``E_s E_{a~π_old}[∇ log π ∇ log π^T]``; the cost is about two gradient evaluations.

    ``kl_fn`` must hold ``π_old`` fixed: either a closure over the old distribution parameters
    (logits, mean/log-std computed once and passed through ``jax.lax.stop_gradient``), or
    ``lambda p: kl(stop_gradient(dist(p)), dist(p))``; both have the Fisher as Hessian at
    ``params``.

    Args:
      kl_fn: ``params -> scalar`` mean KL(π_old || π_params) over a batch of states
        (e.g. all ``[T, *B]`` states of the rollout).
      params: parameter pytree θ_old at which the Hessian is taken.
      vector: pytree v with the structure and leaf shapes of ``params``.
      damping: scalar λ ≥ 0 (traced float) added as ``λ v`` (Tikhonov damping).

    Returns:
      Pytree ``F v + λ v`` with the structure of ``params``.

    Gradients:
      Differentiable in ``vector`` (linear) and ``params`` (third derivatives of ``kl_fn``);
      callers normally do not differentiate through it.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> import pgkit
      >>> old = jax.nn.log_softmax(jnp.zeros(2))
      >>> kl_fn = lambda p: jnp.sum(jnp.exp(old) * (old - jax.nn.log_softmax(p)))
      >>> fv = pgkit.fisher_vector_product(kl_fn, jnp.zeros(2), jnp.array([1.0, 0.0]))
      >>> print([round(float(v), 3) for v in fv])
      [0.25, -0.25]

    Reference:
      Schulman, Levine, Moritz, Jordan, Abbeel. Trust Region Policy Optimization. 2015.
      https://arxiv.org/abs/1502.05477 (appendix C). Also Kakade, A Natural Policy Gradient,
      2001.
    """
    _check_same_tree("fisher_vector_product", "params", params, "vector", vector)
    _, hessian_vector = jax.jvp(jax.grad(kl_fn), (params,), (vector,))
    return _tree_add_scale(hessian_vector, damping, vector)


def gauss_newton_fisher_product(
    outputs_fn: Callable[[Any], Any],
    params,
    output_fisher_product: Callable[[Any, Any], Any],
    *,
    damping=0.0,
) -> Callable[[Any], Any]:
    """The Fisher-vector product ``v ↦ F v + λ v`` of a policy, built once, in Gauss-Newton form.

    ``F = ∇²_θ KL̄(θ)|_{θ=θ_old}`` as in :func:`fisher_vector_product`, with
    ``KL̄(θ) = (1/N) Σ_i KL(π_old(·|s_i) ‖ π(·|o_i(θ)))`` and ``o_i(θ)`` the distribution
    parameters (logits, or mean and log-std) that ``outputs_fn`` returns for state i. By the
    chain rule ``∇²_θ KL̄ = (1/N) Σ_i J_iᵀ M_i J_i + (1/N) Σ_i Σ_k ∂KL/∂o_ik ∇²_θ o_ik`` with
    ``J_i = ∂o_i/∂θ`` and ``M_i`` the Hessian of the KL in the distribution parameters; at
    ``θ_old`` the KL is minimal in ``o_i``, so its gradient, and with it the second sum,
    vanishes: ``F = (1/N) Σ_i J_iᵀ M_i J_i`` exactly, where ``M_i`` is the Fisher information
    of the output distribution (:func:`categorical_fisher_product`,
    :func:`gaussian_fisher_product`).

    The network is linearised once (``jax.linearize``: one forward pass); each product is then
    one forward-mode pass ``u = J v``, the small per-state ``M u / N``, and one reverse-mode
    pass ``Jᵀ (M u / N)`` (``jax.linear_transpose``). :func:`fisher_vector_product` takes the
    Hessian of the KL forward-over-reverse and costs about 1.8x as much per product (TRPO on
    CartPole, 2,048 states, 64x64 policy: 1.9 -> 1.1 ms per conjugate-gradient iteration).

    Args:
      outputs_fn: ``params -> outputs``, the distribution parameters for a batch of N states:
        a pytree whose leaves have a leading axis N (e.g. ``[N, A]`` logits, or a
        ``(mean [N, A], log_std [N, A])`` pair; broadcast a state-independent log-std to
        ``[N, A]``).
      params: parameter pytree θ_old at which the Fisher is taken.
      output_fisher_product: ``(outputs, tangents) -> M tangents``, state by state (leading
        axis N), with the structure of ``outputs``: :func:`categorical_fisher_product` or
        :func:`gaussian_fisher_product`, or another distribution's.
      damping: scalar λ ≥ 0 (traced float) added as ``λ v``.

    Returns:
      A function ``vector -> F v + λ v`` (``vector`` a pytree shaped like ``params``), to be
      called many times, e.g. by :func:`conjugate_gradient`.

    Gradients:
      Not meant to be differentiated (callers use the products as a linear map); linear in
      ``vector``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> import pgkit
      >>> states = jnp.array([[1.0, 0.0], [0.0, 1.0]])
      >>> fvp = pgkit.gauss_newton_fisher_product(
      ...     lambda w: states @ w, jnp.zeros((2, 2)), pgkit.categorical_fisher_product)
      >>> print(fvp(jnp.array([[1.0, 0.0], [0.0, 0.0]])).round(3).tolist())
      [[0.125, -0.125], [0.0, 0.0]]

    Reference:
      Martens. New insights and perspectives on the natural gradient method. JMLR 21(146),
      2020. https://jmlr.org/papers/v21/17-678.html (the Fisher as the generalised
      Gauss-Newton matrix). Schulman, Levine, Moritz, Jordan, Abbeel. Trust Region Policy
      Optimization. 2015. https://arxiv.org/abs/1502.05477 (appendix C: Fisher-vector
      products through the network's Jacobian and the output distribution's Fisher).
    """
    outputs, jvp = jax.linearize(outputs_fn, params)
    sizes = {jnp.shape(leaf)[0] if jnp.ndim(leaf) else None for leaf in jax.tree.leaves(outputs)}
    if len(sizes) != 1 or None in sizes:
        raise ValueError(
            "gauss_newton_fisher_product: every leaf of `outputs_fn(params)` needs the same leading "
            f"axis N (one row per state), got leading sizes {sorted(map(str, sizes))}."
        )
    (num_states,) = sizes
    vjp = jax.linear_transpose(jvp, params)

    def product(vector):
        _check_same_tree("gauss_newton_fisher_product", "params", params, "vector", vector)
        tangents = jvp(vector)
        weighted = jax.tree.map(lambda m: m / num_states, output_fisher_product(outputs, tangents))
        (fisher_vector,) = vjp(weighted)
        return _tree_add_scale(fisher_vector, damping, vector)

    return product


def categorical_fisher_product(logits, tangents):
    """Fisher information of a categorical distribution in its logits, times tangents.

    ``M u = p ⊙ u − p (pᵀ u)`` with ``p = softmax(logits)``: the Hessian of
    ``KL(π_old ‖ softmax(z))`` in ``z`` at ``softmax(z) = π_old`` (``diag(p) − p pᵀ``), per
    state. The ``output_fisher_product`` of :func:`gauss_newton_fisher_product` for
    categorical policies.

    Args:
      logits: ``[*S, A]`` logits.
      tangents: ``[*S, A]`` tangent u.

    Returns:
      ``[*S, A]`` the product.

    Gradients:
      Through both inputs (linear in ``tangents``).

    Example:
      >>> import jax.numpy as jnp
      >>> import pgkit
      >>> print(pgkit.categorical_fisher_product(jnp.zeros(2), jnp.array([1.0, 0.0])).tolist())
      [0.25, -0.25]

    Reference:
      Amari. Natural gradient works efficiently in learning. Neural Computation 10(2), 1998.
      https://doi.org/10.1162/089976698300017746
    """
    if jnp.shape(logits) != jnp.shape(tangents) or jnp.ndim(logits) < 1:
        raise ValueError(
            "categorical_fisher_product: `logits` and `tangents` must share one shape [*S, A], got "
            f"{jnp.shape(logits)} and {jnp.shape(tangents)}."
        )
    probs = jax.nn.softmax(logits, axis=-1)
    weighted = probs * tangents
    return weighted - probs * jnp.sum(weighted, axis=-1, keepdims=True)


def gaussian_fisher_product(outputs, tangents):
    """Fisher information of a diagonal Gaussian in (mean, log-std), times tangents.

    For ``outputs = (μ, log σ)`` and ``tangents = (u_μ, u_log σ)``: ``(u_μ / σ², 2 u_log σ)``,
    the Hessian of ``KL(π_old ‖ N(μ, σ²))`` in ``(μ, log σ)`` at ``N(μ, σ²) = π_old`` (block
    diagonal: ``1/σ²`` for the mean, ``2`` for the log-std, no cross terms), per state and
    action dimension. The ``output_fisher_product`` of :func:`gauss_newton_fisher_product`
    for Gaussian policies.

    Args:
      outputs: ``(mean [*S, A], log_std [*S, A])``.
      tangents: ``(u_mean [*S, A], u_log_std [*S, A])``.

    Returns:
      ``(u_mean / σ² [*S, A], 2 u_log_std [*S, A])``.

    Gradients:
      Through ``log_std`` and the tangents (linear in the tangents); the mean does not enter.

    Example:
      >>> import jax.numpy as jnp
      >>> import pgkit
      >>> out = pgkit.gaussian_fisher_product((jnp.zeros(1), jnp.log(jnp.array([2.0]))),
      ...                                     (jnp.ones(1), jnp.ones(1)))
      >>> print([x.tolist() for x in out])
      [[0.25], [2.0]]

    Reference:
      Amari. Natural gradient works efficiently in learning. Neural Computation 10(2), 1998.
      https://doi.org/10.1162/089976698300017746
    """
    if not all(isinstance(x, (tuple, list)) and len(x) == 2 for x in (outputs, tangents)):
        raise ValueError(
            "gaussian_fisher_product: `outputs` and `tangents` must be (mean, log_std) pairs, got "
            f"{type(outputs).__name__} and {type(tangents).__name__}."
        )
    (mean, log_std), (tangent_mean, tangent_log_std) = outputs, tangents
    shapes = {jnp.shape(x) for x in (mean, log_std, tangent_mean, tangent_log_std)}
    if len(shapes) != 1:
        raise ValueError(
            "gaussian_fisher_product: mean, log_std and their tangents must share one shape "
            f"[*S, A], got {sorted(shapes)}."
        )
    return tangent_mean * jnp.exp(-2.0 * log_std), 2.0 * tangent_log_std


def empirical_fisher_vector_product(score_vectors, vector, *, damping=0.0):
    """Empirical Fisher-vector product from per-sample score vectors, plus damping.

    ``F̂ v + λ v = (1/N) Sᵀ (S v) + λ v`` with rows ``S_i = ∇_θ log π_θ(a_i|s_i)`` (flattened).
    Costs O(N P) and never forms the P × P matrix.

    Args:
      score_vectors: ``[N, P]`` per-sample flattened score vectors (e.g. the ``[T, *B]``
        samples reshaped to N = T·prod(B) rows; ``jax.flatten_util.ravel_pytree`` flattens a
        per-sample gradient pytree).
      vector: ``[P]`` the vector v.
      damping: scalar λ ≥ 0 (traced float).

    Returns:
      ``[P]`` the product.

    Gradients:
      Through ``score_vectors`` and ``vector``.

    Example:
      >>> import jax.numpy as jnp
      >>> import pgkit
      >>> S = jnp.array([[1.0, 0.0], [1.0, 2.0]])
      >>> fv = pgkit.empirical_fisher_vector_product(S, jnp.array([1.0, 1.0]), damping=0.1)
      >>> print([round(float(v), 3) for v in fv])
      [2.1, 3.1]

    Reference:
      Peters, Schaal. Natural Actor-Critic. Neurocomputing 71(7-9), 2008.
      https://doi.org/10.1016/j.neucom.2007.11.026 (the Fisher as the expected outer product
      of score vectors).
    """
    if jnp.ndim(score_vectors) != 2:
        raise ValueError(
            "empirical_fisher_vector_product: `score_vectors` must have shape [N, P], got "
            f"{jnp.shape(score_vectors)}."
        )
    num_samples, num_params = jnp.shape(score_vectors)
    if jnp.shape(vector) != (num_params,):
        raise ValueError(
            f"empirical_fisher_vector_product: `vector` has shape {jnp.shape(vector)}, expected "
            f"({num_params},) to match `score_vectors` [N, P] = {jnp.shape(score_vectors)}."
        )
    projections = score_vectors @ vector
    return score_vectors.T @ projections / num_samples + damping * vector


# --------------------------------------------------------------------------- conjugate gradient


class CGResult(NamedTuple):
    """Result of ``conjugate_gradient``.

    Attributes:
      solution: pytree x ≈ A⁻¹ b with the structure of ``b``.
      residual_norm_squared: scalar ‖r‖² of the final (recursively updated) residual
        ``r = b - A x``.
    """

    solution: Any
    residual_norm_squared: Any


def conjugate_gradient(
    matvec: Callable[[Any], Any],
    b,
    *,
    iterations: int = 10,
    residual_tol=1e-10,
) -> CGResult:
    """Solve ``A x = b`` for symmetric positive-definite ``A`` given only ``v ↦ A v``, over pytrees.

    Conjugate gradient from ``x₀ = 0``: ``α = rᵀr / pᵀAp``, ``x ← x + α p``, ``r ← r - α A p``,
    ``β = r'ᵀr' / rᵀr``, ``p ← r' + β p``. Runs exactly ``iterations`` steps in a
    ``lax.fori_loop`` (one ``matvec`` call each); once ``rᵀr ≤ residual_tol`` the state is
    frozen (masked with ``jnp.where``), so the result is the same as an early exit.

    Args:
      matvec: ``pytree -> pytree`` linear map v ↦ A v, A symmetric positive definite (e.g. a
        damped Fisher-vector product).
      b: right-hand side pytree (e.g. the policy gradient g).
      iterations: static int ≥ 0, the number of CG steps (mark static under ``jax.jit``).
      residual_tol: scalar (traced float) threshold on the squared residual norm ``rᵀr``.

    Returns:
      ``CGResult(solution, residual_norm_squared)``: x with the structure of ``b``, and the
      scalar squared norm of the final residual (0-d array).

    Gradients:
      Differentiable through the loop (fixed trip count) in ``b`` and in arrays closed over by
      ``matvec``; callers normally do not differentiate through it.

    Example:
      >>> import jax.numpy as jnp
      >>> import pgkit
      >>> A = jnp.array([[4.0, 1.0], [1.0, 3.0]])
      >>> result = pgkit.conjugate_gradient(lambda v: A @ v, jnp.array([1.0, 2.0]), iterations=2)
      >>> print([round(float(v), 4) for v in result.solution])
      [0.0909, 0.6364]

    Reference:
      Schulman, Levine, Moritz, Jordan, Abbeel. Trust Region Policy Optimization. 2015.
      https://arxiv.org/abs/1502.05477 (appendix C); Nocedal, Wright. Numerical Optimization,
      2006, algorithm 5.2.
    """
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 0:
        raise ValueError(
            f"conjugate_gradient: `iterations` must be a static Python int >= 0, got {iterations!r}."
        )
    x = jax.tree.map(jnp.zeros_like, b)
    rdotr = _tree_vdot(b, b)

    def body(_, state):
        x, r, p, rdotr = state
        a_p = matvec(p)
        p_a_p = _tree_vdot(p, a_p)
        # Frozen once converged (or on a breakdown pᵀAp ≤ 0, which SPD rules out).
        active = jnp.logical_and(rdotr > residual_tol, p_a_p > 0)
        alpha = jnp.where(active, rdotr / jnp.where(active, p_a_p, 1.0), 0.0)
        new_x = _tree_add_scale(x, alpha, p)
        new_r = _tree_add_scale(r, -alpha, a_p)
        new_rdotr = _tree_vdot(new_r, new_r)
        beta = new_rdotr / jnp.where(active, rdotr, 1.0)
        new_p = _tree_add_scale(new_r, beta, p)
        return (
            _tree_where(active, new_x, x),
            _tree_where(active, new_r, r),
            _tree_where(active, new_p, p),
            jnp.where(active, new_rdotr, rdotr),
        )

    x, _, _, rdotr = jax.lax.fori_loop(0, iterations, body, (x, b, b, rdotr))
    return CGResult(solution=x, residual_norm_squared=rdotr)


# --------------------------------------------------------------------------- natural step


def natural_step(direction, fisher_direction, *, max_kl):
    """Scale a search direction so that the quadratic KL model equals the trust-region radius.

    ``s = sqrt(2 δ / (xᵀ F x)) · x``, so that ``½ sᵀ F s = δ`` (for ``x = F⁻¹ g`` this is the
    NPG / TRPO full step). Returns a zero step when ``xᵀ F x ≤ 0`` (a zero direction).

    Args:
      direction: pytree x (e.g. the conjugate-gradient solution of ``F x = g``).
      fisher_direction: pytree ``F x`` with the structure of ``direction`` (the Fisher-vector
        product of the direction, computed once by the caller; damped or not, as wanted).
      max_kl: scalar δ > 0 (traced float), the KL trust-region radius.

    Returns:
      Pytree step ``s`` with the structure of ``direction``.

    Gradients:
      Through both inputs (callers normally do not differentiate through it).

    Example:
      >>> import jax.numpy as jnp
      >>> import pgkit
      >>> x = jnp.array([1.0, 0.0])
      >>> step = pgkit.natural_step(x, 2.0 * x, max_kl=0.01)
      >>> print([round(float(v), 4) for v in step])
      [0.1, 0.0]

    Reference:
      Schulman, Levine, Moritz, Jordan, Abbeel. Trust Region Policy Optimization. 2015.
      https://arxiv.org/abs/1502.05477 (appendix C). Also Kakade, A Natural Policy Gradient,
      2001.
    """
    _check_same_tree("natural_step", "direction", direction, "fisher_direction", fisher_direction)
    curvature = _tree_vdot(direction, fisher_direction)
    positive = curvature > 0
    scale = jnp.where(
        positive, jnp.sqrt(2.0 * max_kl / jnp.where(positive, curvature, 1.0)), 0.0
    )
    return jax.tree.map(lambda x: jnp.asarray(scale, x.dtype) * x, direction)


# --------------------------------------------------------------------------- line search


class LineSearchResult(NamedTuple):
    """Result of ``backtracking_line_search``.

    Attributes:
      params: the accepted parameters ``θ + ρ^j s`` (the original ``θ`` when nothing was
        accepted), a pytree with the structure of ``params``.
      accepted: bool scalar, whether some step size was accepted.
      num_backtracks: int32 scalar j, the number of rejected step sizes before the accepted one
        (``max_backtracks`` when none was accepted).
      step_fraction: scalar ``ρ^j`` of the accepted step (0 when none was accepted).
      surrogate_improvement: scalar ``L(θ_new) - L(θ)`` of the returned parameters (0 when
        none was accepted).
      kl: scalar ``kl_fn(θ_new)`` of the returned parameters (0 when none was accepted).
    """

    params: Any
    accepted: Any
    num_backtracks: Any
    step_fraction: Any
    surrogate_improvement: Any
    kl: Any


def backtracking_line_search(
    surrogate_fn: Callable[[Any], Any],
    kl_fn: Callable[[Any], Any],
    params,
    full_step,
    *,
    max_kl,
    backtrack_ratio=0.5,
    max_backtracks: int = 10,
) -> LineSearchResult:
    """TRPO backtracking line search: the largest ``ρ^j`` step that improves the surrogate within the KL.

    Tries ``θ_j = θ + ρ^j s`` for ``j = 0, 1, ..., max_backtracks - 1`` and accepts the first
    with ``L(θ_j) - L(θ) ≥ 0`` and ``KL̄(θ_j) ≤ δ``. ``surrogate_fn`` is *maximised* (e.g. the
    importance-sampled surrogate ``mean(r_t A_t)``, not a loss). If no candidate passes, the
    original ``θ`` is returned with ``accepted=False``. A NaN surrogate or KL rejects the
    candidate. Runs in a ``lax.while_loop`` (stops at the first acceptance; jit- and
    vmap-compatible, not reverse-differentiable).

    Args:
      surrogate_fn: ``params -> scalar`` surrogate L to maximise (data closed over).
      kl_fn: ``params -> scalar`` mean KL(π_old || π_params) over the batch states, π_old fixed
        at ``params`` (data closed over).
      params: current parameter pytree θ (= θ_old).
      full_step: pytree s with the structure of ``params`` (e.g. from ``natural_step``).
      max_kl: scalar δ (traced float), the KL constraint.
      backtrack_ratio: scalar ρ ∈ (0, 1) (traced float) shrinking the step at each rejection.
      max_backtracks: static int ≥ 1, the number of step sizes tried.

    Returns:
      ``LineSearchResult(params, accepted, num_backtracks, step_fraction,
      surrogate_improvement, kl)``: new parameters with the structure of ``params``, and
      scalars (see ``LineSearchResult``).

    Gradients:
      None (a ``while_loop`` search; treat the result as a constant).

    Example:
      >>> import jax.numpy as jnp
      >>> import pgkit
      >>> result = pgkit.backtracking_line_search(
      ...     lambda p: p[0], lambda p: 0.5 * jnp.sum(p ** 2), jnp.zeros(1), jnp.array([1.0]),
      ...     max_kl=0.1)
      >>> print(bool(result.accepted), int(result.num_backtracks), float(result.params[0]))
      True 2 0.25

    Reference:
      Schulman, Levine, Moritz, Jordan, Abbeel. Trust Region Policy Optimization. 2015.
      https://arxiv.org/abs/1502.05477 (appendix C).
    """
    if (
        isinstance(max_backtracks, bool)
        or not isinstance(max_backtracks, int)
        or max_backtracks < 1
    ):
        raise ValueError(
            "backtracking_line_search: `max_backtracks` must be a static Python int >= 1, got "
            f"{max_backtracks!r}."
        )
    _check_same_tree("backtracking_line_search", "params", params, "full_step", full_step)
    base_surrogate = surrogate_fn(params)
    if jnp.shape(base_surrogate) != ():
        raise ValueError(
            "backtracking_line_search: `surrogate_fn` must return a scalar, got shape "
            f"{jnp.shape(base_surrogate)}."
        )
    base_kl = kl_fn(params)
    if jnp.shape(base_kl) != ():
        raise ValueError(
            "backtracking_line_search: `kl_fn` must return a scalar, got shape "
            f"{jnp.shape(base_kl)}."
        )
    value_dtype = jnp.result_type(base_surrogate, base_kl, float)
    ratio = jnp.asarray(backtrack_ratio, value_dtype)

    def candidate(j):
        fraction = ratio ** j.astype(value_dtype)
        return fraction, _tree_add_scale(params, fraction, full_step)

    def cond(state):
        j, accepted = state[0], state[1]
        return jnp.logical_and(jnp.logical_not(accepted), j < max_backtracks)

    def body(state):
        j, _, new_params, _, _, _ = state
        fraction, trial = candidate(j)
        improvement = (surrogate_fn(trial) - base_surrogate).astype(value_dtype)
        kl = jnp.asarray(kl_fn(trial), value_dtype)
        ok = jnp.logical_and(improvement >= 0, kl <= max_kl)
        zero = jnp.zeros((), value_dtype)
        return (
            jnp.where(ok, j, j + 1),
            ok,
            _tree_where(ok, trial, new_params),
            jnp.where(ok, fraction, zero),
            jnp.where(ok, improvement, zero),
            jnp.where(ok, kl, zero),
        )

    zero = jnp.zeros((), value_dtype)
    init = (jnp.zeros((), jnp.int32), jnp.zeros((), bool), params, zero, zero, zero)
    j, accepted, new_params, fraction, improvement, kl = jax.lax.while_loop(cond, body, init)
    return LineSearchResult(
        params=new_params,
        accepted=accepted,
        num_backtracks=j,
        step_fraction=fraction,
        surrogate_improvement=improvement,
        kl=kl,
    )


# --------------------------------------------------------------------------- the whole step


class NaturalGradientResult(NamedTuple):
    """Result of ``natural_gradient_step``.

    Attributes:
      params: pytree θ_new with the structure of ``params``: ``θ + s`` without a line search;
        with one, ``θ + ρ^j s`` for the accepted j, or ``θ`` itself when nothing was accepted.
      gradient: pytree g = ∇_θ L(θ) with the structure of ``params``.
      direction: pytree x with the structure of ``params``: the conjugate-gradient solution of
        ``F x = g``, or the ``direction`` that was passed in.
      full_step: pytree ``s = sqrt(2 δ / xᵀ F x) · x`` with the structure of ``params``.
      cg_residual_norm_squared: scalar ‖g − F x‖² of conjugate gradient's last residual;
        None when a ``direction`` was passed in (no conjugate gradient ran).
      accepted: bool scalar: whether the line search accepted a step (True without one).
      num_backtracks: int32 scalar j, step sizes rejected before the accepted one
        (``max_backtracks`` when none was accepted; 0 without a line search).
      step_fraction: scalar ``ρ^j`` of the step taken (0 when nothing was accepted; 1 without
        a line search).
      surrogate_improvement: scalar ``L(θ_new) − L(θ)``, evaluated on the returned parameters.
      kl: scalar ``KL̄(θ_new)``, evaluated on the returned parameters (0 when they are θ).
    """

    params: Any
    gradient: Any
    direction: Any
    full_step: Any
    cg_residual_norm_squared: Any
    accepted: Any
    num_backtracks: Any
    step_fraction: Any
    surrogate_improvement: Any
    kl: Any


def natural_gradient_step(
    surrogate_fn: Callable[[Any], Any],
    kl_fn: Callable[[Any], Any],
    params,
    fisher_product: Callable[[Any], Any],
    *,
    max_kl,
    cg_iterations: int = 10,
    direction=None,
    line_search: bool = False,
    backtrack_ratio=0.5,
    max_backtracks: int = 10,
) -> NaturalGradientResult:
    """One natural policy gradient step (Kakade 2001), or with ``line_search=True`` one TRPO step.

    The update ``θ_new = θ + s`` with ``s = sqrt(2 δ / xᵀ F x) · x`` and ``x ≈ F⁻¹ g``,
    ``g = ∇_θ L(θ)``: the maximiser of the linear model ``gᵀ s`` of the surrogate within the
    quadratic model ``½ sᵀ F s ≤ δ`` of the mean KL (Schulman et al. 2015, appendix C). It
    composes this module's pieces::

        g = jax.grad(surrogate_fn)(params)
        x = conjugate_gradient(fisher_product, g, iterations=cg_iterations).solution
        s = natural_step(x, fisher_product(x), max_kl=max_kl)
        θ_new = θ + s                                             # NPG (line_search=False)
        θ_new = backtracking_line_search(surrogate_fn, kl_fn, θ, s, max_kl=max_kl, ...).params
                                                                  # TRPO (line_search=True)

    then evaluates ``L(θ_new) − L(θ)`` and ``KL̄(θ_new)`` on the returned parameters. The line
    search takes the first ``θ + ρ^j s`` that does not lower the surrogate and keeps the sampled
    mean KL within δ (θ itself if none does), so the constraint holds on the batch and not only
    in the quadratic model. ``direction`` replaces the conjugate-gradient solution by a search
    direction computed otherwise (e.g. natural actor-critic's compatible-feature weights,
    :func:`compatible_features_weights`); the step length still uses ``fisher_product``.

    Args:
      surrogate_fn: ``params -> scalar`` surrogate L to maximise (e.g. the importance-sampled
        ``mean(π_θ(a|s) / π_old(a|s) · A)`` over a batch of ``[N]`` samples, data closed over).
      kl_fn: ``params -> scalar`` mean KL(π_old ‖ π_params) over the batch states, π_old fixed
        at ``params``.
      params: parameter pytree θ (= θ_old), e.g. an equinox module's array leaves.
      fisher_product: ``vector -> F v`` (a pytree shaped like ``params``), the damped or
        undamped Fisher-vector product at θ (:func:`gauss_newton_fisher_product`, or
        ``lambda v: fisher_vector_product(kl_fn, params, v, damping=λ)``).
      max_kl: scalar δ > 0 (traced float), the KL trust-region radius.
      cg_iterations: static int ≥ 0, conjugate-gradient iterations on ``F x = g`` (unused when
        ``direction`` is given).
      direction: optional pytree x shaped like ``params``, used instead of solving ``F x = g``.
      line_search: static bool; True for TRPO's backtracking line search, False (default) for
        the plain natural step.
      backtrack_ratio: scalar ρ ∈ (0, 1) (traced float), the line search's shrink factor.
      max_backtracks: static int ≥ 1, the step sizes the line search tries.

    Returns:
      ``NaturalGradientResult(params, gradient, direction, full_step, cg_residual_norm_squared,
      accepted, num_backtracks, step_fraction, surrogate_improvement, kl)``: pytrees with the
      structure of ``params`` and scalars (see ``NaturalGradientResult``).

    Gradients:
      None: a policy update, not a loss (the line search is a ``while_loop``); treat the result
      as a constant.

    Example:
      >>> import jax.numpy as jnp
      >>> import pgkit
      >>> fisher = jnp.array([1.0, 4.0])                  # F = diag(1, 4) at θ = 0
      >>> kl_fn = lambda p: 0.5 * jnp.sum(fisher * p ** 2)
      >>> surrogate_fn = lambda p: jnp.sum(fisher * p)    # g = (1, 4), F⁻¹ g = (1, 1)
      >>> result = pgkit.natural_gradient_step(
      ...     surrogate_fn, kl_fn, jnp.zeros(2), lambda v: fisher * v, max_kl=0.025,
      ...     cg_iterations=2)
      >>> print([round(float(v), 4) for v in result.params], round(float(result.kl), 4))
      [0.1, 0.1] 0.025

    Reference:
      Schulman, Levine, Moritz, Jordan, Abbeel. Trust Region Policy Optimization. ICML 2015.
      https://arxiv.org/abs/1502.05477 (section 6 and appendix C). Kakade. A Natural Policy
      Gradient. NIPS 2001. https://papers.nips.cc/paper/2073-a-natural-policy-gradient
    """
    if not isinstance(line_search, bool):
        raise ValueError(
            f"natural_gradient_step: `line_search` must be a static Python bool, got {line_search!r}."
        )
    if direction is None and (
        isinstance(cg_iterations, bool) or not isinstance(cg_iterations, int) or cg_iterations < 0
    ):
        raise ValueError(
            "natural_gradient_step: `cg_iterations` must be a static Python int >= 0, got "
            f"{cg_iterations!r}."
        )
    gradient = jax.grad(surrogate_fn)(params)
    if direction is None:
        cg = conjugate_gradient(fisher_product, gradient, iterations=cg_iterations)
        direction, residual = cg.solution, cg.residual_norm_squared
    else:
        _check_same_tree("natural_gradient_step", "params", params, "direction", direction)
        residual = None
    full_step = natural_step(direction, fisher_product(direction), max_kl=max_kl)
    if line_search:
        search = backtracking_line_search(
            surrogate_fn, kl_fn, params, full_step, max_kl=max_kl,
            backtrack_ratio=backtrack_ratio, max_backtracks=max_backtracks,
        )
        new_params = search.params
        accepted, num_backtracks, fraction = search.accepted, search.num_backtracks, search.step_fraction
    else:
        new_params = jax.tree.map(lambda p, s: p + s, params, full_step)
        accepted = jnp.ones((), bool)
        num_backtracks = jnp.zeros((), jnp.int32)
        fraction = jnp.ones((), jnp.result_type(*jax.tree.leaves(full_step), float))
    return NaturalGradientResult(
        params=new_params,
        gradient=gradient,
        direction=direction,
        full_step=full_step,
        cg_residual_norm_squared=residual,
        accepted=accepted,
        num_backtracks=num_backtracks,
        step_fraction=fraction,
        surrogate_improvement=surrogate_fn(new_params) - surrogate_fn(params),
        kl=kl_fn(new_params),
    )


# --------------------------------------------------------------------------- natural actor-critic


def compatible_features_weights(
    score_vectors,
    advantages,
    weights=None,
    *,
    ridge=0.0,
    stop_target_gradients: bool = True,
):
    """Natural-gradient estimate as the least-squares fit of advantages on compatible features.

    ``w = argmin_w Σ_i q_i (A_i - ψ_iᵀ w)² + ridge ‖w‖²`` with compatible features
    ``ψ_i = ∇_θ log π_θ(a_i|s_i)`` and normalised sample weights ``q_i`` (uniform by default),
    i.e. ``(F̂ + ridge I) w = ĝ`` with ``F̂ = Σ q_i ψ_i ψ_iᵀ`` and ``ĝ = Σ q_i ψ_i A_i``.
    With exact expectations this is ``w = F⁻¹ g``: the natural policy gradient (Kakade 2001;
    Peters & Schaal 2008). When ``F̂`` is singular (e.g. an over-parameterised softmax) and
    ``ridge = 0``, the minimum-norm solution ``F̂⁺ ĝ`` is returned. Solved as an (augmented)
    least-squares problem in O(N P²); for large P use ``conjugate_gradient`` with
    ``empirical_fisher_vector_product`` instead.

    Args:
      score_vectors: ``[N, P]`` flattened score vectors ψ_i (e.g. the ``[T, *B]`` samples
        reshaped to N rows).
      advantages: ``[N]`` advantage estimates A_i (or Q-estimates: a state-dependent offset
        does not change the solution in expectation).
      weights: optional ``[N]`` non-negative sample weights (e.g. exact probabilities
        d(s) π(a|s) when enumerating state-action pairs); normalised to sum to one.
      ridge: scalar ≥ 0 (traced float), Tikhonov regularisation added to ``F̂``.
      stop_target_gradients: if True (default), no gradient flows into ``advantages``.

    Returns:
      ``[P]`` the weights w (the natural-gradient direction; unflatten with the function
      returned by ``jax.flatten_util.ravel_pytree``).

    Gradients:
      Through ``score_vectors`` (and ``weights``; and ``advantages`` when
      ``stop_target_gradients=False``), via the SVD of the least-squares solve; not meant for
      differentiation.

    Example:
      >>> import jax.numpy as jnp
      >>> import pgkit
      >>> S = jnp.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])
      >>> w = pgkit.compatible_features_weights(S, jnp.array([2.0, 1.0, -2.0, -1.0]))
      >>> print([round(float(v), 3) for v in w])
      [2.0, 1.0]

    Reference:
      Peters, Schaal. Natural Actor-Critic. Neurocomputing 71(7-9), 2008.
      https://doi.org/10.1016/j.neucom.2007.11.026 ; Kakade. A Natural Policy Gradient, 2001.
      https://papers.nips.cc/paper/2073-a-natural-policy-gradient ; Sutton, McAllester, Singh,
      Mansour. Policy Gradient Methods for Reinforcement Learning with Function Approximation,
      2000 (compatible features).
    """
    if jnp.ndim(score_vectors) != 2:
        raise ValueError(
            "compatible_features_weights: `score_vectors` must have shape [N, P], got "
            f"{jnp.shape(score_vectors)}."
        )
    num_samples, num_params = jnp.shape(score_vectors)
    if jnp.shape(advantages) != (num_samples,):
        raise ValueError(
            f"compatible_features_weights: `advantages` has shape {jnp.shape(advantages)}, "
            f"expected ({num_samples},) to match `score_vectors` [N, P] = "
            f"{jnp.shape(score_vectors)}."
        )
    if weights is None:
        weights = jnp.full((num_samples,), 1.0 / num_samples, score_vectors.dtype)
    elif jnp.shape(weights) != (num_samples,):
        raise ValueError(
            f"compatible_features_weights: `weights` has shape {jnp.shape(weights)}, expected "
            f"({num_samples},) to match `score_vectors` [N, P] = {jnp.shape(score_vectors)}."
        )
    else:
        weights = weights / jnp.sum(weights)
    if stop_target_gradients:
        advantages = jax.lax.stop_gradient(advantages)
    root_weights = jnp.sqrt(weights)
    design = jnp.concatenate(
        [
            root_weights[:, None] * score_vectors,
            jnp.sqrt(jnp.asarray(ridge, score_vectors.dtype))
            * jnp.eye(num_params, dtype=score_vectors.dtype),
        ],
        axis=0,
    )
    response = jnp.concatenate(
        [root_weights * advantages, jnp.zeros((num_params,), score_vectors.dtype)]
    )
    solution, *_ = jnp.linalg.lstsq(design, response)
    return solution


class EpisodeSegments(NamedTuple):
    """Result of ``episode_segment_sums``: per step, the sums of the segment it ends.

    A segment is a maximal run of steps of one stream that no ``done`` cuts and the rollout
    holds (it starts at t = 0 or after a done, and ends at a done or at t = T − 1). Step t of a
    segment that started at t₀ holds the sums over t₀..t; the rows to regress are the steps
    where ``ends`` is True.

    Attributes:
      score_sums: ``[T, *B, P]`` ``Σ_{u=t₀}^{t} Γ_u ψ_u`` with ``Γ_u = Π_{v=t₀}^{u−1} discounts_v``
        (γ^{u−t₀} inside a segment).
      returns: ``[T, *B]`` ``Σ_{u=t₀}^{t} Γ_u r_u``, the discounted return of the segment so far.
      baseline_features: ``[T, *B, K]`` ``φ(s_{t₀}) − Γ_{t+1} φ(s'_t)``: the value part
        ``V(s_{t₀}) − Γ_{t+1} V(s'_t)`` of ``V = φᵀ v`` (``Γ_{t+1} = 0`` after a termination).
      ends: ``[T, *B]`` bool, whether a segment ends at t (``dones[t]`` or t = T − 1).
    """

    score_sums: Any
    returns: Any
    baseline_features: Any
    ends: Any


def _segment_step(carry, inputs):
    fresh, coefficient, score_sum, return_sum, start = carry
    score, reward, discount, done, features, next_features = inputs
    coefficient = jnp.where(fresh, jnp.ones_like(coefficient), coefficient)
    score_sum = jnp.where(fresh[..., None], jnp.zeros_like(score_sum), score_sum) + coefficient[..., None] * score
    return_sum = jnp.where(fresh, jnp.zeros_like(return_sum), return_sum) + coefficient * reward
    start = jnp.where(fresh[..., None], features, start)
    coefficient = coefficient * discount  # Γ_{t+1}
    baseline = start - coefficient[..., None] * next_features
    return (done, coefficient, score_sum, return_sum, start), (score_sum, return_sum, baseline)


def episode_segment_sums(scores, rewards, discounts, dones, state_features=None, next_state_features=None):
    """Discounted sums of compatible features and rewards over episode segments: episodic NAC's rows.

    For the segment t₀..t of one stream (see ``EpisodeSegments``), with ``Γ_u = Π_{v=t₀}^{u−1}
    discounts_v``::

        Ψ_t = Σ_{u=t₀}^{t} Γ_u ψ_u,    R_t = Σ_{u=t₀}^{t} Γ_u r_u,    b_t = φ(s_{t₀}) − Γ_{t+1} φ(s'_t).

    Summing ``A(s_u, a_u) = E[r_u + γ V(s'_u) − V(s_u)]`` along the segment telescopes:
    ``E[R_t] = E[Ψ_tᵀ w + V(s_{t₀}) − Γ_{t+1} V(s'_t)]`` for the compatible critic
    ``A_w(s, a) = ψ(s, a)ᵀ w`` and ``V(s) = φ(s)ᵀ v``, so regressing ``R_t`` on ``[Ψ_t, b_t]`` at
    the segment ends gives w (:func:`episodic_natural_actor_critic_weights`). For whole episodes
    from the start state with ``φ = 1`` (the default) the rows are Peters & Schaal's
    ``[Σ_t γ^t ψ_t, 1]`` and ``Σ_t γ^t r_t``; a segment cut by a truncation or by the end of
    the rollout bootstraps from ``φ(s'_t)``, the true next state.

    Args:
      scores: ``[T, *B, P]`` flattened score vectors ψ_t = ∇_θ log π_θ(a_t|s_t) (time-major).
      rewards: ``[T, *B]`` r_t.
      discounts: ``[T, *B]`` γ·(1 − terminated_t).
      dones: ``[T, *B]`` bool, terminated or truncated at t: a segment ends there.
      state_features: optional ``[T, *B, K]`` φ(s_t) (default: ones, K = 1).
      next_state_features: optional ``[T, *B, K]`` φ(s'_t) of the true next states (default:
        ones, K = 1; required when ``state_features`` is given).

    Returns:
      ``EpisodeSegments(score_sums [T, *B, P], returns [T, *B], baseline_features [T, *B, K],
      ends [T, *B])``.

    Gradients:
      Through ``scores``, ``rewards`` and the features (sums with the discounts' products as
      coefficients); callers treat the rows as data.

    Example:
      >>> import jax.numpy as jnp
      >>> import pgkit
      >>> scores = jnp.array([[[1.0]], [[2.0]], [[4.0]]])          # T = 3, B = 1, P = 1
      >>> rewards, dones = jnp.ones((3, 1)), jnp.array([[False], [True], [False]])
      >>> seg = pgkit.episode_segment_sums(scores, rewards, 0.5 * (1.0 - dones), dones)
      >>> print(seg.score_sums[:, 0, 0].tolist(), seg.returns[:, 0].tolist(), seg.ends[:, 0].tolist())
      [1.0, 2.0, 4.0] [1.0, 1.5, 1.0] [False, True, True]
      >>> print(seg.baseline_features[:, 0, 0].tolist())
      [0.5, 1.0, 0.5]

    Reference:
      Peters, Schaal. Natural Actor-Critic. Neurocomputing 71(7-9), 2008, section 3.3 and
      table 2 (episodic natural actor-critic). https://doi.org/10.1016/j.neucom.2007.11.026
    """
    if jnp.ndim(scores) < 2:
        raise ValueError(
            f"episode_segment_sums: `scores` must have shape [T, *B, P], got {jnp.shape(scores)}."
        )
    steps = jnp.shape(scores)[:-1]
    for name, value in (("rewards", rewards), ("discounts", discounts), ("dones", dones)):
        if jnp.shape(value) != steps:
            raise ValueError(
                f"episode_segment_sums: `{name}` has shape {jnp.shape(value)}, expected {steps} "
                f"([T, *B] of `scores` [T, *B, P] = {jnp.shape(scores)})."
            )
    if (state_features is None) != (next_state_features is None):
        raise ValueError(
            "episode_segment_sums: give both `state_features` and `next_state_features`, or neither."
        )
    dtype = jnp.result_type(scores, rewards, float)
    if state_features is None:
        state_features = next_state_features = jnp.ones(steps + (1,), dtype)
    for name, value in (("state_features", state_features), ("next_state_features", next_state_features)):
        if jnp.ndim(value) != len(steps) + 1 or jnp.shape(value)[:-1] != steps:
            raise ValueError(
                f"episode_segment_sums: `{name}` has shape {jnp.shape(value)}, expected [T, *B, K] "
                f"with [T, *B] = {steps}."
            )
    if jnp.shape(state_features) != jnp.shape(next_state_features):
        raise ValueError(
            "episode_segment_sums: `state_features` and `next_state_features` must share one shape, "
            f"got {jnp.shape(state_features)} and {jnp.shape(next_state_features)}."
        )
    batch = steps[1:]
    init = (
        jnp.ones(batch, bool),
        jnp.ones(batch, dtype),
        jnp.zeros(batch + jnp.shape(scores)[-1:], dtype),
        jnp.zeros(batch, dtype),
        jnp.zeros(batch + jnp.shape(state_features)[-1:], dtype),
    )
    inputs = (
        jnp.asarray(scores, dtype),
        jnp.asarray(rewards, dtype),
        jnp.asarray(discounts, dtype),
        jnp.asarray(dones, bool),
        jnp.asarray(state_features, dtype),
        jnp.asarray(next_state_features, dtype),
    )
    _, (score_sums, returns, baseline) = jax.lax.scan(_segment_step, init, inputs)
    ends = jnp.asarray(dones, bool).at[-1].set(True)
    return EpisodeSegments(score_sums, returns, baseline, ends)


class NaturalActorCriticWeights(NamedTuple):
    """Result of ``episodic_natural_actor_critic_weights``.

    Attributes:
      natural_gradient: ``[P]`` w, the compatible critic's weights: the natural-gradient
        direction the actor steps along.
      baseline_weights: ``[K]`` v, the weights of the value part ``V(s) = φ(s)ᵀ v`` (for
        ``φ = 1`` the paper's J, the mean discounted return of the start states).
      residuals: ``[M]`` ``R_m − Ψ_mᵀ w − b_mᵀ v`` of every row (rows of weight 0 included).
      cg_residual_norm_squared: scalar ‖r‖² of conjugate gradient's last residual on the
        normal equations of w (0 for the exact solve).
    """

    natural_gradient: Any
    baseline_weights: Any
    residuals: Any
    cg_residual_norm_squared: Any


def episodic_natural_actor_critic_weights(
    score_sums,
    returns,
    baseline_features=None,
    weights=None,
    *,
    ridge=0.0,
    iterations: int | None = None,
    stop_target_gradients: bool = True,
) -> NaturalActorCriticWeights:
    """Episodic natural actor-critic: the compatible critic w and the baseline v by least squares on episodes.

    ``(w, v) = argmin Σ_m q_m (R_m − Ψ_mᵀ w − b_mᵀ v)² + ridge ‖w‖²`` over rows m (episodes, or
    the segments of :func:`episode_segment_sums`), with ``Ψ_m = Σ_t γ^t ψ_t`` the discounted sum
    of compatible features ``ψ = ∇_θ log π_θ(a|s)``, ``R_m = Σ_t γ^t r_t`` and baseline features
    ``b_m`` (a constant 1 by default: the paper's ``[Φ] = [Σ_t γ^t ψ_t, 1]``). Since
    ``Σ_t γ^t A(s_t, a_t)`` telescopes to the return minus the start value, the critic
    ``A_w = ψᵀ w`` is fitted to the rollouts themselves, without a value network, and w is the
    natural gradient ``F⁻¹ ∇J`` (Peters & Schaal 2008): the actor steps along w.

    Solved by eliminating v (Frisch-Waugh-Lovell): the rows of Ψ and R are projected off the
    span of the weighted baseline features, then w solves ``(Ψ̃ᵀ Ψ̃ + ridge I) w = Ψ̃ᵀ R̃`` (the
    weights ``q`` normalised and folded into the rows), and ``v = B⁺ (R − Ψ w)``. With
    ``iterations=None`` w is the exact (minimum-norm, if singular) solution
    (:func:`compatible_features_weights`, O(M P²): small policies); with an int it is that many
    conjugate-gradient steps on :func:`empirical_fisher_vector_product` (O(M P) each).

    Args:
      score_sums: ``[M, P]`` rows Ψ_m (e.g. ``EpisodeSegments.score_sums`` reshaped to M rows).
      returns: ``[M]`` R_m.
      baseline_features: optional ``[M, K]`` rows b_m (default ones, K = 1).
      weights: optional ``[M]`` non-negative row weights (e.g. ``EpisodeSegments.ends`` as
        0/1 to keep only the segment ends), normalised to sum to one; at least one positive.
      ridge: scalar ≥ 0 (traced float) added to ``Σ_m q_m Ψ̃_m Ψ̃_mᵀ`` (the ψ-block only).
      iterations: static: None for the exact solve, or an int ≥ 1 of conjugate-gradient steps.
      stop_target_gradients: if True (default), no gradient flows into ``returns``.

    Returns:
      ``NaturalActorCriticWeights(natural_gradient [P], baseline_weights [K], residuals [M],
      cg_residual_norm_squared scalar)``.

    Gradients:
      Through ``score_sums``, ``baseline_features`` and ``weights`` (and ``returns`` when
      ``stop_target_gradients=False``); a critic fit, not meant for differentiation.

    Example:
      >>> import jax.numpy as jnp
      >>> import pgkit
      >>> psi = jnp.array([[1.0], [-1.0], [2.0], [-2.0]])
      >>> fit = pgkit.episodic_natural_actor_critic_weights(psi, 3.0 + 0.5 * psi[:, 0])
      >>> print(round(float(fit.natural_gradient[0]), 4), round(float(fit.baseline_weights[0]), 4))
      0.5 3.0

    Reference:
      Peters, Schaal. Natural Actor-Critic. Neurocomputing 71(7-9), 2008, section 3.3 and
      table 2 (episodic natural actor-critic). https://doi.org/10.1016/j.neucom.2007.11.026
    """
    if jnp.ndim(score_sums) != 2:
        raise ValueError(
            "episodic_natural_actor_critic_weights: `score_sums` must have shape [M, P], got "
            f"{jnp.shape(score_sums)}."
        )
    num_rows, num_params = jnp.shape(score_sums)
    if jnp.shape(returns) != (num_rows,):
        raise ValueError(
            f"episodic_natural_actor_critic_weights: `returns` has shape {jnp.shape(returns)}, "
            f"expected ({num_rows},) to match `score_sums` [M, P] = {jnp.shape(score_sums)}."
        )
    dtype = jnp.result_type(score_sums, returns, float)
    if baseline_features is None:
        baseline_features = jnp.ones((num_rows, 1), dtype)
    elif jnp.ndim(baseline_features) != 2 or jnp.shape(baseline_features)[0] != num_rows:
        raise ValueError(
            "episodic_natural_actor_critic_weights: `baseline_features` has shape "
            f"{jnp.shape(baseline_features)}, expected [M, K] with M = {num_rows}."
        )
    if weights is None:
        weights = jnp.full((num_rows,), 1.0 / num_rows, dtype)
    elif jnp.shape(weights) != (num_rows,):
        raise ValueError(
            f"episodic_natural_actor_critic_weights: `weights` has shape {jnp.shape(weights)}, "
            f"expected ({num_rows},) to match `score_sums` [M, P] = {jnp.shape(score_sums)}."
        )
    else:
        weights = jnp.asarray(weights, dtype) / jnp.sum(weights)
    if iterations is not None and (
        isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1
    ):
        raise ValueError(
            "episodic_natural_actor_critic_weights: `iterations` must be None (exact solve) or a "
            f"static Python int >= 1, got {iterations!r}."
        )
    if stop_target_gradients:
        returns = jax.lax.stop_gradient(returns)
    root = jnp.sqrt(weights)[:, None]
    scores = root * jnp.asarray(score_sums, dtype)
    response = root[:, 0] * jnp.asarray(returns, dtype)
    baseline = root * jnp.asarray(baseline_features, dtype)
    # v's least-squares coefficients of R and of every column of Ψ (K small: an exact solve)
    coefficients, *_ = jnp.linalg.lstsq(baseline, jnp.concatenate([response[:, None], scores], axis=1))
    scores = scores - baseline @ coefficients[:, 1:]
    response = response - baseline @ coefficients[:, 0]
    # rows scaled by √M so that the uniform 1/M of the Fisher helpers gives back Σ_m q_m (…)
    scale = jnp.sqrt(jnp.asarray(num_rows, dtype))
    if iterations is None:
        w = compatible_features_weights(scale * scores, scale * response, ridge=ridge)
        cg_residual = jnp.zeros((), dtype)
    else:
        cg = conjugate_gradient(
            lambda v: empirical_fisher_vector_product(scale * scores, v, damping=ridge),
            scores.T @ response,
            iterations=iterations,
        )
        w, cg_residual = cg.solution, cg.residual_norm_squared
    v = coefficients[:, 0] - coefficients[:, 1:] @ w
    residuals = returns - score_sums @ w - baseline_features @ v
    return NaturalActorCriticWeights(w, v, residuals, cg_residual)
