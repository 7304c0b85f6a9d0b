"""The flat public API: every exported name is documented to the house standard, and every
docstring example runs on its own, as if pasted into a fresh interpreter."""

import doctest
import inspect
import re
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pgkit

REQUIRED_SECTIONS = ("Args:", "Returns:", "Gradients:", "Example:", "Reference:")

# Docstrings are read dedented (inspect.getdoc), so section headings start their line.
HEADING = re.compile(r"^(?:Args|Returns|Gradients|Example|Reference|Attributes):", re.M)

# The equation: a line of the description (between the summary line and the first section)
# holding a relation (=, ←, ≈, ∝) with space on both sides, e.g. "A_t = Σ_k (γλ)^k δ_{t+k}" or
# "θ_targ ← τ θ + (1 − τ) θ_targ". Keyword arguments in prose (``causal=True``) and
# comparisons (==) do not count.
RELATION = re.compile(r"\s(?:=|←|≈|∝)\s")

# A shape, stated in one of the ways the docstrings use:
# - dimension names in brackets: [T, *B], [*B, A], [N, P], [..., N, ...], [T=2, E=2]; at least one
#   name ([0, 1] is an interval, not a shape);
# - by reference to another argument: "the shape of ``returns``", "same structure and shapes as
#   ``trace``", "like ``b``", "shape ``()``";
# - scalar (or 0-d);
# - a pytree (its structure is the caller's) or a callable (``params -> scalar``).
DIM = r"(?:\*?[A-Z]\w*(?:=\d+)?|\.\.\.|\d+)"
SHAPE = re.compile(
    "|".join(
        [
            rf"\[(?=[^\]]*(?:[A-Z]|\.\.\.))\s*{DIM}(?:\s*,\s*{DIM})*\s*\]",
            r"\b(?:shapes?|structure)\b[^.;]*?\b(?:of|as)\s+``[^`]+``",
            r"\blike\s+``[^`]+``",
            r"\bshape\s+``[^`]+``",
            r"\bscalars?\b|\b0-d\b",
            r"\bpytrees?\b",
            r"``[^`]*(?:->|↦)[^`]*``",
        ]
    )
)


def section(doc, name):
    """The text of section ``name:`` up to the next heading, or None."""
    match = re.search(rf"^{name}:", doc, re.M)
    if match is None:
        return None
    rest = doc[match.end() :]
    following = HEADING.search(rest)
    return rest[: following.start()] if following else rest


def entries(text):
    """``{name: description}`` for the ``name: description`` entries of an Args or Attributes
    section (continuation lines are indented further; ``a, b: ...`` documents both)."""
    lines = [line for line in (text or "").split("\n") if line.strip()]
    if not lines:
        return {}
    base = min(len(line) - len(line.lstrip()) for line in lines)
    out, current = {}, None
    for line in lines:
        match = re.match(r"\s*(\*{0,2}\w+(?:,\s*\w+)*):(?:\s|$)", line)
        if len(line) - len(line.lstrip()) == base and match:
            current = [name.strip().lstrip("*") for name in match.group(1).split(",")]
            for name in current:
                out[name] = line[match.end() :]
        elif current is not None:
            for name in current:
                out[name] += " " + line.strip()
    return out


def description(doc):
    """The text between the summary line and the first section."""
    body = doc.split("\n", 1)[1] if "\n" in doc else ""
    following = HEADING.search(body)
    return body[: following.start()] if following else body


def is_named_tuple(obj):
    return inspect.isclass(obj) and issubclass(obj, tuple) and hasattr(obj, "_fields")


def problems(obj):
    """What the docstring of a public function or result NamedTuple lacks (empty if nothing).

    Functions: the sections; an equation; an Args entry for every parameter; a shape for every
    positional parameter (arrays, by the signature convention) unless it is documented as
    static (an int or mode switch); a shape in Returns. NamedTuples: an ``Attributes:`` entry
    with a shape for every field.
    """
    doc = inspect.getdoc(obj)
    if not doc:
        return ["no docstring"]
    if is_named_tuple(obj):
        fields = entries(section(doc, "Attributes"))
        return [
            f"field {field!r}: no Attributes entry" if field not in fields else f"field {field!r}: no shape"
            for field in obj._fields
            if field not in fields or not SHAPE.search(fields[field])
        ]
    if not inspect.isfunction(obj):
        return [f"no documentation rule for a public {type(obj).__name__}"]
    found = [f"lacks {s}" for s in REQUIRED_SECTIONS if not re.search(rf"^{s}", doc, re.M)]
    if not RELATION.search(description(doc)):
        found.append("no equation (a line with ' = ', ' ← ', ' ≈ ' or ' ∝ ') before Args:")
    args = entries(section(doc, "Args"))
    for param in inspect.signature(obj).parameters.values():
        if param.name not in args:
            found.append(f"argument {param.name!r}: no Args entry")
        elif (
            param.kind in (param.POSITIONAL_ONLY, param.POSITIONAL_OR_KEYWORD)
            and not re.match(r"\s*static\b", args[param.name])
            and not SHAPE.search(args[param.name])
        ):
            found.append(f"argument {param.name!r}: no shape")
    if not SHAPE.search(section(doc, "Returns") or ""):
        found.append("Returns: no shape")
    return found


