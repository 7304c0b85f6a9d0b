"""Private helpers of the estimator modules: argument checks, stop-gradient, dtypes, time-axis plumbing.

One home for what each estimator module (returns, critics, objectives, estimators, actions,
traces, targets, divergences, baselines, importance, cem, natural) would otherwise write for
itself. The module is private (its file name has a leading underscore); the names inside it are
not, so that the estimator modules import them as ``from pgkit import _checks`` and call
``_checks.check_same_shape(...)`` (as equinox keeps ``_src`` helpers). It imports only jax.

Every check runs at trace time on static shapes (it costs nothing at run time, and works under
``jax.jit`` and ``jax.vmap``) and raises ``ValueError`` with one message style::

    <function>: <argument> must <what was expected>; got <what was passed>.

e.g. ``gae: values must have the shape of rewards (5, 2); got shape (5, 3).``
"""

import operator

import jax
import jax.numpy as jnp

__all__ = [
    "argument_error",
    "as_float",
    "broadcast_param",
    "broadcast_shape",
    "check_action_arrays",
    "check_action_bounds",
    "check_broadcasts_to",
    "check_has_action_axis",
    "check_leading_shape",
    "check_rank",
    "check_same_shape",
    "check_same_tree",
    "check_shape",
    "check_static_int",
    "check_time_major",
    "continues",
    "episode_starts",
    "float_dtype",
    "forward_scan",
    "is_inexact_array",
    "maybe_stop_gradient",
    "normalise_axes",
    "reverse_scan",
]


# ---------------------------------------------------------------------------------------------
# The one error message.
# ---------------------------------------------------------------------------------------------


def argument_error(function: str, argument: str, expected: str, actual: str) -> ValueError:
    """The ``ValueError`` for a bad argument: ``"<function>: <argument> must <expected>; got <actual>."``.

    Args:
      function: name of the public function that was called (e.g. ``"gae"``).
      argument: name of the offending argument, as the caller spells it.
      expected: what was expected, as the rest of a sentence after "must" (``"have shape (3,)"``).
      actual: what was passed (``"shape (4,)"``, ``"dtype int32"``, ``"2.0"``).

    Returns:
      The exception (the caller raises it, so that tracebacks point at the check).
    """
    return ValueError(f"{function}: {argument} must {expected}; got {actual}.")


def _shape(x) -> tuple[int, ...]:
    return tuple(jnp.shape(x))


# ---------------------------------------------------------------------------------------------
# Shapes of arrays.
# ---------------------------------------------------------------------------------------------


def check_same_shape(function: str, reference_name: str, reference, **others) -> tuple[int, ...]:
    """Checks that every array in ``others`` has the shape of ``reference``; returns that shape.

    Raises ``ValueError`` naming the first argument (in keyword order) whose shape differs.
    """
    shape = _shape(reference)
    for name, value in others.items():
        if _shape(value) != shape:
            raise argument_error(
                function, name, f"have the shape of {reference_name} {shape}", f"shape {_shape(value)}"
            )
    return shape


def check_time_major(function: str, reference_name: str, reference, **others) -> tuple[int, ...]:
    """Checks that ``reference`` is time-major ``[T, *B]`` with T >= 1 and every other array has its shape.

    Returns the common shape. Raises ``ValueError`` naming ``reference_name`` for a scalar or an
    empty time axis, or the first other argument whose shape differs.
    """
    shape = _shape(reference)
    if len(shape) < 1 or shape[0] < 1:
        raise argument_error(function, reference_name, "be time-major [T, *B] with T >= 1", f"shape {shape}")
    return check_same_shape(function, reference_name, reference, **others)


def check_shape(
    function: str, name: str, x, shape: tuple[int, ...], *, allow_scalar: bool = False, meaning: str = ""
) -> None:
    """Checks that ``x`` has exactly ``shape`` (or is a scalar, with ``allow_scalar``).

    ``meaning`` (e.g. ``"the action axis"``) is added to the message in parentheses.
    """
    shape = tuple(shape)
    if _shape(x) == shape or (allow_scalar and _shape(x) == ()):
        return
    expected = ("be a scalar or have" if allow_scalar else "have") + f" shape {shape}"
    if meaning:
        expected += f" ({meaning})"
    raise argument_error(function, name, expected, f"shape {_shape(x)}")


def check_action_bounds(function: str, action_size: int, **bounds) -> None:
    """Checks that every bound (``low``, ``high``, a noise scale) is a scalar or has shape ``(action_size,)``."""
    for name, value in bounds.items():
        check_shape(function, name, value, (action_size,), allow_scalar=True, meaning="the action axis")


def check_rank(function: str, name: str, x, rank: int, layout: str) -> None:
    """Checks that ``x`` has ``rank`` axes; ``layout`` names them in the message (``"[N, D]"``)."""
    if jnp.ndim(x) != rank:
        raise argument_error(function, name, f"have shape {layout}", f"shape {_shape(x)}")


