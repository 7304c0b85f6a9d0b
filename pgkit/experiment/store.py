"""The run directory: ``config.json``, ``metrics.csv``, ``checkpoint-UPDATES.eqx``, ``progress.json``, ``summary.json``.

Every write that a resumed run relies on is flushed to disk and atomic (written aside, then
renamed), so a crash, a signal or a full disk loses at most the chunk in flight:
``progress.json`` lists the last two checkpoints with their SHA-256 and the updates they hold,
a damaged newest one is set aside for the previous one, and :func:`read_metrics` drops CSV rows
written after the checkpoint used.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import os
import warnings
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
    "checkpoint_records",
    "set_aside_checkpoints",
    "DamagedCheckpointError",
    "WriteError",
    "append_metrics",
    "read_metrics",
    "write_summary",
]

CONFIG, METRICS, CHECKPOINT, PROGRESS, SUMMARY = (
    "config.json", "metrics.csv", "checkpoint.eqx", "progress.json", "summary.json"
)


def write_config(run_dir: Path, spec: dict) -> None:
    """Write the run's specification (everything needed to rebuild it) to ``config.json``."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        _write_text_atomically(run_dir / CONFIG, json.dumps(spec, indent=2) + "\n")
    except OSError as error:
        raise WriteError(run_dir, "writing config.json", error) from None


def read_config(run_dir: Path) -> dict:
    """The specification in ``run_dir/config.json``; a ConfigError if there is none."""
    path = Path(run_dir) / CONFIG
    if not path.exists():
        raise ConfigError(f"run directory {str(run_dir)!r} not found or holds no config.json")
    try:
        return json.loads(path.read_text())
    except ValueError as error:
        raise ConfigError(f"{str(path)!r} is not valid JSON: {error}") from None


def _progress(run_dir: Path) -> dict | None:
    path = Path(run_dir) / PROGRESS
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except ValueError as error:
        raise ConfigError(f"{str(path)!r} is damaged ({error}); the run cannot say which checkpoint is whole") from None


def updates_done(run_dir: Path) -> int | None:
    """Updates held by the last checkpoint (None: no checkpoint written yet)."""
    progress = _progress(run_dir)
    return None if progress is None else progress["updates_done"]


def checkpoint_records(run_dir: Path) -> list[dict]:
    """The checkpoints ``progress.json`` lists, newest first: ``{file, updates_done, sha256, bytes, diverged}``.

    A run written before checksums were kept (pgkit < 0.4) lists its one ``checkpoint.eqx``
    with no checksum.
    """
    progress = _progress(run_dir)
    if progress is None:
        return []
    if "checkpoints" not in progress:
        return [{"file": CHECKPOINT, "updates_done": progress["updates_done"], "sha256": None, "bytes": None}]
    return progress["checkpoints"]


class _HashingWriter:
    """A binary file that also feeds what is written to a SHA-256."""

    def __init__(self, file):
        self.file, self.sha256, self.bytes = file, hashlib.sha256(), 0

    def write(self, data) -> int:
        self.sha256.update(data)
        self.bytes += len(data)
        return self.file.write(data)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_text_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    try:
        with tmp.open("w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def write_checkpoint(
    run_dir: Path, state, *, updates_done: int, num_updates: int, wall_seconds: float, diverged: dict | None = None
) -> None:
    """Write the host copy of ``state`` as ``checkpoint-UPDATES.eqx``, then ``progress.json`` naming it.

    The file is written aside, flushed to disk and renamed; ``progress.json`` (written the same
    way) then lists it with its SHA-256 beside the previous checkpoint, and only after that is an
    older file deleted, so at every instant the listed files are whole. ``diverged`` maps members
    to the update at which they diverged (kept with the checkpoint it describes). A failed write
    (a full disk) raises :class:`WriteError` and leaves the previous checkpoint and progress as they were.
    """
    name = f"checkpoint-{updates_done:07d}.eqx"
    tmp = run_dir / (name + ".tmp")
    try:
        with tmp.open("wb") as f:
            writer = _HashingWriter(f)
            eqx.tree_serialise_leaves(writer, jax.device_get(state))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, run_dir / name)
        _fsync_dir(run_dir)
        record = {
            "file": name, "updates_done": updates_done, "sha256": writer.sha256.hexdigest(), "bytes": writer.bytes,
            "diverged": sorted([int(m), int(u)] for m, u in (diverged or {}).items()),
        }
        # the newest older checkpoint stays as the fallback (one at this update is being replaced)
        previous = [r for r in checkpoint_records(run_dir) if r["updates_done"] < updates_done][:1]
        progress = {
            "updates_done": updates_done, "num_updates": num_updates, "wall_seconds": wall_seconds,
            "checkpoints": [record, *previous],
        }
        _write_text_atomically(run_dir / PROGRESS, json.dumps(progress) + "\n")
    except OSError as error:
        tmp.unlink(missing_ok=True)
        raise WriteError(run_dir, f"writing checkpoint {name}", error) from None
    kept = {r["file"] for r in progress["checkpoints"]}
    for path in [*run_dir.glob("checkpoint*.eqx"), *run_dir.glob("checkpoint*.eqx.tmp")]:  # older, or cut short
        if path.name not in kept:
            path.unlink(missing_ok=True)


