"""Stream a run's metrics to TensorBoard or Weights & Biases: ``on_chunk`` callbacks for train/resume.

Each factory returns a callback for the ``on_chunk`` keyword of :func:`pgkit.experiment.train`
and :func:`pgkit.experiment.resume` (``pgkit train/resume --log tensorboard --log wandb``). It
writes the numbers of ``metrics.csv`` (every metric of every member at every update, NaN for a
diverged member), one logger run per member, with the environment steps per member as the step::

    from pgkit import experiment
    from pgkit.experiment import loggers
    experiment.train("ppo", seeds=4, out="runs/x", on_chunk=loggers.tensorboard())
    experiment.resume("runs/x", on_chunk=[loggers.tensorboard(), loggers.wandb(project="mine")])

The writers are optional dependencies: ``pip install 'pgkit[tensorboard]'`` (tensorboardX) and
``pip install 'pgkit[wandb]'``; a factory whose package is missing raises a one-line
:class:`~pgkit.recipe.ConfigError` naming the extra (exit status 2 on the command line).

A resumed run continues the same logger runs. The callbacks are called after each chunk's
checkpoint is written, so the chunk a crash interrupts was never logged and is logged once when
``resume`` replays it. A chunk logged again (its checkpoint was lost and resume went back to
the previous one) is not shown twice: TensorBoard's writer is reopened with ``purge_step`` at
the first step it receives, which hides the events at and after it written before; W&B drops
steps below a run's last one. A process killed after a checkpoint but before its callback
returned leaves that chunk out of the logger (``metrics.csv`` holds it).
"""

from __future__ import annotations

import importlib
import json
import math
import os
import re
import time
import uuid
from pathlib import Path

from pgkit.recipe import ConfigError

__all__ = ["EXTRAS", "require", "tensorboard", "wandb", "TensorBoardLogger", "WandbLogger"]

# logger name -> (module it needs, the pgkit extra that installs it)
EXTRAS = {"tensorboard": ("tensorboardX", "tensorboard"), "wandb": ("wandb", "wandb")}


def require(logger: str):
    """Import the package that ``logger`` ("tensorboard" or "wandb") needs, or a one-line ConfigError naming the extra."""
    module, extra = EXTRAS[logger]
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ConfigError(
            f"logging to {logger} needs the {module} package ({error}): pip install 'pgkit[{extra}]'"
        ) from None


def member_path(label: str, seed: int) -> str:
    """``LABEL/seedK``: a member's run name, the label with characters unsafe in a path as ``_``."""
    return f"{re.sub(r'[^A-Za-z0-9._=,+-]', '_', label)}/seed{seed}"


class TensorBoardLogger:
    """The callback :func:`tensorboard` returns: one ``SummaryWriter`` per member, opened at its first chunk."""

    def __init__(self, logdir: str | os.PathLike | None, flush_secs: int):
        self.tensorboardX = require("tensorboard")
        self.logdir = None if logdir is None else Path(logdir)
        self.flush_secs = flush_secs
        self.writers: dict[int, object] = {}

    def __call__(self, chunk) -> None:
        if not self.writers:
            logdir = self.logdir
            if logdir is None:
                if chunk.run_dir is None:
                    raise ConfigError("loggers.tensorboard() without a logdir needs a run directory (out=)")
                logdir = Path(chunk.run_dir) / "tensorboard"
            for m, (label, seed) in enumerate(zip(chunk.labels, chunk.seeds)):
                # purge_step: events of an earlier writer at and after this step are hidden; the suffix
                # keeps a writer opened in the same second (tensorboardX names files by the second)
                # from overwriting the previous file, and sorts after it, as TensorBoard reads them
                self.writers[m] = self.tensorboardX.SummaryWriter(
                    str(logdir / member_path(label, seed)), purge_step=int(chunk.env_steps[0]),
                    flush_secs=self.flush_secs, filename_suffix=f".{time.time_ns()}",
                )
        for m, writer in self.writers.items():
            for i, step in enumerate(chunk.env_steps.tolist()):
                for name, values in chunk.metrics.items():
                    writer.add_scalar(name, float(values[m, i]), global_step=step)
            writer.flush()

    def close(self) -> None:
        for writer in self.writers.values():
            writer.close()
        self.writers = {}


