"""The run directory: ``config.json``, ``metrics.csv``, ``checkpoint.eqx``, ``progress.json``, ``summary.json``.

Every write that a resumed run relies on is atomic (written aside, then renamed), so a crash or a
signal loses at most the chunk in flight: ``progress.json`` names the updates the checkpoint
holds, and :func:`read_metrics` drops CSV rows written after it.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
from pathlib import Path

import equinox as eqx
import jax
import numpy as np

from pgkit.recipe import ConfigError

__all__ = [
    "write_config",
    "read_config",
    "updates_done",
    "write_checkpoint",
    "read_checkpoint",
    "append_metrics",
    "read_metrics",
    "write_summary",
]

CONFIG, METRICS, CHECKPOINT, PROGRESS, SUMMARY = (
    "config.json", "metrics.csv", "checkpoint.eqx", "progress.json", "summary.json"
)


def write_config(run_dir: Path, spec: dict) -> None:
    """Write the run's specification (everything needed to rebuild it) to ``config.json``."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / CONFIG).write_text(json.dumps(spec, indent=2) + "\n")


def read_config(run_dir: Path) -> dict:
    """The specification in ``run_dir/config.json``; a ConfigError if there is none."""
    path = Path(run_dir) / CONFIG
    if not path.exists():
        raise ConfigError(f"run directory {str(run_dir)!r} not found or holds no config.json")
    try:
        return json.loads(path.read_text())
    except ValueError as error:
        raise ConfigError(f"{str(path)!r} is not valid JSON: {error}") from None


def updates_done(run_dir: Path) -> int | None:
    """Updates held by the last checkpoint (None: no checkpoint written yet)."""
    path = Path(run_dir) / PROGRESS
    return json.loads(path.read_text())["updates_done"] if path.exists() else None


def write_checkpoint(run_dir: Path, state, *, updates_done: int, num_updates: int, wall_seconds: float) -> None:
    """Write the host copy of ``state``, then ``progress.json`` saying which updates it holds."""
    path = run_dir / CHECKPOINT
    tmp = path.with_suffix(".tmp")
    eqx.tree_serialise_leaves(tmp, jax.device_get(state))
    os.replace(tmp, path)
    progress = {"updates_done": updates_done, "num_updates": num_updates, "wall_seconds": wall_seconds}
    tmp = run_dir / "progress.tmp"
    tmp.write_text(json.dumps(progress) + "\n")
    os.replace(tmp, run_dir / PROGRESS)


def read_checkpoint(run_dir: Path, template, *, recipe: str, written_by: str, version: str):
    """The state saved in ``run_dir``, shaped as ``template``; one that does not fit is a ConfigError."""
    try:
        return eqx.tree_deserialise_leaves(run_dir / CHECKPOINT, template)
    except (RuntimeError, ValueError) as error:  # equinox: a leaf changed shape, dtype or kind
        raise ConfigError(
            f"checkpoint {str(run_dir / CHECKPOINT)!r} does not fit the {recipe!r} state of pgkit "
            f"{version} (it was written by pgkit {written_by}; retrain with this version): {error}"
        ) from None


def append_metrics(run_dir: Path, chunk: dict, *, first_update: int, steps_per_update: int, settings, labels, seeds: int):
    """Append one chunk's ``{metric: [members, length]}`` to ``metrics.csv``, a row per member and update.

    Member ``g * seeds + s`` is setting ``g`` (an ``HParams``, labelled ``labels[g]``) with seed ``s``.
    """
    path = run_dir / METRICS
    hp_names = [field.name for field in dataclasses.fields(settings[0])]
    names = list(chunk)
    new = not path.exists()
    length = next(iter(chunk.values())).shape[1]
    with path.open("a", newline="") as f:
        writer = csv.writer(f)
        if new:
            writer.writerow(["label", "setting", "seed", "update", "env_steps", *hp_names, *names])
        for member in range(len(settings) * seeds):
            g, s = divmod(member, seeds)
            hp_values = [f"{getattr(settings[g], n):g}" for n in hp_names]
            for i in range(length):
                u = first_update + i
                row = [labels[g], g, s, u, (u + 1) * steps_per_update, *hp_values]
                # float32 metrics: 9 significant digits round-trip exactly (resume reads them back)
                row += [f"{float(chunk[n][member, i]):.9g}" for n in names]
                writer.writerow(row)


def read_metrics(run_dir: Path, updates_done: int, *, num_members: int, seeds: int, hparam_names) -> dict | None:
    """Metrics already on disk as ``{name: [members, updates_done]}``, the file cut to ``updates_done``.

    Rows of a chunk written after the last checkpoint are dropped from the file too, so that a
    resumed run appends each update exactly once. None when nothing was done yet.
    """
    path = run_dir / METRICS
    if updates_done == 0 or not path.exists():
        if path.exists():
            path.unlink()
        return None
    with path.open() as f:
        reader = csv.DictReader(f)
        rows = [r for r in reader if int(r["update"]) < updates_done]
        header = reader.fieldnames
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=header)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)
    skip = {"label", "setting", "seed", "update", "env_steps", *hparam_names}
    names = [h for h in header if h not in skip]
    metrics = {n: np.full((num_members, updates_done), np.nan) for n in names}
    for r in rows:
        member = int(r["setting"]) * seeds + int(r["seed"])
        for n in names:
            metrics[n][member, int(r["update"])] = np.float32(r[n])
    return metrics


def write_summary(run_dir: Path, summary: list) -> None:
    """Write the per-setting summaries of final returns to ``summary.json``."""
    (run_dir / SUMMARY).write_text(json.dumps(summary, indent=2) + "\n")
