"""Accumulating against replacing eligibility traces: tabular TD(λ) on the 19-state random walk.

Singh & Sutton (1996, "Reinforcement Learning with Replacing Eligibility Traces",
https://doi.org/10.1007/BF00114726; Sutton & Barto 2018, sec. 12.2 and fig. 12.3) predict the
values of a random walk: states 1..19, start in the middle (10), each step left or right with
probability ½, reward −1 on leaving at the left end and +1 at the right, γ = 1, so the true
values are v(s) = (s − 10)/10. Tabular TD(λ) with one-hot features x(s), one step at a time:

    δ_t = r_{t+1} + v(s_{t+1}) − v(s_t)          (v(terminal) = 0)
    e_t = γλ e_{t−1} + x(s_t)                    pgkit.accumulating_trace   (trace="accumulating")
    e_t = x(s_t) where x ≠ 0, else γλ e_{t−1}    pgkit.replacing_trace      (trace="replacing")
    v ← v + α δ_t e_t                            (e = 0 at the start of each episode)

A state revisited in an episode gains up to 1/(1 − λ) of trace when accumulating, so large α·λ
overshoots; replacing caps it at 1. The error measure is Sutton & Barto's: the RMS error over
the 19 states, averaged over the first ``episodes`` episodes and over ``runs`` runs::

    python examples/random_walk_traces.py     # prints the error of both traces on an (α, λ) grid

Results: ``docs/recipes/random_walk_traces.md``; tests: tests/test_example_random_walk_traces.py.
"""

from __future__ import annotations

import sys
from functools import partial

import jax
import jax.numpy as jnp

import pgkit

NUM_STATES = 19  # non-terminal states 1..19; 0 and 20 are terminal
START = 10
TRUE_VALUES = (jnp.arange(1, NUM_STATES + 1) - START) / 10.0
MAX_STEPS = 2_000  # per episode; a walk from the middle lasts 100 steps on average


def episode(values, key, *, alpha, lambda_, trace):
    """One episode of online tabular TD(λ) from the start state: the new values ``[19]``.

    ``values[i]`` is v(s = i + 1); walks longer than ``MAX_STEPS`` are cut (probability below 1e-8).
    """
    update_trace = {"accumulating": pgkit.accumulating_trace, "replacing": pgkit.replacing_trace}[trace]

    def step(carry, key):
        values, e, s, running = carry
        s_next = s + jnp.where(jax.random.bernoulli(key), 1, -1)
        terminal = (s_next == 0) | (s_next == NUM_STATES + 1)
        reward = jnp.where(s_next == NUM_STATES + 1, 1.0, jnp.where(s_next == 0, -1.0, 0.0))
        v_next = jnp.where(terminal, 0.0, values[jnp.clip(s_next - 1, 0, NUM_STATES - 1)])
        delta = reward + v_next - values[s - 1]
        x = jax.nn.one_hot(s - 1, NUM_STATES)
        e = update_trace(e, x, discount=1.0, lambda_=lambda_)
        values = values + jnp.where(running, alpha * delta, 0.0) * e
        return (values, e, jnp.where(terminal, s, s_next), running & ~terminal), None

    init = (values, jnp.zeros(NUM_STATES), jnp.int32(START), jnp.bool_(True))
    (values, *_), _ = jax.lax.scan(step, init, jax.random.split(key, MAX_STEPS))
    return values


@partial(jax.jit, static_argnames=("trace", "episodes", "runs"))
def rms_error(key, *, alpha, lambda_, trace, episodes=10, runs=100):
    """RMS error over the states, averaged over the first ``episodes`` episodes and ``runs`` runs.

    ``alpha`` and ``lambda_`` may be traced (vmap over a grid); values start at 0.
    """

    def run(key):
        def one(values, key):
            values = episode(values, key, alpha=alpha, lambda_=lambda_, trace=trace)
            return values, jnp.sqrt(jnp.mean((values - TRUE_VALUES) ** 2))

        _, errors = jax.lax.scan(one, jnp.zeros(NUM_STATES), jax.random.split(key, episodes))
        return errors.mean()

    return jax.vmap(run)(jax.random.split(key, runs)).mean()


def grid(key, alphas, lambdas, trace, **kwargs):
    """``rms_error`` on the grid ``[len(lambdas), len(alphas)]`` (one compiled program)."""
    a, l = jnp.meshgrid(jnp.asarray(alphas), jnp.asarray(lambdas))
    errors = jax.vmap(lambda a, l: rms_error(key, alpha=a, lambda_=l, trace=trace, **kwargs))(a.ravel(), l.ravel())
    return errors.reshape(a.shape)


if __name__ == "__main__":
    alphas = [0.1, 0.2, 0.4, 0.6, 0.8, 1.0]
    lambdas = [0.0, 0.4, 0.8, 0.9, 0.95, 1.0]
    key = jax.random.key(int(sys.argv[1]) if len(sys.argv) > 1 else 0)
    for trace in ("accumulating", "replacing"):
        errors = grid(key, alphas, lambdas, trace)
        print(f"{trace}: RMS error, first 10 episodes, 100 runs (rows λ, columns α = {alphas})")
        for lam, row in zip(lambdas, errors.tolist()):
            print(f"  λ = {lam:<4} " + " ".join(f"{min(e, 9.99):5.2f}" for e in row))