class WriteError(OSError):
    """A run-directory write failed (a full disk, a lost mount); what was on disk before is intact."""

    def __init__(self, run_dir: Path, doing: str, error: OSError):
        done = updates_done(run_dir)
        kept = "nothing was checkpointed yet" if done is None else f"the checkpoint at update {done} and the metrics up to it are intact"
        super().__init__(
            error.errno,
            f"{doing} in {str(run_dir)!r} failed ({error.strerror or error}); {kept}; "
            f"free space and continue with: pgkit resume {run_dir}",
        )

    def __str__(self) -> str:
        return self.strerror


def _damage(path: Path, record: dict) -> str | None:
    """Why the file of ``record`` is not the one written (missing, truncated, corrupt), None if whole."""
    if not path.exists():
        return "missing"
    if record.get("sha256") is None:
        return None  # written before checksums were kept
    size = path.stat().st_size
    if size != record["bytes"]:
        return f"truncated ({size} of {record['bytes']} bytes)" if size < record["bytes"] else f"corrupt ({size} bytes, {record['bytes']} written)"
    sha256 = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            sha256.update(block)
    return None if sha256.hexdigest() == record["sha256"] else "corrupt (checksum mismatch)"


def read_checkpoint(run_dir: Path, template, *, recipe: str, written_by: str, version: str) -> tuple[object, dict]:
    """The newest whole checkpoint in ``run_dir``, shaped as ``template``, and its record.

    A damaged newest checkpoint (truncated, bit-flipped: its SHA-256 differs from the one
    recorded) is set aside as ``NAME.corrupt`` with a warning, and the previous one is used;
    ``progress.json`` then names the one used. A whole checkpoint that does not fit ``template``
    (another pgkit version, or an edited recipe) is a ConfigError saying so.
    """
    run_dir = Path(run_dir)
    records = checkpoint_records(run_dir)
    damaged = []
    for i, record in enumerate(records):
        path = run_dir / record["file"]
        problem = _damage(path, record)
        if problem is not None:
            damaged.append((record, problem))
            continue
        try:
            state = eqx.tree_deserialise_leaves(path, template)
        except (RuntimeError, ValueError) as error:  # equinox: a leaf changed shape, dtype or kind
            cause = (
                "a damaged file or a version change (runs of pgkit < 0.4 kept no checksum)"
                if record.get("sha256") is None
                else f"it was written by pgkit {written_by}; retrain with this version"
                if written_by != version
                else "it is whole, but the recipe now builds another state: was its code or config changed?"
            )
            raise ConfigError(
                f"checkpoint {str(path)!r} does not fit the {recipe!r} state of pgkit {version} ({cause}): {error}"
            ) from None
        if damaged:
            for bad, _ in damaged:
                bad_path = run_dir / bad["file"]
                if bad_path.exists():
                    os.replace(bad_path, bad_path.with_name(bad_path.name + ".corrupt"))
            progress = _progress(run_dir)
            progress.update(updates_done=record["updates_done"], checkpoints=records[i:])
            _write_text_atomically(run_dir / PROGRESS, json.dumps(progress) + "\n")
            warnings.warn(
                "; ".join(f"checkpoint {bad['file']} (update {bad['updates_done']}) is {why}" for bad, why in damaged)
                + f": set aside as .corrupt; resuming from {record['file']} (update {record['updates_done']})",
                stacklevel=2,
            )
        return state, record
    if not damaged:
        raise ConfigError(f"run directory {str(run_dir)!r} holds no checkpoint")
    raise DamagedCheckpointError(
        "no whole checkpoint is left in "
        f"{str(run_dir)!r}: "
        + "; ".join(f"{bad['file']} (update {bad['updates_done']}) is {why}" for bad, why in damaged),
        newest_update=max(bad["updates_done"] for bad, _ in damaged),
    )


