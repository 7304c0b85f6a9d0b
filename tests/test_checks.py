"""pgkit._checks: the estimator modules' shared argument checks, stop-gradient, dtypes and time-axis plumbing.

Each helper is tested directly: what it accepts, what it returns, and the one message style of
its ``ValueError`` ("<function>: <argument> must <expected>; got <actual>.").
"""

import re
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pgkit import _checks

MESSAGE = re.compile(r"^(?P<function>\w+): (?P<argument>[\w ]+) must (?P<expected>.+); got (?P<actual>.+)\.$", re.S)


def message(call):
    """The parts of the message of the ValueError that ``call()`` raises."""
    with pytest.raises(ValueError) as info:
        call()
    match = MESSAGE.match(str(info.value))
    assert match is not None, f"message not in the house style: {info.value}"
    return match.groupdict()


def test_argument_error_is_one_sentence_naming_function_argument_expected_and_actual():
    error = _checks.argument_error("gae", "values", "have shape (3,)", "shape (4,)")
    assert isinstance(error, ValueError)
    assert str(error) == "gae: values must have shape (3,); got shape (4,)."


def test_check_same_shape_returns_the_shape_and_names_the_first_mismatch():
    x = jnp.zeros((5, 2))
    assert _checks.check_same_shape("f", "rewards", x, discounts=x, dones=np.zeros((5, 2))) == (5, 2)
    assert _checks.check_same_shape("f", "rewards", 1.0) == ()
    parts = message(lambda: _checks.check_same_shape("f", "rewards", x, discounts=x, dones=jnp.zeros((5, 3)),
                                                     values=jnp.zeros(1)))
    assert parts == {"function": "f", "argument": "dones", "expected": "have the shape of rewards (5, 2)",
                     "actual": "shape (5, 3)"}


def test_check_time_major_wants_a_time_axis_with_a_step():
    x = jnp.zeros((5, 2))
    assert _checks.check_time_major("gae", "rewards", x, values=x) == (5, 2)
    assert _checks.check_time_major("gae", "rewards", jnp.zeros(1)) == (1,)
    for bad in (jnp.float32(0.0), jnp.zeros((0, 2))):
        parts = message(lambda: _checks.check_time_major("gae", "rewards", bad, values=bad))
        assert parts["argument"] == "rewards" and "[T, *B] with T >= 1" in parts["expected"]
        assert parts["actual"] == f"shape {bad.shape}"
    assert message(lambda: _checks.check_time_major("gae", "rewards", x, values=x[:4]))["argument"] == "values"


def test_check_shape_and_check_rank():
    _checks.check_shape("f", "old_mean", jnp.zeros(3), (3,))
    _checks.check_shape("f", "low", -1.0, (3,), allow_scalar=True)
    parts = message(lambda: _checks.check_shape("f", "low", jnp.zeros(2), (3,), allow_scalar=True, meaning="the action axis"))
    assert parts["expected"] == "be a scalar or have shape (3,) (the action axis)" and parts["actual"] == "shape (2,)"
    assert message(lambda: _checks.check_shape("f", "old_mean", 0.0, (3,)))["expected"] == "have shape (3,)"
    _checks.check_rank("f", "samples", jnp.zeros((4, 2)), 2, "[N, D]")
    parts = message(lambda: _checks.check_rank("f", "samples", jnp.zeros(4), 2, "[N, D]"))
    assert parts["argument"] == "samples" and parts["expected"] == "have shape [N, D]" and parts["actual"] == "shape (4,)"


def test_check_action_bounds_wants_scalars_or_the_action_axis():
    _checks.check_action_bounds("f", 3, low=-1.0, high=jnp.ones(3), scale=np.float32(0.1))
    parts = message(lambda: _checks.check_action_bounds("f", 3, low=-1.0, high=jnp.ones((2, 3))))
    assert parts == {"function": "f", "argument": "high", "expected": "be a scalar or have shape (3,) (the action axis)",
                     "actual": "shape (2, 3)"}


def test_check_has_action_axis():
    _checks.check_has_action_axis("f", "mean", jnp.zeros(3))
    parts = message(lambda: _checks.check_has_action_axis("f", "mean", 0.0))
    assert parts["expected"] == "have an action axis (last), shape [*B, A]" and parts["actual"] == "shape ()"
    assert "a category axis" in message(lambda: _checks.check_has_action_axis("f", "logits", 0.0, axis="a category"))["expected"]


def test_check_action_arrays_wants_one_batch_shape_and_one_action_axis():
    p = jnp.zeros((4, 3))
    _checks.check_action_arrays("f", (4,), probs=p, q_values=p)
    assert message(lambda: _checks.check_action_arrays("f", (4,), probs=p, q_values=jnp.zeros(4)))["argument"] == "q_values"
    assert message(lambda: _checks.check_action_arrays("f", (5,), probs=p))["argument"] == "probs"
    parts = message(lambda: _checks.check_action_arrays("f", (4,), probs=p, q_values=jnp.zeros((4, 2))))
    assert parts["argument"] == "q_values" and parts["expected"] == "have the shape of probs (4, 3)"


