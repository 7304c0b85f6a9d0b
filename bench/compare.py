"""pgkit against its peers (rejax, Stable-Baselines3) with identical hyperparameters, one table.

Every (workload, seeds, framework) is one subprocess with that framework's own Python:
pgkit's (this interpreter, or --python), and the peers' venvs under bench/.venvs/, which this
script creates and fills on first use (pinned versions: bench/peers/venvs.py). The runners
(bench/peers/*_runner.py) print JSON; this script prints a markdown table (env-steps/s over
wall time and over CPU time, compile time, time to the return threshold, final greedy return,
and the ratio pgkit/peer), writes the results as JSON, and plots PPO env-steps/s against the
number of seeds for pgkit and rejax. The workloads and the timing protocol are defined in
bench/peers/common.py.

    python bench/compare.py --quick                 # two workloads, small budgets: minutes
    python bench/compare.py                         # every workload, full budgets: long
    python bench/compare.py --workloads ppo-cartpole --seeds 1 8 32 --repeats 3
    python bench/compare.py --from-json bench/results/a.json bench/results/b.json   # table only
    python bench/compare.py --one-device            # PPO CartPole at 1, 8, 32 seeds, pgkit and rejax on one device

``--one-device`` runs every framework with ``XLA_FLAGS=--xla_force_host_platform_device_count=1``
(pgkit then keeps one CPU device, as a GPU is one device) and checks the per-device targets:
pgkit/rejax >= 1.3 in env-steps/s at every seed count, and pgkit's whole-process time (Python
start, imports, compilation, training and the evaluations between chunks) <= 0.7x rejax's at one
seed.

Stable-Baselines3 is slow: it runs a reduced number of steps (``sb3_steps``) at the seed
counts up to --sb3-max-seeds, seeds one after the other; its steps/s is still comparable,
its return and time to threshold are not (marked in the table).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE / "peers"))

import common  # noqa: E402
import venvs  # noqa: E402

# Which peer implements which algorithm.
PEER_ALGOS = {"rejax": {"ppo", "sac", "td3"}, "sb3": {"ppo", "a2c", "sac", "td3", "ddpg", "trpo"}}

# Full mode: seeds and steps per seed (pgkit and rejax), and the reduced budget of SB3.
FULL = {
    "ppo-cartpole": dict(seeds=[1, 8, 32], steps=500_000, sb3_steps=50_000),
    "a2c-cartpole": dict(seeds=[1, 8], steps=250_000, sb3_steps=25_000),
    "trpo-cartpole": dict(seeds=[1, 8], steps=200_000, sb3_steps=40_000),
    "sac-pendulum": dict(seeds=[1, 8], steps=20_000, sb3_steps=5_000),
    "td3-pendulum": dict(seeds=[1, 8], steps=20_000, sb3_steps=5_000),
    "ddpg-pendulum": dict(seeds=[1, 8], steps=20_000, sb3_steps=5_000),
}
ONE_DEVICE = {"ppo-cartpole": dict(seeds=[1, 8, 32], steps=500_000, sb3_steps=50_000)}
ONE_DEVICE_FLAGS = "--xla_force_host_platform_device_count=1"
QUICK = {
    "ppo-cartpole": dict(seeds=[1, 8], steps=51_200, sb3_steps=10_240),
    "sac-pendulum": dict(seeds=[1], steps=3_000, sb3_steps=2_000),
}


def machine() -> dict:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return dict(cores=os.cpu_count(), cpu=model, platform=platform.platform(),
                loadavg=list(os.getloadavg()), date=time.strftime("%Y-%m-%d %H:%M:%S %Z"))


def run_one(python: str, framework: str, spec: dict, timeout: float, xla_flags: str | None = None) -> dict | None:
    """One measurement in a fresh process; its result gains ``process_seconds`` (the whole process's wall time)."""
    script = HERE / "peers" / f"{framework}_runner.py"
    cmd = [str(python), str(script), "--spec", json.dumps(spec)]
    print(f"## {framework} {spec['workload']} seeds={spec['seeds']} steps={spec['steps']}", file=sys.stderr, flush=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if xla_flags:
        env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} {xla_flags}".strip()
    start = time.perf_counter()
    try:
        out = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=None, text=True, timeout=timeout, env=env, cwd=ROOT)
    except subprocess.TimeoutExpired:
        print(f"## {framework} timed out after {timeout:.0f} s", file=sys.stderr)
        return None
    seconds = time.perf_counter() - start
    lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
    if out.returncode != 0 or not lines:
        print(f"## {framework} failed (exit {out.returncode})", file=sys.stderr)
        return None
    return {**json.loads(lines[-1][len("RESULT "):]), "process_seconds": seconds, "xla_flags": xla_flags}