def test_api_is_not_empty():
    assert len(pgkit.__all__) > 0


@pytest.mark.parametrize("name", pgkit.__all__)
def test_exported_name_is_documented(name):
    obj = getattr(pgkit, name)
    assert not problems(obj), f"pgkit.{name}: {problems(obj)}"


def test_result_named_tuples_are_covered():
    named_tuples = {name for name in pgkit.__all__ if is_named_tuple(getattr(pgkit, name))}
    assert {"GAE", "VTrace", "TraceUpdate", "ActorCriticTraceUpdate", "CGResult"} <= named_tuples


def _good(x, y, *, lambda_):
    """Summary line.

    y_t = x_t + λ x_{t+1}, over the steps of one stream.

    Args:
      x: [T, *B] inputs x_t, t = 0..T−1.
      y: unused, the shape of ``x``.
      lambda_: λ (traced).

    Returns:
      [T, *B] y_t.

    Gradients:
      Through ``x``.

    Example:
      >>> 1
      1

    Reference:
      Somebody (2000), "A title", https://example.org
    """


def _variant(old, new):
    def fn(x, y, *, lambda_):
        pass

    fn.__doc__ = inspect.getdoc(_good).replace(old, new)
    return fn


def test_the_rules_can_fail():
    assert problems(_good) == []
    assert problems(_variant("y_t = x_t", "y_t is x_t")) == [
        "no equation (a line with ' = ', ' ← ', ' ≈ ' or ' ∝ ') before Args:"
    ]
    assert problems(_variant("x: [T, *B] inputs x_t", "x: inputs x_t in [0, 1]")) == ["argument 'x': no shape"]
    assert problems(_variant("  y: unused, the shape of ``x``.\n", "")) == ["argument 'y': no Args entry"]
    assert problems(_variant("[T, *B] y_t.", "y_t.")) == ["Returns: no shape"]
    assert problems(_variant("Gradients:", "Gradient:")) == ["lacks Gradients:"]
    assert problems(types.SimpleNamespace) == ["no documentation rule for a public type"]

    class Pair(tuple):
        """A pair.

        Attributes:
          first: ``[N]`` the first.
          second: the second.
        """

        _fields = ("first", "second", "third")

    assert problems(Pair) == ["field 'second': no shape", "field 'third': no Attributes entry"]


def run_examples(module):
    """Run the docstring examples of ``module``, each in an empty namespace (``globs={}``), as
    when pasted into a fresh interpreter: an example must import pgkit, jax, ... itself."""
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for test in finder.find(module, module.__name__, globs={}):
        runner.run(test)
    return runner


@pytest.mark.parametrize("module", pgkit.ESTIMATOR_MODULES, ids=lambda m: m.__name__)
def test_docstring_examples_run(module):
    runner = run_examples(module)
    assert runner.tries > 0, f"no docstring examples found in {module.__name__}"
    assert runner.failures == 0, f"{runner.failures} failing docstring example(s) in {module.__name__}"


def test_an_example_that_forgets_to_import_pgkit_fails():
    without = types.ModuleType("without_import", ">>> pgkit.__name__\n'pgkit'\n")
    with_import = types.ModuleType("with_import", ">>> import pgkit\n>>> pgkit.__name__\n'pgkit'\n")
    assert run_examples(without).failures == 1
    assert run_examples(with_import).failures == 0


_RNG = np.random.default_rng(0)
_R, _V, _NV = (_RNG.normal(size=(5, 3)) for _ in range(3))  # float64 NumPy, [T, E]
_D, _LP = np.full((5, 3), 0.9), -np.abs(_RNG.normal(size=(5, 3)))
_DONES = np.zeros((5, 3), bool)
_DONES[2, 1] = True
NUMPY_CALLS = {
    "td_targets": lambda: pgkit.td_targets(_R, _D, _NV),
    "q_loss": lambda: pgkit.q_loss(_V, _NV),
    "sac_temperature_loss": lambda: pgkit.sac_temperature_loss(0.1, _LP, target_entropy=-1.0),
    "sac_actor_loss": lambda: pgkit.sac_actor_loss(_V, _LP, alpha=0.3),
    "score_function_loss": lambda: pgkit.score_function_loss(_LP, _R),
    "clipped_double_q_targets": lambda: pgkit.clipped_double_q_targets(_R, _D, _V, _NV),
    "soft_q_targets": lambda: pgkit.soft_q_targets(_R, _D, _V, _NV, _LP, alpha=0.2),
    "ppo_clip_loss": lambda: pgkit.ppo_clip_loss(_LP, 0.9 * _LP, _R, clip_eps=0.2),
    "value_loss": lambda: pgkit.value_loss(_V, _R),
    "gae": lambda: pgkit.gae(_R, _D, _DONES, _V, _NV, lambda_=0.9).advantages,
    "approx_kl": lambda: pgkit.approx_kl(_LP, 0.9 * _LP),
}


@pytest.mark.parametrize("name", list(NUMPY_CALLS))
def test_numpy_float64_inputs_give_float32_jax_arrays(name):
    out = NUMPY_CALLS[name]()
    assert isinstance(out, jax.Array) and out.dtype == jnp.float32, (type(out), getattr(out, "dtype", None))
