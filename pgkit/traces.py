"""Eligibility traces over parameter pytrees: accumulating and replacing traces, TD(λ) and
actor-critic-with-traces steps (the backward view).

Estimator layer: imports only jax (and the private ``pgkit._checks``). Every function handles one
transition and is pure: the caller carries the traces (start them at zeros, e.g.
``jax.tree.map(jnp.zeros_like, params)``).

Episode semantics. ``discount`` is the decay applied to the *incoming* trace at step t, i.e.
the previous transition's bootstrapping factor with the trace cut at any episode end:

    discount = discounts[t−1] · (1 − dones[t−1])   (= γ·(1 − done_{t−1}); 0 at an episode's first step)

so the trace is reset after both terminations and truncations (nothing crosses a done), while the
TD error of step t uses its own ``discounts[t]`` (0 at a termination, γ at a truncation, which
bootstraps from V of the final observation). ``discount`` and ``td_error`` may be scalars (one
stream) or carry leading batch axes ``[*E]`` shared by every leaf (leaves ``[*E, ...]``); or vmap.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

from pgkit import _checks

__all__ = [
    "TraceUpdate",
    "ActorCriticTraceUpdate",
    "accumulating_trace",
    "replacing_trace",
    "td_lambda_update",
    "td_lambda_actor_critic_update",
]


class TraceUpdate(NamedTuple):
    """One TD(λ) step.

    Attributes:
      trace: e_t, the new trace, a pytree with the structure and leaf shapes of the parameters.
      increment: δ_t e_t, the ascent increment, a pytree with the structure of ``trace``.
    """

    trace: object
    increment: object


class ActorCriticTraceUpdate(NamedTuple):
    """One actor-critic step with traces.

    Attributes:
      critic_trace: z^w_t, a pytree with the structure and leaf shapes of the critic parameters.
      actor_trace: z^θ_t, a pytree with the structure and leaf shapes of the actor parameters.
      critic_increment: δ_t z^w_t, a pytree with the structure of ``critic_trace``.
      actor_increment: δ_t z^θ_t, a pytree with the structure of ``actor_trace``.
    """

    critic_trace: object
    actor_trace: object
    critic_increment: object
    actor_increment: object


def _lead(x, leaf):
    """Broadcast a scalar or leading-batch array x against leaf [*E, ...]."""
    x = jnp.asarray(x)
    return jnp.reshape(x, x.shape + (1,) * (jnp.ndim(leaf) - x.ndim))


def accumulating_trace(trace, gradient, *, discount, lambda_):
    r"""Accumulating eligibility trace: decay the trace and add the current gradient.

    e_t = γλ e_{t−1} + ∇_w f(s_t)      (γ = ``discount``: 0 at an episode's first step)

    Args:
      trace: e_{t−1}, pytree of arrays (zeros at the start).
      gradient: ∇_w f at step t (∇v(s_t) for a critic, ∇log π(a_t|s_t) for an actor), same
        structure and shapes as ``trace``.
      discount: decay of the incoming trace, ``discounts[t−1]·(1 − dones[t−1])``, scalar or the
        leading batch shape ``[*E]`` of the leaves (traced).
      lambda_: λ ∈ [0, 1] (traced).

    Returns:
      e_t, same structure as ``trace``.

    Gradients:
      None intended (a running sum of gradients); linear in ``trace`` and ``gradient``.

    Example:
      >>> import jax.numpy as jnp
      >>> import pgkit
      >>> e = pgkit.accumulating_trace({"w": jnp.ones(2)}, {"w": jnp.array([1.0, 0.0])},
      ...                              discount=0.9, lambda_=0.5)
      >>> print(e["w"])
      [1.45 0.45]

    Reference:
      Sutton & Barto, "Reinforcement Learning: An Introduction", 2nd ed., 2018, Sec. 12.2
      (Eq. 12.5), http://incompleteideas.net/book/the-book-2nd.html.
    """
    leaves = _checks.check_same_tree("accumulating_trace", "trace", trace, "gradient", gradient)
    _checks.check_leading_shape("accumulating_trace", "discount", discount, leaves)
    return jax.tree.map(lambda e, g: _lead(discount, e) * lambda_ * e + g, trace, gradient)


def replacing_trace(trace, features, *, discount, lambda_):
    r"""Replacing eligibility trace for tabular or binary features: active features are reset to their value.

    e_t[i] = x_t[i]                if x_t[i] ≠ 0
    e_t[i] = γλ e_{t−1}[i]         otherwise

    For one-hot / binary features (x ∈ {0, 1}) this is the classic replacing trace
    e_t = max(γλ e_{t−1}, x_t) (Singh & Sutton 1996); for general features it sets every
    active coordinate to the feature value (the gradient of a linear function) instead of
    adding to it. Apply it to the leaves of linear (tabular) parameters; for nonlinear
    approximators use ``accumulating_trace``.

    Args:
      trace: e_{t−1}, pytree of arrays.
      features: x_t = ∇_w v(s_t) for a linear v, same structure and shapes (e.g. a one-hot
        state indicator ``[S]``).
      discount: decay of the incoming trace, ``discounts[t−1]·(1 − dones[t−1])``, scalar or the
        leading batch shape of the leaves (traced).
      lambda_: λ ∈ [0, 1] (traced).

    Returns:
      e_t, same structure as ``trace``.

    Gradients:
      None intended.

    Example:
      >>> import jax.numpy as jnp
      >>> import pgkit
      >>> e = pgkit.replacing_trace(jnp.array([1.0, 1.0]), jnp.array([1.0, 0.0]),
      ...                           discount=0.9, lambda_=0.5)
      >>> print(e)
      [1.   0.45]

    Reference:
      Singh & Sutton, "Reinforcement Learning with Replacing Eligibility Traces", Machine
      Learning 22, 1996, https://doi.org/10.1007/BF00114726; Sutton & Barto, 2018, Sec. 12.2.
    """
    leaves = _checks.check_same_tree("replacing_trace", "trace", trace, "features", features)
    _checks.check_leading_shape("replacing_trace", "discount", discount, leaves)
    return jax.tree.map(lambda e, x: jnp.where(x != 0, x, _lead(discount, e) * lambda_ * e), trace, features)


def td_lambda_update(trace, gradient, td_error, *, discount, lambda_):
    r"""One backward-view TD(λ) step: update the accumulating trace and return the increment δ_t e_t.

    e_t = γλ e_{t−1} + ∇v(s_t),   Δw_t = δ_t e_t,   δ_t = r_t + discounts_t v(s'_t) − v(s_t)

    Apply ``w ← w + α Δw_t`` (semi-gradient ascent), or feed ``−Δw_t`` to an optax optimizer as
    a gradient. With the weights held fixed over an episode (offline), Σ_t δ_t e_t equals the
    forward-view Σ_t (G^λ_t − v(s_t)) ∇v(s_t).

    Args:
      trace: e_{t−1}, pytree (zeros at the start).
      gradient: ∇_w v(s_t), same structure and shapes as ``trace``.
      td_error: δ_t, scalar or leading batch shape ``[*E]`` (its gradient is not used).
      discount: decay of the incoming trace, ``discounts[t−1]·(1 − dones[t−1])`` (traced).
      lambda_: λ ∈ [0, 1] (traced).

    Returns:
      ``TraceUpdate(trace=e_t, increment=δ_t e_t)``, pytrees like ``trace``.

    Gradients:
      None: ``td_error`` is stopped; this is an update rule, not a loss.

    Example:
      >>> import jax.numpy as jnp
      >>> import pgkit
      >>> out = pgkit.td_lambda_update(jnp.zeros(2), jnp.array([1.0, 2.0]), 0.5,
      ...                              discount=0.0, lambda_=0.9)
      >>> print(out.trace, out.increment)
      [1. 2.] [0.5 1. ]

    Reference:
      Sutton, "Learning to Predict by the Methods of Temporal Differences", Machine Learning 3,
      1988, https://doi.org/10.1007/BF00115009; Sutton & Barto, 2018, Sec. 12.2,
      http://incompleteideas.net/book/the-book-2nd.html.
    """
    leaves = _checks.check_same_tree("td_lambda_update", "trace", trace, "gradient", gradient)
    _checks.check_leading_shape("td_lambda_update", "discount", discount, leaves)
    _checks.check_leading_shape("td_lambda_update", "td_error", td_error, leaves)
    new_trace = accumulating_trace(trace, gradient, discount=discount, lambda_=lambda_)
    td_error = jax.lax.stop_gradient(td_error)
    return TraceUpdate(new_trace, jax.tree.map(lambda e: _lead(td_error, e) * e, new_trace))


def td_lambda_actor_critic_update(
    critic_trace, actor_trace, critic_grad, actor_grad, td_error, *, discount, lambda_critic, lambda_actor
):
    r"""One step of actor-critic with eligibility traces (backward view) for critic and actor.

    z^w_t = γλ^w z^w_{t−1} + ∇_w v(s_t),          Δw = δ_t z^w_t
    z^θ_t = γλ^θ z^θ_{t−1} + ∇_θ log π(a_t|s_t),  Δθ = δ_t z^θ_t
    δ_t = r_t + discounts_t v(s'_t) − v(s_t)

    Apply ``w ← w + α^w Δw`` and ``θ ← θ + α^θ Δθ``. Sutton & Barto's episodic box also scales
    the actor gradient by I = γ^t; that factor is left out here, as in common practice (pass
    ``I·∇log π`` as ``actor_grad`` to keep it).

    Args:
      critic_trace: z^w_{t−1}, pytree like the critic parameters (zeros at the start).
      actor_trace: z^θ_{t−1}, pytree like the actor parameters.
      critic_grad: ∇_w v(s_t), same structure as ``critic_trace``.
      actor_grad: ∇_θ log π(a_t|s_t), same structure as ``actor_trace``.
      td_error: δ_t, scalar or leading batch shape ``[*E]``.
      discount: decay of the incoming traces, ``discounts[t−1]·(1 − dones[t−1])`` (traced).
      lambda_critic: λ^w ∈ [0, 1] (traced).
      lambda_actor: λ^θ ∈ [0, 1] (traced).

    Returns:
      ``ActorCriticTraceUpdate(critic_trace, actor_trace, critic_increment, actor_increment)``:
      pytrees with the structure of ``critic_trace`` (critic) and ``actor_trace`` (actor).

    Gradients:
      None: ``td_error`` is stopped; this is an update rule, not a loss.

    Example:
      >>> import jax.numpy as jnp
      >>> import pgkit
      >>> out = pgkit.td_lambda_actor_critic_update(
      ...     jnp.ones(1), jnp.ones(1), jnp.ones(1), jnp.full(1, 2.0), 0.5,
      ...     discount=0.9, lambda_critic=1.0, lambda_actor=0.0)
      >>> print(out.critic_increment, out.actor_increment)
      [0.95] [1.]

    Reference:
      Sutton & Barto, "Reinforcement Learning: An Introduction", 2nd ed., 2018, Sec. 13.5
      ("Actor–Critic with Eligibility Traces"), http://incompleteideas.net/book/the-book-2nd.html.
    """
    name = "td_lambda_actor_critic_update"
    for trace_name, trace, grad_name, grad in (
        ("critic_trace", critic_trace, "critic_grad", critic_grad),
        ("actor_trace", actor_trace, "actor_grad", actor_grad),
    ):
        leaves = _checks.check_same_tree(name, trace_name, trace, grad_name, grad)
        _checks.check_leading_shape(name, "discount", discount, leaves)
        _checks.check_leading_shape(name, "td_error", td_error, leaves)
    critic = td_lambda_update(critic_trace, critic_grad, td_error, discount=discount, lambda_=lambda_critic)
    actor = td_lambda_update(actor_trace, actor_grad, td_error, discount=discount, lambda_=lambda_actor)
    return ActorCriticTraceUpdate(critic.trace, actor.trace, critic.increment, actor.increment)
