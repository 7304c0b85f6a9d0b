"""The results zoo: train every built-in preset and write a table of final returns with learning curves.

``pgkit zoo`` (``make zoo``) trains each preset of ``presets.toml`` with 8 seeds as one compiled
program and writes ``OUT/zoo.md`` (a row per preset: final return mean with its 95% bootstrap
interval, environment steps, whole wall time on this machine, and a published figure where one
exists) and ``OUT/zoo/RECIPE-ENV.png`` (the learning curve)::

    pgkit zoo --out docs                   # docs/zoo.md and docs/zoo/*.png (about 30 minutes on 2 cores)
    pgkit zoo --quick --out /tmp/zoo       # every preset, 2 seeds, 2 updates: a check that each runs
    pgkit zoo --only ppo/Pendulum-v1 --only sac/Pendulum-v1

The run directories go under ``RUNS/RECIPE-ENV`` (``--runs``, default ``runs/zoo``) and are
replaced by each zoo run.
"""

from __future__ import annotations

import datetime
import platform
import shutil
import time
from pathlib import Path
from typing import Callable, Sequence

import jax
import numpy as np

from pgkit import plot, stats
from pgkit.experiment import devices, presets
from pgkit.experiment.driver import train
from pgkit.recipe import ConfigError

__all__ = ["QUICK_SEEDS", "QUICK_UPDATES", "SEEDS", "selected_presets", "zoo"]

SEEDS = 8  # seeds per preset in the zoo
QUICK_SEEDS = 2  # seeds per preset with --quick
QUICK_UPDATES = 2  # updates per preset with --quick (one compiled chunk of one update, run twice)


def selected_presets(only: Sequence[str] | None = None) -> list[presets.Preset]:
    """The built-in presets in table order, or those named ``RECIPE/ENV`` in ``only`` (ConfigError if unknown)."""
    table = presets.builtin_presets()
    every = [preset for envs in table.values() for preset in envs.values()]
    if not only:
        return every
    by_name = {preset.name: preset for preset in every}
    unknown = [name for name in only if name not in by_name]
    if unknown:
        raise ConfigError(f"option '--only': unknown preset {unknown[0]!r}; available: {', '.join(by_name)}")
    return [by_name[name] for name in only]


def zoo(
    out: str | Path,
    *,
    runs: str | Path = "runs/zoo",
    quick: bool = False,
    seeds: int | None = None,
    only: Sequence[str] | None = None,
    log: Callable[[str], None] | None = print,
) -> list[dict]:
    """Train the presets (``only``, default all), write ``out/zoo.md`` and ``out/zoo/*.png``; returns the rows.

    Each row: ``{"preset", "recipe", "env", "steps", "seeds", "mean", "mean_low", "mean_high",
    "seconds", "reference", "plot"}``; ``steps`` are the environment steps each seed took,
    ``seconds`` the whole ``train`` call (compilation included). ``quick`` runs 2 seeds for 2
    updates each (the check CI runs); the table then says so in its title.
    """
    log = log or (lambda _: None)
    seeds = seeds or (QUICK_SEEDS if quick else SEEDS)
    if seeds < 1:
        raise ConfigError(f"option '--seeds' must be >= 1, got {seeds}")
    chosen = selected_presets(only)
    out, runs = Path(out), Path(runs)
    rows = []
    for i, preset in enumerate(chosen):
        log(f"[{i + 1}/{len(chosen)}] {preset.name}")
        run_dir = runs / f"{preset.recipe}-{preset.env}"
        if run_dir.exists():
            shutil.rmtree(run_dir)
        start = time.perf_counter()
        result = train(
            preset.recipe, env=preset.env, seeds=seeds, out=run_dir, log=None,
            **(dict(chunk=1, stop_after_chunks=QUICK_UPDATES) if quick else {}),
        )
        seconds = time.perf_counter() - start
        summary = result.summary[0] if result.summary else _summary(result.metrics["episode_return"][:, -1])
        picture = plot.plot_runs([run_dir], out / "zoo" / f"{preset.recipe}-{preset.env}.png", title=preset.name)
        rows.append({
            "preset": preset.name, "recipe": preset.recipe, "env": preset.env,
            "steps": int(plot.read_metrics(run_dir)["env_steps"].max()),
            "seeds": summary.get("seeds", 0), "mean": summary.get("mean"), "mean_low": summary.get("mean_low"),
            "mean_high": summary.get("mean_high"), "seconds": seconds, "reference": preset.reference,
            "plot": picture.relative_to(out).as_posix(),
        })
        log(f"  final return {_interval(rows[-1])} in {seconds:.0f} s")
    write_table(out / "zoo.md", rows, quick=quick, seeds=seeds, without=None if only else presets.environments_without_preset())
    log(f"wrote {out / 'zoo.md'}")
    return rows


def _summary(final_returns) -> dict:
    """The run's summary where train wrote none (a --quick run stops before its end)."""
    final = np.asarray(final_returns, np.float64)
    final = final[np.isfinite(final)]
    return stats.summarise(final) if final.size else {"seeds": 0}


def _interval(row: dict) -> str:
    if row["mean"] is None:
        return "every seed diverged"
    return f"{row['mean']:.1f} [{row['mean_low']:.1f}, {row['mean_high']:.1f}]"


def write_table(path: Path, rows: list[dict], *, quick: bool, seeds: int, without: dict[str, str] | None = None) -> None:
    """Write the zoo's markdown table (and each preset's plot link) to ``path``; ``without``
    (``{env: reason}``) lists the environments no preset covers."""
    machine = f"{platform.processor() or platform.machine()}, {devices.xla_cpu_threads()} XLA threads, {jax.default_backend()}"
    lines = [
        "# pgkit zoo: every preset's result" + (" (quick check: 2 updates, not results)" if quick else ""),
        "",
        f"Made by `pgkit zoo{' --quick' if quick else ''}` on {datetime.date.today().isoformat()} "
        f"({machine}; {len(jax.devices())} device(s)); {seeds} seeds per preset, one compiled program each. "
        "Final return: each seed's last completed-episode return at the end of training, mean over seeds "
        "with its 95% bootstrap interval. Wall time: the whole run, compilation included. "
        "Presets: `pgkit/experiment/presets.toml` (with the sweep that tuned each).",
        "",
        "| preset | env steps per seed | final return, mean [95% CI] | wall time | reference |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['preset']} | {row['steps']:,} | {_interval(row)} | {row['seconds']:.0f} s | {row['reference'] or '-'} |"
        )
    lines.append("")
    if without:
        lines += ["Environments without a preset:", ""]
        lines += [f"- {env}: {reason}" for env, reason in without.items()]
        lines.append("")
    for row in rows:
        lines += [f"## {row['preset']}", "", f"![{row['preset']}]({row['plot']})", ""]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))
