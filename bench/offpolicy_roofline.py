"""Off-policy updates against this CPU's matrix-product rate (issue 21's roofline figure).

For each recipe (SAC, TD3, DDPG on Pendulum-v1 at the authors' defaults: 256x256 networks,
batch 256, one seed on one device, as ``pgkit train --seeds 1`` runs it) it measures

- ``update us``: the median time of one ``update`` (one environment step and one gradient
  step for SAC and DDPG; two environment steps, two critic steps and one actor step for TD3),
  run as ``pgkit train`` runs it: a chunk of updates in one ``lax.scan``, after the warm-up;
- ``matmul MFLOP``: the FLOPs of every matrix product in the update (2·m·n·k per
  ``dot_general``, counted on its jaxpr: forward and backward products, target networks and
  the behaviour policy; a ``lax.cond`` counts its costliest branch, a ``scan`` its length);
- ``XLA alone us``: the time those same products take alone, each shape timed in its own
  compiled loop on the same device in the same process;
- ``BLAS us``: the time NumPy's OpenBLAS takes for them with as many threads, operands laid
  out as it wants (``--threads``, default 1: ``pgkit train --seeds 1`` gives its one device one
  XLA thread);
- ``roofline us``: per shape the faster of the two, summed: this CPU's measured
  matrix-product rate *at those shapes* (tiny products such as the 3x256 input layer run far
  below the 256x256x256 rate, the ``largest`` column);
- ``GFLOP/s`` achieved (matmul FLOPs / update time), the ``roofline`` rate (matmul FLOPs /
  roofline time) and ``of roofline``, their ratio: the fraction of the update's time that its
  matrix products alone would need at this machine's best measured rate. 100% would be an
  update that does nothing but its products, each as fast as it runs alone.

    python bench/offpolicy_roofline.py [--recipes sac td3 ddpg] [--updates 200] [--threads 1]
                                     [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections import Counter

import jax
import jax.numpy as jnp
from jax.extend import core as jax_core
import numpy as np

from pgkit import experiment


def dot_products(jaxpr) -> Counter:
    """Count the ``dot_general`` calls of a (closed) jaxpr by shape: ``{(lhs, rhs, dims, dtype): n}``.

    Sub-jaxprs are walked: a ``scan`` multiplies its body's counts by its length, a ``cond``
    takes its costliest branch, any other call (jit, custom derivatives, remat) counts once.
    A ``while_loop`` has no static trip count and is refused.
    """
    jaxpr = getattr(jaxpr, "jaxpr", jaxpr)
    counts: Counter = Counter()
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        if name == "dot_general":
            lhs, rhs = (v.aval for v in eqn.invars)
            dims = eqn.params["dimension_numbers"]
            key = (tuple(lhs.shape), tuple(rhs.shape), _hashable(dims), str(lhs.dtype))
            counts[key] += 1
        elif name == "scan":
            for key, n in dot_products(eqn.params["jaxpr"]).items():
                counts[key] += n * eqn.params["length"]
        elif name == "cond":
            branches = [dot_products(b) for b in eqn.params["branches"]]
            counts.update(max(branches, key=lambda c: sum(_flops(k) * n for k, n in c.items())))
        elif name == "while":
            if dot_products(eqn.params["body_jaxpr"]):
                raise ValueError("a while_loop with matrix products has no static trip count to count them by")
        else:
            for param in eqn.params.values():
                for sub in param if isinstance(param, (tuple, list)) else (param,):
                    if isinstance(sub, (jax_core.Jaxpr, jax_core.ClosedJaxpr)):
                        counts.update(dot_products(sub))
    return counts


def _hashable(dims):
    (lc, rc), (lb, rb) = dims
    return (tuple(lc), tuple(rc)), (tuple(lb), tuple(rb))


def _flops(key) -> int:
    """2 x (output elements) x (contracted size) of one product."""
    lhs, rhs, ((lc, rc), (lb, rb)), _ = key
    contracted = int(np.prod([lhs[i] for i in lc], dtype=np.int64))
    batch = int(np.prod([lhs[i] for i in lb], dtype=np.int64))
    lhs_free = int(np.prod([d for i, d in enumerate(lhs) if i not in lc and i not in lb], dtype=np.int64))
    rhs_free = int(np.prod([d for i, d in enumerate(rhs) if i not in rc and i not in rb], dtype=np.int64))
    return 2 * batch * lhs_free * rhs_free * contracted


def _median_seconds(fn, *args, repeats: int) -> float:
    jax.block_until_ready(fn(*args))  # compile and warm
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def isolated_seconds(key, *, target_flops: float = 2e9, repeats: int = 7) -> float:
    """Median time of one product of this shape, alone, in a compiled loop of ``count`` of them.

    The operands stay the same (in cache, as a network's weights and batch are within a step);
    each iteration scales the left operand by a carried scalar and sums the product into it,
    so that no iteration can be hoisted or skipped. That scaling and sum are charged to the
    product: the isolated time is an upper bound on the product's own time.
    """
    lhs, rhs, dims, dtype = key
    count = int(np.clip(target_flops // max(_flops(key), 1), 16, 4096)) // 16 * 16
    rng = np.random.default_rng(0)
    lhs_arr = jnp.asarray(rng.standard_normal(lhs), dtype)
    rhs_arr = jnp.asarray(rng.standard_normal(rhs), dtype)

    @jax.jit
    def loop(lhs_arr, rhs_arr):
        def body(_, scale):
            product = jax.lax.dot_general(lhs_arr * scale, rhs_arr, dims)
            return 1.0 + 1e-30 * product.sum()  # stays 1.0, but only XLA's arithmetic can say so
        return jax.lax.fori_loop(0, count, body, jnp.ones((), dtype), unroll=16)

    return _median_seconds(loop, lhs_arr, rhs_arr, repeats=repeats) / count


def _mkn(key) -> tuple[int, int, int, int]:
    """(batch, m, k, n) of a ``dot_general``: the matmul it is, with its operands laid out for BLAS."""
    lhs, rhs, ((lc, rc), (lb, rb)), _ = key
    size = lambda shape, axes: int(np.prod([shape[i] for i in axes], dtype=np.int64))  # noqa: E731
    free = lambda shape, *used: [i for i in range(len(shape)) if i not in used[0] and i not in used[1]]  # noqa: E731
    return size(lhs, lb), size(lhs, free(lhs, lc, lb)), size(lhs, lc), size(rhs, free(rhs, rc, rb))


def blas_seconds(products: Counter, threads: int, repeats: int) -> list[float]:
    """Per product shape (in ``products``' order), the time NumPy's BLAS (OpenBLAS, ``threads`` threads) takes.

    Each product is timed as ``np.matmul`` of contiguous [batch, m, k] x [batch, k, n]
    operands (the layout a BLAS call wants; the transposes XLA may need are not charged), in a
    subprocess so that the BLAS thread count can be set before NumPy loads.
    """
    shapes = [_mkn(key) for key in products]
    env = {**os.environ, "OPENBLAS_NUM_THREADS": str(threads), "OMP_NUM_THREADS": str(threads)}
    out = subprocess.run(
        [sys.executable, __file__, "--blas-reference", json.dumps({"shapes": shapes, "repeats": repeats})],
        env=env, check=True, capture_output=True, text=True,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def _blas_reference(spec: str) -> None:
    spec = json.loads(spec)
    rng = np.random.default_rng(0)
    seconds = []
    for batch, m, k, n in spec["shapes"]:
        a = rng.standard_normal((batch, m, k), dtype=np.float32)
        b = rng.standard_normal((batch, k, n), dtype=np.float32)
        calls = max(10, int(2e8 // max(2 * batch * m * k * n, 1)))
        for _ in range(calls):
            np.matmul(a, b)
        times = []
        for _ in range(spec["repeats"]):
            t0 = time.perf_counter()
            for _ in range(calls):
                np.matmul(a, b)
            times.append((time.perf_counter() - t0) / calls)
        seconds.append(float(np.median(times)))
    print(json.dumps(seconds))


def measure(recipe: str, env: str, *, updates: int, repeats: int, threads: int) -> dict:
    module = experiment.load_recipe(recipe)
    config = module.Config()
    made = module.make(config, env)
    hp = module.HParams()
    state = jax.jit(made.init)(jax.random.PRNGKey(0), hp)

    chunk = jax.jit(lambda state, hp: jax.lax.scan(
        lambda s, _: (made.update(s, hp)[0], None), state, None, length=updates)[0])
    warmup_updates = config.learning_starts // made.env_steps_per_update + 1
    for _ in range(-(-warmup_updates // updates)):  # past the random warm-up (one compiled chunk)
        state = jax.block_until_ready(chunk(state, hp))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        state = jax.block_until_ready(chunk(state, hp))
        times.append((time.perf_counter() - t0) / updates)
    update_seconds = float(np.median(times))

    products = dot_products(jax.make_jaxpr(made.update)(state, hp))
    flops = sum(_flops(k) * n for k, n in products.items())
    alone = [isolated_seconds(k, repeats=repeats) for k in products]
    blas = blas_seconds(products, threads, repeats)
    uses = list(products.values())
    isolated = sum(t * n for t, n in zip(alone, uses))
    blas_total = sum(t * n for t, n in zip(blas, uses))
    best = sum(min(a, b) * n for a, b, n in zip(alone, blas, uses))
    big = list(products).index(max(products, key=_flops))
    return {
        "recipe": recipe,
        "env": env,
        "hidden_sizes": list(config.hidden_sizes),
        "batch_size": config.batch_size,
        "update_us": update_seconds * 1e6,
        "env_steps_per_second": made.env_steps_per_update / update_seconds,
        "matmul_products": sum(products.values()),
        "matmul_mflop": flops / 1e6,
        "isolated_us": isolated * 1e6,
        "blas_us": blas_total * 1e6,
        "roofline_us": best * 1e6,
        "achieved_gflops": flops / update_seconds / 1e9,
        "roofline_gflops": flops / best / 1e9,
        "largest_shape": f"{list(products)[big][0]} x {list(products)[big][1]}",
        "largest_shape_gflops": _flops(list(products)[big]) / min(alone[big], blas[big]) / 1e9,
        "of_roofline": best / update_seconds,
        "threads": threads,
    }


HEADER = (
    f"{'recipe':>6} {'update us':>10} {'env-steps/s':>12} {'products':>9} {'matmul MFLOP':>13} {'XLA alone us':>13} "
    f"{'BLAS us':>8} {'roofline us':>12} {'GFLOP/s':>8} {'roofline':>9} {'largest':>8} {'of roofline':>12}"
)


def row(r: dict) -> str:
    return (
        f"{r['recipe']:>6} {r['update_us']:>10,.0f} {r['env_steps_per_second']:>12,.0f} {r['matmul_products']:>9} "
        f"{r['matmul_mflop']:>13,.1f} {r['isolated_us']:>13,.0f} {r['blas_us']:>8,.0f} {r['roofline_us']:>12,.0f} "
        f"{r['achieved_gflops']:>8.1f} {r['roofline_gflops']:>9.1f} {r['largest_shape_gflops']:>8.1f} "
        f"{r['of_roofline']:>11.0%}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipes", nargs="+", default=["sac", "td3", "ddpg"])
    parser.add_argument("--env", default="Pendulum-v1")
    parser.add_argument("--updates", type=int, default=200, help="updates per timed chunk")
    parser.add_argument("--repeats", type=int, default=5, help="timed chunks (the median is reported)")
    parser.add_argument("--threads", type=int, default=1,
                        help="XLA CPU threads (and BLAS threads) of the one device: `pgkit train --threads`")
    parser.add_argument("--json", help="write the results here as JSON")
    parser.add_argument("--blas-reference", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.blas_reference:
        return _blas_reference(args.blas_reference)
    # as `pgkit train --seeds 1 [--threads T]`: one device with T XLA threads
    experiment.use_cpu_cores(members=1, threads=args.threads)
    print(f"# jax {jax.__version__} | {jax.devices()[0].device_kind} | {jax.device_count()} device(s), "
          f"{args.threads} XLA thread(s) | NumPy {np.__version__} BLAS with {args.threads} thread(s)")
    print(HEADER)
    results = []
    for recipe in args.recipes:
        results.append(measure(recipe, args.env, updates=args.updates, repeats=args.repeats, threads=args.threads))
        print(row(results[-1]), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