class DamagedCheckpointError(ConfigError):
    """Every checkpoint a run directory lists is damaged; ``newest_update`` is the latest one's."""

    def __init__(self, message: str, *, newest_update: int):
        super().__init__(message)
        self.newest_update = newest_update


def set_aside_checkpoints(run_dir: Path) -> None:
    """Rename every listed checkpoint to ``NAME.corrupt`` and forget them: the run starts over."""
    for record in checkpoint_records(run_dir):
        path = Path(run_dir) / record["file"]
        if path.exists():
            os.replace(path, path.with_name(path.name + ".corrupt"))
    (Path(run_dir) / PROGRESS).unlink(missing_ok=True)


def append_metrics(
    run_dir: Path, chunk: dict, *, first_update: int, steps_per_update: int, settings, labels, seeds: int,
    diverged: dict | None = None,
):
    """Append one chunk's ``{metric: [members, length]}`` to ``metrics.csv``, a row per member and update.

    Member ``g * seeds + s`` is setting ``g`` (an ``HParams``, labelled ``labels[g]``) with seed ``s``.
    The ``diverged`` column is 1 on the rows of a member at and after the update at which it
    diverged (``diverged`` maps members to that update; their metrics there are NaN). The rows
    are flushed to disk before this returns; a failed write raises :class:`WriteError`.
    """
    path = run_dir / METRICS
    hp_names = [field.name for field in dataclasses.fields(settings[0])]
    names = list(chunk)
    diverged = diverged or {}
    length = next(iter(chunk.values())).shape[1]
    lines = io.StringIO()
    writer = csv.writer(lines)
    marked = True  # a file written before the column existed (pgkit < 0.4) goes on without it
    if path.exists():
        with path.open(newline="") as f:
            marked = "diverged" in next(csv.reader(f), ["diverged"])
    else:
        writer.writerow(["label", "setting", "seed", "update", "env_steps", *hp_names, "diverged", *names])
    for member in range(len(settings) * seeds):
        g, s = divmod(member, seeds)
        hp_values = [f"{getattr(settings[g], n):g}" for n in hp_names]
        since = diverged.get(member)
        for i in range(length):
            u = first_update + i
            row = [labels[g], g, s, u, (u + 1) * steps_per_update, *hp_values]
            row += [int(since is not None and u >= since)] if marked else []
            # float32 metrics: 9 significant digits round-trip exactly (resume reads them back)
            row += [f"{float(chunk[n][member, i]):.9g}" for n in names]
            writer.writerow(row)
    try:
        with path.open("a", newline="") as f:
            f.write(lines.getvalue())
            f.flush()
            os.fsync(f.fileno())
    except OSError as error:
        raise WriteError(run_dir, "appending to metrics.csv", error) from None


def _whole(row: dict) -> bool:
    """Whether a CSV row has every field (a crash or a full disk can cut the last one short)."""
    return None not in row and None not in row.values() and row["update"].isdigit()


def read_metrics(run_dir: Path, updates_done: int, *, num_members: int, seeds: int, hparam_names) -> dict | None:
    """Metrics already on disk as ``{name: [members, updates_done]}``, the file cut to ``updates_done``.

    Rows of a chunk written after the last checkpoint are dropped from the file too (a row cut
    short by a crash or a full disk among them), so that a resumed run appends each update
    exactly once. None when nothing was done yet.
    """
    path = run_dir / METRICS
    if updates_done == 0 or not path.exists():
        if path.exists():
            path.unlink()
        return None
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames
        all_rows = list(reader)
    rows = [r for r in all_rows if _whole(r) and int(r["update"]) < updates_done]
    if len(rows) < len(all_rows):
        tmp = path.with_suffix(".tmp")
        try:
            with tmp.open("w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=header)
                writer.writeheader()
                writer.writerows(rows)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except OSError as error:
            tmp.unlink(missing_ok=True)
            raise WriteError(run_dir, "cutting metrics.csv to the checkpoint", error) from None
    skip = {"label", "setting", "seed", "update", "env_steps", "diverged", *hparam_names}
    names = [h for h in header if h not in skip]
    metrics = {n: np.full((num_members, updates_done), np.nan) for n in names}
    for r in rows:
        member = int(r["setting"]) * seeds + int(r["seed"])
        for n in names:
            metrics[n][member, int(r["update"])] = np.float32(r[n])
    return metrics


def write_summary(run_dir: Path, summary: list) -> None:
    """Write the per-setting summaries of final returns to ``summary.json``."""
    try:
        _write_text_atomically(run_dir / SUMMARY, json.dumps(summary, indent=2) + "\n")
    except OSError as error:
        raise WriteError(run_dir, "writing summary.json", error) from None