def check_has_action_axis(function: str, name: str, x, *, axis: str = "an action") -> None:
    """Checks that ``x`` has at least one axis: the action axis, last, ``[*B, A]``.

    ``axis`` names that axis in the message (``"a category"`` for logits).
    """
    if jnp.ndim(x) < 1:
        raise argument_error(function, name, f"have {axis} axis (last), shape [*B, A]", f"shape {_shape(x)}")


def check_action_arrays(function: str, batch_shape: tuple[int, ...], **arrays) -> None:
    """Checks that every array has shape ``batch_shape + (A,)`` with one common A.

    Raises ``ValueError`` naming the first array with the wrong batch shape or rank, or the first
    whose action axis differs from the one before it.
    """
    batch_shape = tuple(batch_shape)
    first = None
    for name, value in arrays.items():
        shape = _shape(value)
        if len(shape) != len(batch_shape) + 1 or shape[:-1] != batch_shape:
            expected = f"have shape {batch_shape} + (A,) (action axis last)"
            raise argument_error(function, name, expected, f"shape {shape}")
        if first is None:
            first = (name, shape)
        elif shape != first[1]:
            raise argument_error(function, name, f"have the shape of {first[0]} {first[1]}", f"shape {shape}")


def check_broadcasts_to(function: str, name: str, x, shape: tuple[int, ...], *, reference_name: str = "") -> None:
    """Checks that ``x`` broadcasts to ``shape`` without enlarging it (a scalar always does).

    ``reference_name`` names the argument that ``shape`` belongs to, for the message.
    """
    shape = tuple(shape)
    try:
        broadcast = tuple(jnp.broadcast_shapes(_shape(x), shape))
    except ValueError:
        broadcast = None
    if broadcast != shape:
        target = f"the shape of {reference_name} {shape}" if reference_name else f"shape {shape}"
        raise argument_error(function, name, f"be a scalar or broadcast to {target}", f"shape {_shape(x)}")


def broadcast_shape(function: str, reference_name: str, reference, **others) -> tuple[int, ...]:
    """The shape that ``reference`` and ``others`` broadcast to together.

    Raises ``ValueError`` naming the first argument (in keyword order) that does not broadcast
    with the ones before it.
    """
    shape = _shape(reference)
    for name, value in others.items():
        try:
            shape = tuple(jnp.broadcast_shapes(shape, _shape(value)))
        except ValueError:
            expected = f"broadcast with {reference_name} and the arguments before it (together shape {shape})"
            raise argument_error(function, name, expected, f"shape {_shape(value)}") from None
    return shape


def broadcast_param(function: str, name: str, x, shape: tuple[int, ...], dtype) -> jax.Array:
    """A (traced) float hyperparameter as an array of ``dtype`` broadcast to ``shape``.

    Raises ``ValueError`` naming ``name`` if it is not a scalar or an array that broadcasts to
    ``shape``.
    """
    x = jnp.asarray(x, dtype=dtype)
    check_broadcasts_to(function, name, x, shape)
    return jnp.broadcast_to(x, shape)


def check_leading_shape(function: str, name: str, x, leaves) -> None:
    """Checks that the shape of ``x`` leads the shape of every leaf (a scalar, or the batch axes ``[*E]``)."""
    shape = _shape(x)
    for i, leaf in enumerate(leaves):
        if _shape(leaf)[: len(shape)] != shape:
            expected = f"be a scalar or have the leading (batch) shape of every leaf (leaf {i}: shape {_shape(leaf)})"
            raise argument_error(function, name, expected, f"shape {shape}")


# ---------------------------------------------------------------------------------------------
# Pytrees.
# ---------------------------------------------------------------------------------------------


def is_inexact_array(x) -> bool:
    """Whether ``x`` is a floating (or complex) array: a jax or NumPy array or a tracer.

    Python scalars and other objects (activation functions, strings) are not.
    """
    dtype = getattr(x, "dtype", None)
    return dtype is not None and hasattr(x, "shape") and jnp.issubdtype(dtype, jnp.inexact)


def check_same_tree(
    function: str, reference_name: str, reference, name: str, value, *, only_inexact: bool = False
) -> list:
    """Checks that ``value`` has the tree structure of ``reference`` and the shape of each of its leaves.

    With ``only_inexact``, leaves need to be floating arrays (:func:`is_inexact_array`) at the same
    places, and only those are compared by shape (integer counters and non-array leaves may
    differ). Returns the leaves of ``reference``.
    """
    reference_leaves, reference_def = jax.tree.flatten(reference)
    leaves, tree_def = jax.tree.flatten(value)
    if tree_def != reference_def:
        expected = f"have the tree structure of {reference_name} {reference_def}"
        raise argument_error(function, name, expected, str(tree_def))
    for i, (r, v) in enumerate(zip(reference_leaves, leaves)):
        if only_inexact:
            if is_inexact_array(r) != is_inexact_array(v):
                expected = f"be a floating array exactly where {reference_name} leaf {i} is one"
                actual = f"{type(v).__name__} against {type(r).__name__}"
                raise argument_error(function, f"{name} leaf {i}", expected, actual)
            if not is_inexact_array(r):
                continue
        if _shape(r) != _shape(v):
            expected = f"have the shape of {reference_name} leaf {i} {_shape(r)}"
            raise argument_error(function, f"{name} leaf {i}", expected, f"shape {_shape(v)}")
    return reference_leaves