def combine(runs: list[dict]) -> dict:
    """Repeats of one measurement: medians of the timings, the runs kept for reference."""
    if len(runs) == 1:
        return runs[0]
    out = dict(runs[0])
    for key in ("env_steps_per_second", "env_steps_per_cpu_second", "compile_seconds", "compile_cpu_seconds",
                "final_return", "process_seconds"):
        out[key] = statistics.median(r[key] for r in runs)
    reached = [r["time_to_threshold_seconds"] for r in runs]
    out["time_to_threshold_seconds"] = statistics.median(reached) if None not in reached else None
    out["repeats"] = [{k: r[k] for k in ("env_steps_per_second", "env_steps_per_cpu_second", "compile_seconds",
                                         "time_to_threshold_seconds", "final_return")} for r in runs]
    return out


def fmt(value, spec="{:,.0f}", none="—"):
    return none if value is None else spec.format(value)


def table(results: list[dict]) -> str:
    head = ("| workload | seeds | framework | steps/seed | env-steps/s | env-steps/CPU-s | compile s | process s | "
            "time to threshold s | final return | pgkit/peer (wall) | pgkit/peer (CPU) |")
    rows = [head, "|" + "|".join(["---"] * (head.count("|") - 1)) + "|"]
    pgkit = {(r["workload"], r["seeds"]): r for r in results if r["framework"] == "pgkit"}
    order = {"pgkit": 0, "rejax": 1, "sb3": 2}
    for r in sorted(results, key=lambda r: (r["workload"], r["seeds"], order.get(r["framework"], 9))):
        ref = pgkit.get((r["workload"], r["seeds"]))
        ratio = ratio_cpu = ""
        if r["framework"] != "pgkit" and ref is not None:
            ratio = f"{ref['env_steps_per_second'] / r['env_steps_per_second']:.2f}"
            ratio_cpu = f"{ref['env_steps_per_cpu_second'] / r['env_steps_per_cpu_second']:.2f}"
        reduced = r["framework"] == "sb3"
        thr = fmt(r["time_to_threshold_seconds"], "{:,.1f}", none=f"not reached ({r['threshold']:g})")
        ret = fmt(r["final_return"], "{:.1f}")
        if reduced and ref is not None and r["steps_per_seed"] < ref["steps_per_seed"]:
            ret += " (reduced steps)"
        name = r["framework"] if r["framework"] != "sb3" else "SB3"
        rows.append(
            f"| {r['workload']} | {r['seeds']} | {name} {r['algorithm']} | {r['steps_per_seed']:,} | "
            f"{fmt(r['env_steps_per_second'])} | {fmt(r['env_steps_per_cpu_second'])} | "
            f"{fmt(r['compile_seconds'], '{:.1f}')} | {fmt(r.get('process_seconds'), '{:.1f}')} | {thr} | {ret} | "
            f"{ratio} | {ratio_cpu} |"
        )
    return "\n".join(rows)


def one_device_targets(results: list[dict]) -> list[str]:
    """One device: pgkit/rejax >= 1.3 in env-steps/s at each seed count, and pgkit's whole-process
    time <= 0.7x rejax's at one seed."""
    by = {(r["workload"], r["seeds"], r["framework"]): r for r in results}
    lines = []
    for (workload, seeds, framework), p in sorted(by.items()):
        q = by.get((workload, seeds, "rejax"))
        if framework != "pgkit" or q is None:
            continue
        ratio = p["env_steps_per_second"] / q["env_steps_per_second"]
        lines.append(f"- one device, {workload} @ {seeds} seeds, pgkit/rejax >= 1.3: {'MET' if ratio >= 1.3 else 'MISSED'} "
                     f"(env-steps/s {ratio:.2f}; return {p['final_return']:.1f} vs {q['final_return']:.1f})")
        if seeds == 1 and p.get("process_seconds") and q.get("process_seconds"):
            time_ratio = p["process_seconds"] / q["process_seconds"]
            lines.append(f"- one device, {workload} @ 1 seed, whole process pgkit/rejax <= 0.7: "
                         f"{'MET' if time_ratio <= 0.7 else 'MISSED'} ({p['process_seconds']:.1f} s vs "
                         f"{q['process_seconds']:.1f} s: {time_ratio:.2f})")
    return lines