def tensorboard(logdir: str | os.PathLike | None = None, *, flush_secs: int = 120) -> TensorBoardLogger:
    """An ``on_chunk`` callback writing every metric to TensorBoard event files, one run per member.

    Args:
      logdir: where the runs go, ``LOGDIR/LABEL/seedK`` (default ``RUN_DIR/tensorboard``); the
        scalar tags are the metric names and the global step is the environment steps per member.
      flush_secs: at most this long between flushes within a chunk (every chunk ends with one).

    Returns:
      A callable taking a :class:`~pgkit.experiment.ChunkMetrics`, with ``close()`` (called by
      train/resume when they end). Needs tensorboardX (``pip install 'pgkit[tensorboard]'``); a
      ConfigError naming it otherwise, at once.

    Example:
      >>> from pgkit.experiment import loggers
      >>> callback = loggers.tensorboard()  # doctest: +SKIP
    """
    return TensorBoardLogger(logdir, flush_secs)


class WandbLogger:
    """The callback :func:`wandb` returns: one W&B run per member, grouped by setting, opened at its first chunk."""

    def __init__(self, project: str | None, init_kwargs: dict):
        self.wandb = require("wandb")
        self.project = project or os.environ.get("WANDB_PROJECT") or "pgkit"
        self.init_kwargs = init_kwargs
        self.runs: dict[int, object] = {}

    def run_ids(self, run_dir: Path | None, members: int) -> list[str]:
        """Each member's W&B run id, kept in ``RUN_DIR/wandb/ids.json`` so that a resume continues the runs."""
        stem = uuid.uuid4().hex[:10]
        if run_dir is None:
            return [f"{stem}-m{m}" for m in range(members)]
        path = Path(run_dir) / "wandb" / "ids.json"
        if path.exists():
            ids = json.loads(path.read_text())
            if len(ids) == members:
                return ids
        ids = [f"{stem}-m{m}" for m in range(members)]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(ids) + "\n")
        return ids

    def __call__(self, chunk) -> None:
        if not self.runs:
            members = len(chunk.labels)
            ids = self.run_ids(chunk.run_dir, members)
            for m in range(members):
                label, setting, seed = chunk.labels[m], chunk.settings[m], chunk.seeds[m]
                kwargs = {
                    "project": self.project, "id": ids[m], "name": member_path(label, seed), "group": label,
                    "config": {**chunk.hparams[m], "label": label, "setting": setting, "seed": seed,
                               "member": m, "run_dir": None if chunk.run_dir is None else str(chunk.run_dir)},
                    "resume": "allow", "reinit": "create_new",
                    **({"dir": str(chunk.run_dir)} if chunk.run_dir is not None else {}),
                    **self.init_kwargs,
                }
                self.runs[m] = self.wandb.init(**kwargs)
        for m, run in self.runs.items():
            for i, step in enumerate(chunk.env_steps.tolist()):
                row = {name: float(values[m, i]) for name, values in chunk.metrics.items()}
                row = {k: v for k, v in row.items() if math.isfinite(v)}  # a diverged member: no point
                run.log({**row, "update": chunk.first_update + i, "env_steps": step}, step=step)

    def close(self) -> None:
        for run in self.runs.values():
            run.finish()
        self.runs = {}


def wandb(project: str | None = None, **init_kwargs) -> WandbLogger:
    """An ``on_chunk`` callback logging every metric to Weights & Biases, one run per member.

    Each member is a W&B run named ``LABEL/seedK`` in the group of its setting's label, with its
    hyperparameters, setting and seed as the config; the step is the environment steps per
    member. Run ids are kept in ``RUN_DIR/wandb/ids.json`` (W&B's files go under ``RUN_DIR/wandb``),
    so ``resume`` continues the same runs. Offline with ``WANDB_MODE=offline`` (``wandb sync``
    uploads later; a resumed run's offline directories share the run ids).

    Args:
      project: the W&B project (default ``$WANDB_PROJECT``, else ``"pgkit"``).
      **init_kwargs: passed on to ``wandb.init`` (``entity``, ``tags``, ``mode``, ...).

    Returns:
      A callable taking a :class:`~pgkit.experiment.ChunkMetrics`, with ``close()`` (finishes the
      runs; called by train/resume when they end). Needs wandb (``pip install 'pgkit[wandb]'``);
      a ConfigError naming it otherwise, at once.

    Example:
      >>> from pgkit.experiment import loggers
      >>> callback = loggers.wandb(project="mine", mode="offline")  # doctest: +SKIP
    """
    return WandbLogger(project, init_kwargs)