# ---------------------------------------------------------------------------------------------
# Static ints.
# ---------------------------------------------------------------------------------------------


def check_static_int(
    function: str, name: str, value, *, low: int = 1, high: int | None = None, meaning: str = ""
) -> int:
    """Checks that ``value`` is a Python int (not a bool, not an array) in ``[low, high]``; returns it.

    ``high=None`` means no upper bound. ``meaning`` is added to the message in parentheses.
    """
    valid = isinstance(value, int) and not isinstance(value, bool)
    valid = valid and low <= value and (high is None or value <= high)
    if not valid:
        expected = f"be a static int >= {low}" if high is None else f"be a static int in [{low}, {high}]"
        if meaning:
            expected += f" ({meaning})"
        raise argument_error(function, name, expected, repr(value))
    return value


def normalise_axes(function: str, name: str, axis, ndim: int) -> tuple[int, ...]:
    """Static ``axis`` (None, an int, or a tuple or list of ints) of an array ``name`` of rank ``ndim``.

    Returns the axes as a sorted tuple of non-negative ints (every axis for None). Raises
    ``ValueError`` naming ``axis`` for a non-int, an axis out of ``[-ndim, ndim)`` or a repeat.
    """
    if axis is None:
        return tuple(range(ndim))
    axes = axis if isinstance(axis, (tuple, list)) else (axis,)
    out = []
    for a in axes:
        try:
            a = operator.index(a)
        except TypeError:
            a = None
        if a is None or not -ndim <= a < ndim:
            expected = f"be None or ints in [-{ndim}, {ndim}) for {name} of rank {ndim}"
            raise argument_error(function, "axis", expected, repr(axis))
        out.append(a % ndim)
    if len(set(out)) != len(out):
        raise argument_error(function, "axis", "not repeat an axis", repr(axis))
    return tuple(sorted(out))


# ---------------------------------------------------------------------------------------------
# Dtypes and stop-gradient.
# ---------------------------------------------------------------------------------------------


def float_dtype(*arrays) -> jnp.dtype:
    """The common floating dtype of ``arrays`` (the default float if that type is not floating)."""
    dtype = jnp.result_type(*arrays)
    if not jnp.issubdtype(dtype, jnp.floating):
        dtype = jnp.result_type(float)
    return dtype


def as_float(x) -> jax.Array:
    """``x`` as a jax array, cast to the default float if it is not already inexact (bool, int)."""
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.inexact):
        x = x.astype(jnp.result_type(float))
    return x


def maybe_stop_gradient(x, stop_target_gradients: bool):
    """Every leaf of ``x`` as a jax array, with its gradient stopped if ``stop_target_gradients``.

    ``x`` may be an array, a NumPy array or scalar, or a pytree of them (a result NamedTuple).
    NumPy inputs come back as jax arrays either way, so that the result does not depend on the
    switch's value.
    """
    if stop_target_gradients:
        return jax.tree.map(lambda leaf: jax.lax.stop_gradient(jnp.asarray(leaf)), x)
    return jax.tree.map(jnp.asarray, x)


# ---------------------------------------------------------------------------------------------
# The time axis of the temporal estimators ([T, *B], scanned over axis 0).
# ---------------------------------------------------------------------------------------------


def continues(dones) -> jax.Array:
    """Boolean ``[T, *B]``: True where step t continues into step t + 1 within the rollout.

    False on done steps and on the last step of the rollout.
    """
    cont = jnp.logical_not(jnp.asarray(dones).astype(bool))
    return cont.at[-1].set(False)


def episode_starts(dones) -> jax.Array:
    """Boolean ``[T, *B]``: True where step t is the first step of an episode within the rollout."""
    dones = jnp.asarray(dones).astype(bool)
    first = jnp.ones_like(dones[:1])
    return jnp.concatenate([first, dones[:-1]], axis=0)


def reverse_scan(step, init, xs):
    """Runs ``step`` backwards in time (t = T - 1, ..., 0) and returns the stacked outputs.

    Pass a ``step`` defined at module level: ``lax.scan`` caches its trace on the function
    object, so eager (un-jitted) calls do not re-trace and re-compile the loop every time.
    """
    _, ys = jax.lax.scan(step, init, xs, reverse=True)
    return ys


def forward_scan(step, init, xs):
    """Runs ``step`` forwards in time (t = 0, ..., T - 1) and returns the stacked outputs (see :func:`reverse_scan`)."""
    _, ys = jax.lax.scan(step, init, xs)
    return ys