def targets(results: list[dict]) -> list[str]:
    """The issue's targets: pgkit/rejax >= 1.5 (PPO@32, SAC@8, return at least as high); pgkit/SB3 >= 30.
    Results measured on one device (``--one-device``) are checked against its targets instead."""
    if results and all(r.get("xla_flags") == ONE_DEVICE_FLAGS for r in results):
        return one_device_targets(results)
    by = {(r["workload"], r["seeds"], r["framework"]): r for r in results}
    lines = []
    for workload, seeds in (("ppo-cartpole", 32), ("sac-pendulum", 8)):
        p, q = by.get((workload, seeds, "pgkit")), by.get((workload, seeds, "rejax"))
        if p and q:
            ratio = p["env_steps_per_second"] / q["env_steps_per_second"]
            ratio_cpu = p["env_steps_per_cpu_second"] / q["env_steps_per_cpu_second"]
            ok = ratio >= 1.5 and p["final_return"] >= q["final_return"]
            lines.append(f"- {workload} @ {seeds} seeds, pgkit/rejax >= 1.5 with return >=: "
                         f"{'MET' if ok else 'MISSED'} (wall {ratio:.2f}, CPU {ratio_cpu:.2f}; return "
                         f"{p['final_return']:.1f} vs {q['final_return']:.1f})")
    for r in results:
        if r["framework"] == "sb3" and r["seeds"] == 1:
            p = by.get((r["workload"], 1, "pgkit"))
            if p:
                ratio = p["env_steps_per_second"] / r["env_steps_per_second"]
                ratio_cpu = p["env_steps_per_cpu_second"] / r["env_steps_per_cpu_second"]
                lines.append(f"- {r['workload']} @ 1 seed, pgkit/SB3 >= 30: {'MET' if ratio >= 30 else 'MISSED'} "
                             f"(wall {ratio:.1f}, CPU {ratio_cpu:.1f})")
    return lines


