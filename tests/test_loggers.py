"""The ``on_chunk`` callback of train/resume and the TensorBoard and W&B loggers built on it."""

import csv

import numpy as np
import pytest

from pgkit import experiment

CONFIG = {"total_steps": 4 * 8 * 9, "num_envs": 4, "num_steps": 8}  # 9 updates: chunks of 3
STEPS_PER_UPDATE = 4 * 8


def run_a2c(**kwargs):
    kwargs.setdefault("config", CONFIG)
    kwargs.setdefault("seeds", 2)
    kwargs.setdefault("chunk", 3)
    kwargs.setdefault("log", None)
    return experiment.train("a2c", env="CartPole-v1", **kwargs)


def csv_metrics(run_dir):
    """``{metric: [members, updates]}`` and the env steps per update, read back from metrics.csv."""
    with (run_dir / "metrics.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    seeds = max(int(r["seed"]) for r in rows) + 1
    members = (max(int(r["setting"]) for r in rows) + 1) * seeds
    updates = max(int(r["update"]) for r in rows) + 1
    header = list(rows[0])
    names = header[header.index("diverged") + 1 :]  # the metrics follow the hyperparameters and 'diverged'
    metrics = {n: np.full((members, updates), np.nan) for n in names}
    steps = np.zeros(updates, int)
    for r in rows:
        m, u = int(r["setting"]) * seeds + int(r["seed"]), int(r["update"])
        steps[u] = int(r["env_steps"])
        for n in names:
            metrics[n][m, u] = np.float32(r[n])
    return metrics, steps


class Recorder:
    """An on_chunk callback that keeps every chunk it receives."""

    def __init__(self):
        self.chunks, self.closed = [], 0

    def __call__(self, chunk):
        self.chunks.append(chunk)

    def close(self):
        self.closed += 1


def gathered(chunks):
    """The chunks' metrics side by side ``{metric: [members, updates]}`` and their update numbers."""
    updates = np.concatenate([np.arange(c.first_update, c.last_update + 1) for c in chunks])
    metrics = {n: np.concatenate([c.metrics[n] for c in chunks], axis=1) for n in chunks[0].metrics}
    return metrics, updates


@pytest.fixture(scope="module")
def stopped_and_resumed(tmp_path_factory):
    """A run stopped after one chunk and resumed, with a Recorder on each call."""
    out = tmp_path_factory.mktemp("run") / "r"
    first, second = Recorder(), Recorder()
    run_a2c(out=out, stop_after_chunks=1, on_chunk=first, sweep={"lr": [6e-3, 3e-3]}, seeds=1)
    experiment.resume(out, log=None, on_chunk=second)
    return out, first, second


def test_the_callback_gets_every_update_once_over_a_stop_and_a_resume(stopped_and_resumed):
    out, first, second = stopped_and_resumed
    chunks = first.chunks + second.chunks
    metrics, updates = gathered(chunks)
    np.testing.assert_array_equal(updates, np.arange(9))
    assert [(c.first_update, c.last_update) for c in chunks] == [(0, 2), (3, 5), (6, 8)]
    assert first.closed == second.closed == 1
    on_disk, steps = csv_metrics(out)
    assert set(metrics) == set(on_disk)
    for name in on_disk:
        np.testing.assert_array_equal(metrics[name], on_disk[name], err_msg=name)
    np.testing.assert_array_equal(np.concatenate([c.env_steps for c in chunks]), steps)
    np.testing.assert_array_equal(steps, (np.arange(9) + 1) * STEPS_PER_UPDATE)
    chunk = chunks[0]
    assert chunk.run_dir == out and chunk.num_updates == 9 and chunk.diverged == {}
    assert chunk.labels == ("lr=0.006", "lr=0.003") and chunk.settings == (0, 1) and chunk.seeds == (0, 0)
    assert chunk.hparams[1]["lr"] == pytest.approx(3e-3)
    assert not chunk.metrics["episode_return"].flags.writeable  # the run's own arrays, read-only


def test_a_callback_that_raises_stops_the_run_with_the_chunk_on_disk(tmp_path):
    out = tmp_path / "r"
    whole = Recorder()
    run_a2c(on_chunk=whole)

    def fail_on_second(chunk):
        if chunk.first_update > 0:
            raise RuntimeError("logger down")

    with pytest.raises(RuntimeError, match="logger down"):
        run_a2c(out=out, on_chunk=[Recorder(), fail_on_second])
    assert experiment.store.updates_done(out) == 6  # the chunk it raised on is checkpointed
    rest = Recorder()
    experiment.resume(out, log=None, on_chunk=rest)
    assert [c.first_update for c in rest.chunks] == [6]
    metrics, _ = gathered(whole.chunks)
    on_disk, _ = csv_metrics(out)
    for name in on_disk:
        np.testing.assert_array_equal(metrics[name], on_disk[name], err_msg=name)


def test_on_chunk_must_be_callable():
    with pytest.raises(experiment.ConfigError, match="on_chunk"):
        run_a2c(on_chunk=[42])
