"""Learning curves from run directories: mean across seeds with a 95% bootstrap band."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from pgkit.stats import bootstrap_ci

__all__ = ["read_metrics", "learning_curves", "plot_runs"]

MAX_POINTS = 200


def read_metrics(run_dir) -> dict[str, np.ndarray]:
    """Read ``metrics.csv`` of a run directory into columns (setting label stays a string)."""
    path = Path(run_dir) / "metrics.csv"
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist (not a pgkit run directory?)")
    with path.open() as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise ValueError(f"{path} holds no metrics yet")
    columns = {}
    for name in rows[0]:
        values = [r[name] for r in rows]
        try:
            columns[name] = np.asarray(values, dtype=np.float64)
        except ValueError:
            columns[name] = np.asarray(values)
    return columns


def learning_curves(columns, metric: str = "episode_return"):
    """Per setting: ``(label, env_steps [U], values [S, U])`` sorted by setting index.

    A seed that diverged (``diverged`` column) has NaN from the update at which it did.
    """
    if metric not in columns:
        raise ValueError(f"metric {metric!r} not in metrics (have {sorted(columns)})")
    curves = []
    for setting in np.unique(columns["setting"]):
        rows = columns["setting"] == setting
        seeds = columns["seed"][rows].astype(int)
        updates = columns["update"][rows].astype(int)
        num_seeds, num_updates = seeds.max() + 1, updates.max() + 1
        values = np.full((num_seeds, num_updates), np.nan)
        values[seeds, updates] = columns[metric][rows]
        steps = np.full(num_updates, np.nan)
        steps[updates] = columns["env_steps"][rows]
        label = str(columns["label"][rows][0]) if "label" in columns else f"setting {int(setting)}"
        curves.append((label, steps, values))
    return curves


def _diverged_seeds(columns) -> set[tuple[int, int]]:
    """``{(setting, seed)}`` marked diverged in a run's metrics (none for runs before the column)."""
    if "diverged" not in columns:
        return set()
    marked = columns["diverged"] > 0
    return set(zip(columns["setting"][marked].astype(int).tolist(), columns["seed"][marked].astype(int).tolist()))


def plot_runs(run_dirs, out_path, *, metric: str = "episode_return", title: str | None = None):
    """Overlay the learning curves of one or more runs into one PNG; returns its path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    notes = []  # settings with no curve left
    for run_dir in run_dirs:
        run_dir = Path(run_dir)
        config_path = run_dir / "config.json"
        run_name = run_dir.name
        if config_path.exists():
            config = json.loads(config_path.read_text())
            run_name = f"{config.get('recipe', '')} {config.get('env', '')} ({run_dir.name})"
        columns = read_metrics(run_dir)
        lost = _diverged_seeds(columns)
        for g, (label, steps, values) in enumerate(learning_curves(columns, metric)):
            keep = [s for s in range(values.shape[0]) if (g, s) not in lost]
            dropped = values.shape[0] - len(keep)
            if not keep:
                notes.append(f"{label}: every seed diverged")
                continue
            values = values[keep]
            done = ~np.isnan(values).any(axis=0)
            steps, values = steps[done], values[:, done]
            stride = max(1, len(steps) // MAX_POINTS)
            steps, values = steps[::stride], values[:, ::stride]
            band = bootstrap_ci(values, num_resamples=500)
            name = run_name if len(run_dirs) > 1 or label.startswith("setting") else ""
            line_label = f"{name} {label}".strip() if label != "default" else run_name
            left_out = f", {dropped} diverged: left out" if dropped else ""
            ax.plot(steps, band.estimate, label=f"{line_label} ({values.shape[0]} seeds{left_out})")
            ax.fill_between(steps, band.low, band.high, alpha=0.2)
    ax.set_xlabel("environment steps")
    ax.set_ylabel(metric.replace("_", " "))
    ax.set_title(title or "mean across seeds, 95% bootstrap interval")
    ax.grid(alpha=0.3)
    if notes:
        ax.text(0.01, 0.01, "; ".join(notes), transform=ax.transAxes, fontsize=8, va="bottom")
    ax.legend(fontsize=8)
    fig.tight_layout()
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_path, dpi=120)
    plt.close(fig)
    return out_path