def plot(results: list[dict], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("# matplotlib not importable here: no plot", file=sys.stderr)
        return
    seed_counts = {r["seeds"] for r in results if r["workload"] == "ppo-cartpole"}
    if len(seed_counts) < 2:  # no scaling curve here: leave the existing plot alone
        print(f"# PPO CartPole ran at {len(seed_counts)} seed count(s): no plot", file=sys.stderr)
        return
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    for framework, style in (("pgkit", "o-"), ("rejax", "s--")):
        rows = sorted((r for r in results if r["workload"] == "ppo-cartpole" and r["framework"] == framework),
                      key=lambda r: r["seeds"])
        if not rows:
            continue
        seeds = [r["seeds"] for r in rows]
        axes[0].plot(seeds, [r["env_steps_per_second"] for r in rows], style, label=framework)
        axes[1].plot(seeds, [r["env_steps_per_cpu_second"] for r in rows], style, label=framework)
    for ax, title in zip(axes, ("env-steps / wall second", "env-steps / CPU second")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("seeds (vmapped)")
        ax.set_title(f"PPO CartPole-v1: {title}", fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    print(f"# plot: {path}", file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="two workloads, small budgets (a few minutes)")
    parser.add_argument("--workloads", nargs="+", choices=sorted(common.WORKLOADS), help="default: all (quick: ppo, sac)")
    parser.add_argument("--frameworks", nargs="+", choices=["pgkit", "rejax", "sb3"],
                        help="default: all three (--one-device: pgkit and rejax)")
    parser.add_argument("--seeds", type=int, nargs="+", help="override the seed counts of every workload")
    parser.add_argument("--steps", type=int, help="override the steps per seed (pgkit, rejax)")
    parser.add_argument("--sb3-steps", type=int, help="override SB3's reduced steps per seed")
    parser.add_argument("--sb3-max-seeds", type=int, default=1, help="run SB3 only at seed counts up to this")
    parser.add_argument("--repeats", type=int, default=1, help="repeat each measurement; the table shows medians")
    parser.add_argument("--chunks", type=int, default=10, help="timed chunks per run (evaluation between them)")
    parser.add_argument("--eval-episodes", type=int, default=16, help="greedy evaluation episodes per seed")
    parser.add_argument("--python", default=sys.executable, help="pgkit's Python (default: this one)")
    parser.add_argument("--rejax-python", help="use this Python for rejax instead of bench/.venvs/rejax")
    parser.add_argument("--sb3-python", help="use this Python for SB3 instead of bench/.venvs/sb3")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per subprocess")
    parser.add_argument("--json", help="results file (default: bench/results/compare-<time>.json)")
    parser.add_argument("--plot", help="PNG of PPO env-steps/s against seeds ('' for none; default "
                                       "docs/benchmarks_ppo_seeds.png, --one-device: docs/benchmarks_ppo_seeds_one_device.png)")
    parser.add_argument("--from-json", nargs="+", help="print the table (and plot) of saved results; run nothing")
    parser.add_argument("--one-device", action="store_true",
                        help=f"every framework on one JAX device (XLA_FLAGS={ONE_DEVICE_FLAGS}); default workload "
                             "PPO CartPole at 1, 8, 32 seeds, pgkit and rejax")
    args = parser.parse_args()
    if args.one_device and args.quick:
        parser.error("options '--one-device' and '--quick' exclude each other")
    if args.frameworks is None:
        args.frameworks = ["pgkit", "rejax"] if args.one_device else ["pgkit", "rejax", "sb3"]
    if args.plot is None:
        args.plot = str(ROOT / "docs" / f"benchmarks_ppo_seeds{'_one_device' if args.one_device else ''}.png")
    flags = ONE_DEVICE_FLAGS if args.one_device else None

    if args.from_json:
        results = []
        for path in args.from_json:
            results += json.loads(Path(path).read_text())["results"]
        print(table(results))
        print("\n".join(targets(results)))
        if args.plot:
            plot(results, Path(args.plot))
        return

    plan_defaults = QUICK if args.quick else ONE_DEVICE if args.one_device else FULL
    names = args.workloads or list(plan_defaults)
    pythons = {"pgkit": args.python}
    for peer in ("rejax", "sb3"):
        if peer in args.frameworks:
            given = getattr(args, f"{peer}_python")
            pythons[peer] = given or str(venvs.ensure(peer, log=lambda m: print(m, file=sys.stderr, flush=True)))
    info = machine()
    print(f"# {info['cores']} cores, {info['cpu']}, load {info['loadavg'][0]:.1f}, {info['date']}", file=sys.stderr)

    results = []
    for name in names:
        plan = {**FULL[name], **plan_defaults.get(name, {})}
        algo = common.WORKLOADS[name]["algo"]
        for seeds in args.seeds or plan["seeds"]:
            for framework in args.frameworks:
                if framework != "pgkit" and algo not in PEER_ALGOS[framework]:
                    continue
                if framework == "sb3" and seeds > args.sb3_max_seeds:
                    continue
                steps = args.steps or plan["steps"]
                if framework == "sb3":
                    steps = args.sb3_steps or plan["sb3_steps"]
                spec = dict(workload=name, seeds=seeds, steps=steps, chunks=args.chunks,
                            eval_episodes=args.eval_episodes, seed=0)
                runs = [r for r in (run_one(pythons[framework], framework, spec, args.timeout, flags)
                                    for _ in range(args.repeats)) if r is not None]
                if runs:
                    results.append(combine(runs))
                    print(table(results[-1:]).splitlines()[-1], file=sys.stderr, flush=True)

    info["loadavg_end"] = list(os.getloadavg())
    installs = {peer: venvs.install_info(peer) for peer in ("rejax", "sb3") if peer in pythons}
    for peer, inst in installs.items():
        if inst:
            inst.pop("freeze", None)
    out = Path(args.json) if args.json else ROOT / "bench" / "results" / f"compare-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    command = " ".join([sys.executable, "bench/compare.py", *sys.argv[1:]])
    out.write_text(json.dumps(dict(machine=info, command=command, installs=installs, results=results), indent=2) + "\n")
    print(f"\n# {info['cores']} cores, {info['cpu']}; load average {info['loadavg'][0]:.1f} -> "
          f"{info['loadavg_end'][0]:.1f}; {info['date']}")
    print(f"# {command}\n")
    print(table(results))
    print()
    print("\n".join(targets(results)))
    print(f"\n# results: {out}")
    if args.plot and any(r["workload"] == "ppo-cartpole" for r in results):
        plot(results, Path(args.plot))


if __name__ == "__main__":
    main()