def test_check_broadcasts_to_accepts_smaller_shapes_only():
    for ok in (1.0, jnp.zeros(2), jnp.zeros((1, 2)), jnp.zeros((3, 2))):
        _checks.check_broadcasts_to("f", "weights", ok, (3, 2))
    for bad in (jnp.zeros(3), jnp.zeros((4, 3, 2)), jnp.zeros((3, 1, 2))):
        parts = message(lambda: _checks.check_broadcasts_to("f", "weights", bad, (3, 2), reference_name="log_probs"))
        assert parts["argument"] == "weights" and parts["expected"] == "be a scalar or broadcast to the shape of log_probs (3, 2)"
        assert parts["actual"] == f"shape {bad.shape}"
    assert message(lambda: _checks.check_broadcasts_to("f", "w", jnp.zeros(3), (2,)))["expected"].endswith("shape (2,)")


def test_broadcast_param_casts_and_broadcasts():
    out = _checks.broadcast_param("gae", "lambda_", 0.5, (3, 2), jnp.float32)
    assert out.shape == (3, 2) and out.dtype == jnp.float32 and np.all(np.asarray(out) == 0.5)
    np.testing.assert_array_equal(_checks.broadcast_param("gae", "lambda_", jnp.arange(2.0), (3, 2), jnp.float32)[2], [0.0, 1.0])
    assert message(lambda: _checks.broadcast_param("gae", "lambda_", jnp.ones(3), (3, 2), jnp.float32))["argument"] == "lambda_"


def test_broadcast_shape_of_several_arguments():
    assert _checks.broadcast_shape("f", "mean_p", jnp.zeros((2, 3)), log_std_p=jnp.zeros(3), mean_q=jnp.zeros((1, 3))) == (2, 3)
    parts = message(lambda: _checks.broadcast_shape("f", "mean_p", jnp.zeros((2, 3)), log_std_p=jnp.zeros(3),
                                                    log_std_q=jnp.zeros((3, 3))))
    assert parts["argument"] == "log_std_q" and "(together shape (2, 3))" in parts["expected"]
    assert "log_std_p" not in parts["expected"]  # only the offending argument and the reference are named


def test_check_leading_shape():
    leaves = [jnp.zeros((2, 3)), jnp.zeros((2,))]
    for ok in (0.9, jnp.zeros(2)):
        _checks.check_leading_shape("f", "discount", ok, leaves)
    parts = message(lambda: _checks.check_leading_shape("f", "discount", jnp.zeros(3), leaves))
    assert parts["argument"] == "discount" and "leaf 0: shape (2, 3)" in parts["expected"] and parts["actual"] == "shape (3,)"


def test_check_same_tree_structure_and_leaf_shapes():
    a = {"w": jnp.zeros(3), "b": jnp.zeros(())}
    assert len(_checks.check_same_tree("f", "params", a, "vector", {"w": jnp.ones(3), "b": jnp.ones(())})) == 2
    parts = message(lambda: _checks.check_same_tree("f", "params", a, "vector", {"w": jnp.ones(3)}))
    assert parts["argument"] == "vector" and parts["expected"].startswith("have the tree structure of params")
    parts = message(lambda: _checks.check_same_tree("f", "params", a, "vector", {"w": jnp.ones(2), "b": jnp.ones(())}))
    assert parts["argument"] == "vector leaf 1" and parts["expected"] == "have the shape of params leaf 1 (3,)"
    assert parts["actual"] == "shape (2,)"


def test_check_same_tree_only_inexact_compares_floating_leaves():
    online = {"w": jnp.zeros(3), "count": jnp.zeros(2, jnp.int32), "fn": jnp.tanh}
    _checks.check_same_tree("f", "online_params", online, "target_params",
                            {"w": jnp.ones(3), "count": jnp.zeros(5, jnp.int32), "fn": jnp.tanh}, only_inexact=True)
    parts = message(lambda: _checks.check_same_tree("f", "online_params", online, "target_params",
                                                    {"w": jnp.ones(3, jnp.int32), "count": online["count"], "fn": jnp.tanh},
                                                    only_inexact=True))
    assert "floating" in parts["expected"] and parts["argument"].startswith("target_params leaf")
    with pytest.raises(ValueError, match="shape"):
        _checks.check_same_tree("f", "online_params", online, "target_params",
                                {"w": jnp.ones(2), "count": online["count"], "fn": jnp.tanh}, only_inexact=True)


def test_is_inexact_array():
    assert _checks.is_inexact_array(jnp.zeros(2)) and _checks.is_inexact_array(np.zeros(2, np.float64))
    assert _checks.is_inexact_array(jnp.zeros(2, jnp.complex64))
    assert not any(_checks.is_inexact_array(x) for x in (jnp.zeros(2, jnp.int32), 1.0, jnp.tanh, "w"))
    assert jax.jit(lambda x: jnp.float32(_checks.is_inexact_array(x)))(jnp.zeros(2)) == 1.0  # tracers too


