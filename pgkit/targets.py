"""Target-network updates over parameter pytrees: Polyak averaging and periodic hard copies.

Estimator layer: imports only jax (and the private ``pgkit._checks``). Both functions take the
online parameters first and the target parameters second, and work on any pytree with matching
structure (an equinox module included): floating-array leaves are updated; every other leaf
(integer arrays such as step counters, activation functions, Python scalars) is returned from
the target unchanged. They are jit- and vmap-friendly: ``tau`` and ``step`` are traced.
"""

import jax
import jax.numpy as jnp

from pgkit import _checks

__all__ = ["polyak_update", "periodic_update"]


def _map_inexact(fn, online_params, target_params):
    """Apply fn to floating-array leaf pairs; every other leaf comes back from target_params unchanged."""
    return jax.tree.map(
        lambda o, t: fn(o, t) if _checks.is_inexact_array(t) else t, online_params, target_params
    )


def polyak_update(online_params, target_params, *, tau):
    r"""Polyak (exponential moving average) target update; the online parameters get weight τ.

    θ_targ ← τ θ + (1 − τ) θ_targ

    Same semantics as ``optax.incremental_update(new_tensors=online_params,
    old_tensors=target_params, step_size=tau)`` (the project's estimator layer does not import
    optax; a test checks the two agree). τ = 1 copies, τ = 0 keeps the target.

    Args:
      online_params: θ, pytree (e.g. an equinox module); its floating-array leaves are averaged.
      target_params: θ_targ, pytree with the same structure and floating-leaf shapes.
      tau: τ ∈ [0, 1], weight of the online parameters (traced scalar; DDPG/TD3/SAC use 0.005).

    Returns:
      New target parameters, same structure and dtypes as ``target_params`` (non-floating leaves
      are the target's, unchanged).

    Gradients:
      None intended (an update rule, applied outside any loss); the map is linear in both trees.

    Example:
      >>> import jax.numpy as jnp
      >>> import pgkit
      >>> new = pgkit.polyak_update({"w": jnp.ones(2)}, {"w": jnp.zeros(2)}, tau=0.1)
      >>> print(new["w"])
      [0.1 0.1]

    Reference:
      Polyak & Juditsky, "Acceleration of Stochastic Approximation by Averaging", SIAM J.
      Control Optim., 1992, https://doi.org/10.1137/0330046; Lillicrap et al., "Continuous
      control with deep reinforcement learning", 2016, https://arxiv.org/abs/1509.02971.
    """
    _checks.check_same_tree(
        "polyak_update", "online_params", online_params, "target_params", target_params, only_inexact=True
    )

    def average(online, target):
        target = jnp.asarray(target)
        weight = jnp.asarray(tau, target.dtype)
        return (weight * online + (1 - weight) * target).astype(target.dtype)

    return _map_inexact(average, online_params, target_params)


def periodic_update(online_params, target_params, *, step, period):
    r"""Periodic hard target update: copy the online parameters when step is a multiple of period.

    θ_targ ← θ if step mod period = 0 else θ_targ

    Implemented with ``jnp.where`` over the tree, so ``step`` may be traced (inside
    ``lax.scan``); there is no Python branch. With ``step`` counted from 0 the first call copies;
    count from 1 (call after incrementing) to copy after every ``period`` updates.

    Args:
      online_params: θ, pytree (e.g. an equinox module); its floating-array leaves are copied.
      target_params: θ_targ, pytree with the same structure and floating-leaf shapes.
      step: integer step counter, scalar (traced).
      period: copy period ≥ 1, int (static or traced).

    Returns:
      New target parameters, same structure and dtypes as ``target_params`` (non-floating leaves
      are the target's, unchanged).

    Gradients:
      None intended (an update rule).

    Example:
      >>> import jax.numpy as jnp
      >>> import pgkit
      >>> online, target = {"w": jnp.ones(2)}, {"w": jnp.zeros(2)}
      >>> print(pgkit.periodic_update(online, target, step=3, period=4)["w"],
      ...       pgkit.periodic_update(online, target, step=8, period=4)["w"])
      [0. 0.] [1. 1.]

    Reference:
      Mnih et al., "Human-level control through deep reinforcement learning", Nature, 2015,
      https://doi.org/10.1038/nature14236.
    """
    _checks.check_same_tree(
        "periodic_update", "online_params", online_params, "target_params", target_params, only_inexact=True
    )
    if isinstance(period, int) and not isinstance(period, bool) and period < 1:
        raise _checks.argument_error("periodic_update", "period", "be an int >= 1", repr(period))
    _checks.check_shape("periodic_update", "step", step, ())
    copy = jnp.mod(step, period) == 0

    def select(online, target):
        target = jnp.asarray(target)
        return jnp.where(copy, jnp.asarray(online).astype(target.dtype), target)

    return _map_inexact(select, online_params, target_params)