def test_check_static_int():
    assert _checks.check_static_int("f", "n", 3) == 3
    assert _checks.check_static_int("f", "axis", -2, low=-2, high=1) == -2
    for bad in (0, -1, 2.0, True, jnp.int32(2), None):
        parts = message(lambda: _checks.check_static_int("f", "n", bad))
        assert parts["argument"] == "n" and parts["expected"] == "be a static int >= 1" and parts["actual"] == repr(bad)
    parts = message(lambda: _checks.check_static_int("f", "num_elites", 5, high=4, meaning="N = len(scores)"))
    assert parts["expected"] == "be a static int in [1, 4] (N = len(scores))"


def test_normalise_axes():
    assert _checks.normalise_axes("f", "returns", None, 3) == (0, 1, 2)
    assert _checks.normalise_axes("f", "returns", -1, 3) == (2,)
    assert _checks.normalise_axes("f", "returns", (2, 0), 3) == (0, 2)
    assert _checks.normalise_axes("f", "returns", [np.int64(1)], 3) == (1,)
    for bad in (3, -4, 1.0, (0, "1")):
        parts = message(lambda: _checks.normalise_axes("f", "returns", bad, 3))
        assert parts["argument"] == "axis" and parts["expected"] == "be None or ints in [-3, 3) for returns of rank 3"
        assert parts["actual"] == repr(bad)
    assert message(lambda: _checks.normalise_axes("f", "returns", (0, -3), 3))["expected"] == "not repeat an axis"


def test_float_dtype_and_as_float():
    assert _checks.float_dtype(jnp.zeros(2, jnp.bfloat16)) == jnp.bfloat16
    assert _checks.float_dtype(jnp.zeros(2, jnp.int32), jnp.zeros(2, bool)) == jnp.result_type(float)
    assert _checks.float_dtype(jnp.zeros(2, jnp.int32), jnp.zeros(2, jnp.float16)) == jnp.float16
    assert _checks.as_float(np.arange(3)).dtype == jnp.result_type(float)
    assert _checks.as_float(jnp.zeros(2, jnp.bfloat16)).dtype == jnp.bfloat16
    assert _checks.as_float(jnp.zeros(2, jnp.complex64)).dtype == jnp.complex64
    assert isinstance(_checks.as_float([True, False]), jax.Array)


class _Pair(NamedTuple):
    a: jax.Array
    b: jax.Array


def test_maybe_stop_gradient_stops_every_leaf_and_returns_jax_arrays():
    def loss(x, stop):
        out = _checks.maybe_stop_gradient(_Pair(x, 2.0 * x), stop)
        assert isinstance(out, _Pair)
        return jnp.sum(out.a + out.b)

    x = jnp.arange(3.0)
    np.testing.assert_array_equal(jax.grad(loss)(x, True), np.zeros(3))
    np.testing.assert_array_equal(jax.grad(loss)(x, False), np.full(3, 3.0))
    for stop in (True, False):
        out = _checks.maybe_stop_gradient(np.ones(2), stop)
        assert isinstance(out, jax.Array) and out.dtype == jnp.float32
        np.testing.assert_array_equal(out, np.ones(2))
        assert _checks.maybe_stop_gradient(x, stop) is not None


def test_continues_and_episode_starts():
    dones = jnp.array([0, 1, 0, 0, 1, 0], bool)
    np.testing.assert_array_equal(_checks.continues(dones), [1, 0, 1, 1, 0, 0])
    np.testing.assert_array_equal(_checks.episode_starts(dones), [1, 0, 1, 0, 0, 1])
    batch = jnp.stack([dones, jnp.zeros(6, bool)], axis=1)  # [T, E]
    np.testing.assert_array_equal(_checks.continues(batch)[:, 1], [1, 1, 1, 1, 1, 0])
    np.testing.assert_array_equal(_checks.episode_starts(np.asarray(batch, np.float32))[:, 0], [1, 0, 1, 0, 0, 1])


def _sum_step(total, x):
    total = total + x
    return total, total


def test_scans_run_forwards_and_backwards_in_time():
    xs = jnp.arange(1.0, 5.0)
    np.testing.assert_array_equal(_checks.forward_scan(_sum_step, 0.0, xs), np.cumsum([1, 2, 3, 4]))
    np.testing.assert_array_equal(_checks.reverse_scan(_sum_step, 0.0, xs), np.cumsum([4, 3, 2, 1])[::-1])


def test_checks_run_at_trace_time_under_jit_and_vmap():
    @jax.jit
    def f(x, y):
        _checks.check_time_major("f", "x", x, y=y)
        return x + y

    assert f(jnp.zeros(3), jnp.ones(3)).shape == (3,)
    # (JAX appends a note on its filtered traceback to the message of an error raised under jit.)
    with pytest.raises(ValueError, match=r"^f: y must have the shape of x \(3,\); got shape \(2,\)\."):
        f(jnp.zeros(3), jnp.ones(2))
    with pytest.raises(ValueError, match="x must be time-major"):
        jax.vmap(f)(jnp.zeros(3), jnp.ones(3))  # per example the arrays are scalars
